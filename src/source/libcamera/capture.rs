//! The libcamera camera as a pipeline of the loop: configuration (roles, sizes, rate, flips),
//! buffers, controls, requests, and the encoder behind them. See the parent module for the data
//! flow and the invariants.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libcamera::camera::ActiveCamera;
use libcamera::camera_manager::CameraManager;
use libcamera::framebuffer_allocator::FrameBufferAllocator;
use libcamera::request::{Request, RequestStatus, ReuseFlag};
use libcamera::stream::Stream;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::buffers::{map_planes, memfd_buffer, CamBuffer, PlaneMap};
use super::configure::{configure, put_controls, readback_line, start_controls, stream_of, SetControl};
use super::convert::{rgb24_to_i420, Rgb24};
use super::settings::{lores_size, select_camera, CameraEntry, CameraSelector, RequeuePacer, Verdict};
use crate::config::{EncoderChoice, PipelineConfig};
use crate::pipeline::frames::{FrameLayout, FramePool, FrameTap, Thinning};
use crate::source::{Codec, IdrControl, Pipeline, PollRequest, Sink};

thread_local! {
    /// libcamera allows one camera manager per process: the loop's cameras share it, and it
    /// goes when the last of them does (so a rebuild after a camera vanished enumerates anew).
    static MANAGER: RefCell<Weak<CameraManager>> = const { RefCell::new(Weak::new()) };
}

/// The running camera manager, started if none is.
pub(super) fn manager() -> Result<Rc<CameraManager>, String> {
    MANAGER.with(|m| {
        if let Some(mgr) = m.borrow().upgrade() {
            return Ok(mgr);
        }
        let mgr = Rc::new(CameraManager::new().map_err(|e| format!("libcamera camera manager: {e}"))?);
        *m.borrow_mut() = Rc::downgrade(&mgr);
        Ok(mgr)
    })
}

/// Every camera libcamera lists, with its model (the `Model` property, else the id).
pub(super) fn entries(mgr: &CameraManager) -> Vec<CameraEntry> {
    let list = mgr.cameras();
    (0..list.len())
        .filter_map(|i| list.get(i))
        .map(|c| {
            let model = c.properties().get::<libcamera::properties::Model>().map(|m| m.0).unwrap_or_default();
            let id = c.id().to_owned();
            CameraEntry { model: if model.is_empty() { id.clone() } else { model }, id }
        })
        .collect()
}

/// What the callback thread hands the loop.
struct Completions {
    queue: Mutex<Vec<Request>>,
    disconnected: AtomicBool,
    efd: EventFd,
}

impl Completions {
    fn signal(&self) {
        let _ = self.efd.write(1);
    }
}

/// One libcamera output (the main stream, or the Viewfinder one).
struct Output {
    stream: Stream,
    /// The frames the encoders and taps get.
    layout: FrameLayout,
    /// Set when the camera's buffers hold packed RGB (`layout` is then I420 at the same size).
    rgb: Option<(Rgb24, FrameLayout)>,
    /// Per request (by cookie): its buffer's planes, mapped read-only.
    maps: Vec<Vec<PlaneMap>>,
    pool: FramePool,
}

impl Output {
    /// The frame of request `index`, copied once into a shared frame (`None`: pool exhausted).
    fn copy(&mut self, index: usize, capture: Instant) -> Option<crate::pipeline::frames::SharedFrame> {
        let planes = self.maps.get(index)?;
        let rgb = self.rgb;
        self.pool.fill(self.layout, capture, |buf| match (rgb, planes.first()) {
            (Some((order, cam)), Some(p)) => {
                rgb24_to_i420(p.bytes(), order, cam.width as usize, cam.height as usize, cam.stride as usize, buf)
            }
            _ => {
                for p in planes {
                    buf.extend_from_slice(p.bytes());
                }
            }
        })
    }
}

enum Backend {
    #[cfg(feature = "software")]
    Software(crate::encode::software::SoftwarePipeline),
    Jpeg(crate::encode::jpeg::JpegPipeline),
    #[cfg(feature = "v4l2")]
    M2m(Box<crate::encode::v4l2_m2m::M2mEncoder>),
}

/// A libcamera camera and its first stream's encoder.
pub(super) struct LibcameraPipeline {
    // Field order is drop order (after `Drop::drop` empties the request lists): the encoder
    // first (it may hold buffers), then our requests, then the camera (stopped and released),
    // then the mappings, then the manager.
    backend: Backend,
    parked: Vec<Request>,
    /// Fault injection: requests held back while the file exists (see [`starve_file`]).
    starved: Vec<Request>,
    starve: Option<std::path::PathBuf>,
    /// Requests whose main buffer the M2M encoder holds, by cookie.
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    in_encoder: Vec<Request>,
    completions: Arc<Completions>,
    /// `None` only while being dropped (a camera whose device is gone is leaked, see `drop`).
    cam: Option<ActiveCamera<'static>>,
    /// The camera's first capture node, opened only to see the kernel remove it (see
    /// [`device_watch`]).
    watch: Option<std::fs::File>,
    main: Output,
    lores: Option<Output>,
    taps: Vec<FrameTap>,
    pacer: RequeuePacer,
    /// The controls set at start, compared with the first completed request's metadata.
    readback: Option<Vec<SetControl>>,
    /// For a camera without `FrameDurationLimits` (vimc) or one that does not pace its frames
    /// (the virtual handler): frames beyond the configured rate are not delivered (their
    /// requests go back at once).
    thinning: Option<Thinning>,
    desc: String,
    codec: Codec,
    frames: u64,
    dropped: u64,
    last_stats: Instant,
    latency: Latency,
    _manager: Rc<CameraManager>,
}

/// Capture-to-encoded times since the last stats line (a fixed ring: the last [`LATENCY_RING`]).
#[derive(Default)]
struct Latency {
    us: Vec<u32>,
    next: usize,
}

const LATENCY_RING: usize = 512;

impl Latency {
    fn push(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u32::MAX)) as u32;
        if self.us.len() < LATENCY_RING {
            self.us.push(us);
        } else {
            self.us[self.next % LATENCY_RING] = us;
        }
        self.next += 1;
    }

    fn summary(&self) -> String {
        let mut v = self.us.clone();
        if v.is_empty() {
            return "-".into();
        }
        v.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} units",
            ms(v[v.len() / 2]),
            ms(v[v.len() * 99 / 100]),
            ms(v[v.len() - 1]),
            v.len()
        )
    }
}

impl std::fmt::Debug for LibcameraPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibcameraPipeline").field("desc", &self.desc).finish_non_exhaustive()
    }
}

impl Drop for LibcameraPipeline {
    fn drop(&mut self) {
        if self.watch.as_ref().is_some_and(device_gone) {
            // libcamera 0.4 cannot stop a camera whose device the kernel removed unless its
            // pipeline handler does hotplug (only uvcvideo does): the V4L2 STREAMOFF fails, the
            // queued requests never come back and `PipelineHandler::stop` aborts the process
            // on an assertion. So the camera is left as it is (its memory and fds stay with
            // it) and only the camera manager goes, which a new one can then replace.
            log::warn!("{}: the camera's device is gone: leaving the camera unstopped", self.desc);
            std::mem::forget(self.cam.take());
        } else if let Some(cam) = &mut self.cam {
            let _ = cam.stop();
        }
        self.parked.clear();
        self.starved.clear();
        self.in_encoder.clear();
        if let Ok(mut q) = self.completions.queue.lock() {
            q.clear();
        }
    }
}

/// Builds the pipeline for `source=libcamera`.
pub fn build(cfg: &PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    if cfg.encoder == EncoderChoice::Passthrough {
        return Err("libcamera cameras give raw frames: --encoder passthrough has nothing to pass".into());
    }
    let mgr = manager()?;
    let cams = entries(&mgr);
    let index = select_camera(&cams, &CameraSelector::parse(&cfg.device))?;
    let list = mgr.cameras();
    let camera = list.get(index).ok_or("the camera went away while it was chosen")?;
    let name = format!("{} ({})", cams[index].model, cams[index].id);
    let watch = device_watch(&camera);
    let mut cam = camera.acquire().map_err(|e| format!("{name}: acquire: {e} (another process uses it?)"))?;
    drop(camera);

    let wanted = lores_size((cfg.width, cfg.height), &cfg.further_sizes);
    let (mut config, lores) = configure(&cam, cfg, wanted, &name)?;
    cam.configure(&mut config).map_err(|e| format!("{name}: configure: {e}"))?;
    log::info!("{name}: configuration {}", config.to_string_repr());
    match config.sensor_configuration() {
        Some(s) => log::info!(
            "{name}: sensor mode {}x{} {}-bit, binning {:?}",
            s.output_size().width,
            s.output_size().height,
            s.bit_depth(),
            s.binning()
        ),
        None => log::info!("{name}: sensor mode chosen by the pipeline handler (it logs it at INFO under RPI)"),
    }

    let (main_cfg, lores_cfg) = (stream_of(&config, 0)?, if lores { Some(stream_of(&config, 1)?) } else { None });
    let mut alloc = FrameBufferAllocator::new(&cam);
    let mut outputs = Vec::new();
    let mut buffers = Vec::new();
    for (stream, layout, count) in std::iter::once(main_cfg).chain(lores_cfg) {
        let (bufs, how) = match alloc.alloc(&stream) {
            Ok(b) if !b.is_empty() => {
                (b.into_iter().map(CamBuffer::Allocated).collect::<Vec<_>>(), "libcamera's DMABUFs")
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "no buffers".into(),
                };
                let own: io::Result<Vec<CamBuffer>> =
                    (0..count).map(|i| memfd_buffer(&layout, u64::from(i)).map(CamBuffer::Own)).collect();
                let own = own.map_err(|e| format!("{name}: memfd buffers: {e}"))?;
                log::info!(
                    "{name}: the frame buffer allocator failed ({why}: no dma-heap or udmabuf?): using memfd buffers"
                );
                (own, "memfd buffers")
            }
        };
        let maps: io::Result<Vec<Vec<PlaneMap>>> = bufs.iter().map(|b| map_planes(b, &layout)).collect();
        let maps = maps.map_err(|e| format!("{name}: mmap: {e}"))?;
        log::info!(
            "{name}: {} {}x{} stride {}: {} {how}",
            String::from_utf8_lossy(&layout.fourcc),
            layout.width,
            layout.height,
            layout.stride,
            bufs.len()
        );
        let rgb = Rgb24::of_fourcc(layout.fourcc).map(|order| (order, layout));
        let layout = match rgb {
            Some(_) => FrameLayout { fourcc: *b"YU12", stride: layout.width, ..layout },
            None => layout,
        };
        outputs.push(Output { stream, layout, rgb, maps, pool: FramePool::default() });
        buffers.push(bufs);
    }
    let mut requests = Vec::new();
    let n = buffers.iter().map(Vec::len).min().unwrap_or(0);
    let mut buffers: Vec<_> = buffers.into_iter().map(Vec::into_iter).collect();
    for i in 0..n {
        let mut req = cam.create_request(Some(i as u64)).ok_or_else(|| format!("{name}: cannot create a request"))?;
        for (o, bufs) in outputs.iter().zip(buffers.iter_mut()) {
            let b = bufs.next().ok_or("buffer count")?;
            req.add_buffer(&o.stream, b).map_err(|e| format!("{name}: add buffer: {e}"))?;
        }
        requests.push(req);
    }

    let (controls, set_controls) = start_controls(&cam, cfg, &name)?;
    if let Some(first) = requests.first_mut() {
        put_controls(first, &set_controls, &name);
    }
    let thinning = if set_controls.iter().any(|c| c.name == "FrameDurationLimits") {
        None
    } else {
        log::info!("{name}: no frame rate control: frames beyond {} fps are skipped", cfg.fps);
        Some(Thinning::new(Duration::from_secs(1) / cfg.fps.max(1)))
    };
    let completions = Arc::new(Completions {
        queue: Mutex::new(Vec::with_capacity(n)),
        disconnected: AtomicBool::new(false),
        efd: EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| format!("eventfd: {e}"))?,
    });
    let c = Arc::clone(&completions);
    cam.on_request_completed(move |req| {
        if let Ok(mut q) = c.queue.lock() {
            q.push(req);
        }
        c.signal();
    });
    let c = Arc::clone(&completions);
    cam.on_disconnected(move || {
        c.disconnected.store(true, Ordering::Relaxed);
        c.signal();
    });

    let mut outputs = outputs.into_iter();
    let main = outputs.next().ok_or("no main stream")?;
    let lores = outputs.next();
    let (backend, enc_desc) = start_backend(cfg, &main.layout, main.rgb.is_none())?;
    cam.start(Some(&controls)).map_err(|e| format!("{name}: start: {e}"))?;
    for req in requests {
        cam.queue_request(req).map_err(|(_, e)| format!("{name}: queue request: {e}"))?;
    }
    let lores_desc = lores.as_ref().map_or(String::new(), |l| {
        format!(" + Viewfinder {}x{} for the smaller stream", l.layout.width, l.layout.height)
    });
    let desc = format!(
        "libcamera {name} {} {}x{} @ {} fps{lores_desc} -> {enc_desc}",
        String::from_utf8_lossy(&main.layout.fourcc),
        main.layout.width,
        main.layout.height,
        cfg.fps
    );
    Ok(Box::new(LibcameraPipeline {
        backend,
        parked: Vec::new(),
        starved: Vec::new(),
        starve: starve_file(),
        in_encoder: Vec::new(),
        completions,
        cam: Some(cam),
        watch,
        main,
        lores,
        taps: Vec::new(),
        pacer: RequeuePacer::new(cfg.fps),
        readback: Some(set_controls),
        thinning,
        desc,
        codec: cfg.codec,
        frames: 0,
        dropped: 0,
        last_stats: Instant::now(),
        latency: Latency::default(),
        _manager: mgr,
    }))
}

/// The camera's first capture video node (libcamera's `SystemDevices` property), opened
/// read-only: once the kernel unregisters the device (driver unbound, USB pulled), poll on this
/// file reports POLLERR | POLLHUP, even if a new device took its place. `None` for cameras
/// without kernel devices (the virtual handler).
fn device_watch(camera: &libcamera::camera::Camera<'_>) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let devs = camera.properties().get::<libcamera::properties::SystemDevices>().ok()?.0;
    let dev = *devs.first()? as libc::dev_t;
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/char/{major}:{minor}/uevent")).ok()?;
    let node = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/dev/{node}"))
        .ok()
}

/// POLLPRI only: V4L2 gives it for pending events (none are subscribed), and POLLERR | POLLHUP
/// once the device is unregistered; buffer readiness (libcamera's queue) is not asked for.
const WATCH_EVENTS: i16 = libc::POLLPRI;

fn gone(revents: i16) -> bool {
    revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Whether the kernel removed the device `watch` is a node of.
fn device_gone(watch: &std::fs::File) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(watch.as_fd(), PollFlags::from_bits_truncate(WATCH_EVENTS))];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) && fds[0].revents().is_some_and(|r| gone(r.bits()))
}

/// Test-only fault: with `UAVSTREAM_FAULT_INJECTION=1`, while the file named by
/// `UAVSTREAM_FAULT_LIBCAMERA_STARVE` exists, completed requests are held instead of re-queued,
/// so the camera runs out of requests and stops delivering, as a camera that stops completing
/// them does.
fn starve_file() -> Option<std::path::PathBuf> {
    if std::env::var_os("UAVSTREAM_FAULT_INJECTION").is_none_or(|v| v != "1") {
        return None;
    }
    std::env::var_os("UAVSTREAM_FAULT_LIBCAMERA_STARVE").map(std::path::PathBuf::from)
}

/// `dmabuf`: the camera's buffers are what the encoder reads (not so for converted RGB).
#[cfg_attr(not(feature = "v4l2"), allow(unused_variables))]
fn start_backend(cfg: &PipelineConfig, layout: &FrameLayout, dmabuf: bool) -> Result<(Backend, String), String> {
    if cfg.codec == Codec::Jpeg {
        let j = crate::encode::jpeg::JpegPipeline::start_frames(*layout, cfg.jpeg_quality)
            .map_err(|e| format!("JPEG encoder: {e}"))?;
        let d = j.describe();
        return Ok((Backend::Jpeg(j), d));
    }
    #[cfg(feature = "v4l2")]
    if cfg.encoder != EncoderChoice::Software {
        if let Some(b) = m2m_backend(cfg, layout, dmabuf)? {
            return Ok(b);
        }
    }
    if cfg.encoder == EncoderChoice::V4l2 {
        return Err(format!(
            "--encoder v4l2: no V4L2 memory-to-memory H.264 encoder takes {}{}",
            String::from_utf8_lossy(&layout.fourcc),
            if cfg!(feature = "v4l2") { "" } else { " (this build has no `v4l2` feature)" }
        ));
    }
    software_backend(cfg, layout)
}

#[cfg(feature = "software")]
fn software_backend(cfg: &PipelineConfig, layout: &FrameLayout) -> Result<(Backend, String), String> {
    use crate::encode::software::{EncoderSettings, SoftwarePipeline};
    let sw = SoftwarePipeline::start_frames(EncoderSettings::from_config(cfg), *layout)
        .map_err(|e| format!("software encoder: {e}"))?;
    let d = sw.describe();
    Ok((Backend::Software(sw), d))
}

#[cfg(not(feature = "software"))]
fn software_backend(_: &PipelineConfig, _: &FrameLayout) -> Result<(Backend, String), String> {
    Err("no V4L2 M2M H.264 encoder and this build has no software encoder".into())
}

/// CM4: bcm2835-codec takes libcamera's DMABUFs by fd, as V4L2 capture's do.
#[cfg(feature = "v4l2")]
fn m2m_backend(cfg: &PipelineConfig, layout: &FrameLayout, dmabuf: bool) -> Result<Option<(Backend, String)>, String> {
    use crate::encode::v4l2_m2m::{find_encoder, M2mEncoder, M2mSettings};
    let Some(node) = find_encoder(*b"H264", Some(layout.fourcc)) else { return Ok(None) };
    let settings = M2mSettings {
        codec: *b"H264",
        input: layout.fourcc,
        width: layout.width,
        height: layout.height,
        stride: layout.stride,
        fps: cfg.fps,
        bitrate: cfg.bitrate,
        idr_period: cfg.idr_period(),
        jpeg_quality: cfg.jpeg_quality,
        dmabuf,
    };
    let e = M2mEncoder::open(&node, &settings)?;
    let d = format!("V4L2 M2M H.264 encoder {} (input: {})", e.describe(), e.path);
    Ok(Some((Backend::M2m(Box::new(e)), d)))
}

/// CLOCK_MONOTONIC now.
fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

/// A sensor timestamp (CLOCK_MONOTONIC ns) as an `Instant`; `now` when absent or implausible.
fn capture_instant(sensor_ns: Option<i64>, mono_now: Duration, now: Instant) -> Instant {
    let Some(ns) = sensor_ns.filter(|ns| *ns > 0) else { return now };
    match mono_now.checked_sub(Duration::from_nanos(ns as u64)) {
        Some(age) if age < Duration::from_secs(10) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

impl LibcameraPipeline {
    fn requeue(&mut self, mut req: Request) -> io::Result<()> {
        req.reuse(ReuseFlag::REUSE_BUFFERS);
        let Some(cam) = &self.cam else { return Ok(()) };
        cam.queue_request(req).map_err(|(_, e)| io::Error::other(format!("{}: queue request: {e}", self.desc)))
    }

    fn on_completions(&mut self, now: Instant) -> io::Result<()> {
        let _ = self.completions.efd.read();
        if self.completions.disconnected.load(Ordering::Relaxed) {
            return Err(io::Error::other(format!("{}: camera disconnected", self.desc)));
        }
        let mut done = std::mem::take(&mut *self.completions.queue.lock().map_err(|_| io::Error::other("poisoned"))?);
        if self.starve.as_ref().is_some_and(|f| f.exists()) {
            if self.starved.is_empty() {
                log::warn!("{}: fault injection: completed requests are held, the camera starves", self.desc);
            }
            self.starved.append(&mut done);
            return Ok(());
        }
        done.sort_by_key(Request::sequence);
        let mono = monotonic_now();
        let mut newest: Option<(Request, Instant)> = None;
        for req in done {
            if req.status() == RequestStatus::Cancelled {
                // Not a frame (libcamera cancels on stop or a pipeline error): the request goes
                // back; if the camera refuses it, the pipeline is rebuilt.
                self.dropped += 1;
                self.requeue(req)?;
                continue;
            }
            if let Some(set) = self.readback.take() {
                log::info!("{}: {}", self.desc, readback_line(&set, req.metadata()));
            }
            let ts = req.metadata().get::<libcamera::controls::SensorTimestamp>().ok().map(|t| t.0);
            let capture = capture_instant(ts, mono, now);
            self.frames += 1;
            match self.pacer.on_completed(capture) {
                (Verdict::Park, first) => {
                    if first {
                        // Requests completing a little later than the park window would still
                        // run it above the rate: thin those too.
                        let interval = self.pacer.interval();
                        self.thinning.get_or_insert_with(|| Thinning::new(interval));
                        log::info!(
                            "{}: the camera completes requests as soon as they are queued (it does not pace frames): requests are re-queued once per frame interval",
                            self.desc
                        );
                    }
                    self.parked.push(req);
                }
                (Verdict::Deliver, _) if self.thinning.as_mut().is_some_and(|t| !t.due(capture)) => {
                    self.requeue(req)?;
                }
                (Verdict::Deliver, _) => {
                    if let Some((old, _)) = newest.replace((req, capture)) {
                        self.dropped += 1;
                        self.requeue(old)?;
                    }
                }
            }
        }
        if let Some((req, capture)) = newest {
            self.deliver(req, capture)?;
        }
        Ok(())
    }

    /// Hands the frame of `req` to the encoder and the taps, then re-queues it (M2M: once the
    /// encoder lets go of the buffer).
    fn deliver(&mut self, req: Request, capture: Instant) -> io::Result<()> {
        let index = req.cookie() as usize;
        let copy_main = !matches!(self.backend_kind(), Kind::M2m) || self.taps.iter().any(|t| !self.tap_on_lores(t));
        let main_frame = if copy_main { self.main.copy(index, capture) } else { None };
        if copy_main && main_frame.is_none() {
            self.dropped += 1;
        }
        let lores_frame = if self.taps.iter().any(|t| self.tap_on_lores(t)) {
            self.lores.as_mut().and_then(|l| l.copy(index, capture))
        } else {
            None
        };
        for tap in &self.taps {
            let on_lores = self.tap_on_lores(tap);
            if let Some(f) = if on_lores { &lores_frame } else { &main_frame } {
                tap.push_shared(f);
            }
        }
        match &mut self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => {
                if let Some(f) = &main_frame {
                    sw.push_shared(f);
                }
            }
            Backend::Jpeg(j) => {
                if let Some(f) = &main_frame {
                    j.push_shared(f);
                }
            }
            #[cfg(feature = "v4l2")]
            Backend::M2m(enc) => {
                use crate::encode::v4l2_m2m::InputPath;
                use crate::v4l2::device::DmabufPlane;
                let mut back = Vec::new();
                enc.reclaim(|i| back.push(i))?;
                let ts = capture_ts(capture);
                let bytes = self.main.layout.frame_bytes();
                let plane = self
                    .main
                    .maps
                    .get(index)
                    .and_then(|m| m.first())
                    .map(|p| DmabufPlane { fd: p.fd, len: u32::try_from(bytes).unwrap_or(u32::MAX) });
                let mut held = false;
                match plane {
                    Some(plane) if enc.path == InputPath::Dmabuf => match enc.push_dmabuf(index, &plane, bytes, ts) {
                        Ok(true) => held = true,
                        Ok(false) => self.dropped += 1,
                        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Err(e),
                        Err(e) => enc.fall_back_to_copy(&format!("QBUF: {e}"))?,
                    },
                    _ => {}
                }
                if !held && enc.path == InputPath::Copy {
                    if let Some(f) = main_frame.or_else(|| self.main.copy(index, capture)) {
                        if !enc.push_copy(&f.data, self.main.layout.stride, ts)? {
                            self.dropped += 1;
                        }
                    }
                }
                for i in back {
                    if let Some(pos) = self.in_encoder.iter().position(|r| r.cookie() as usize == i) {
                        let r = self.in_encoder.swap_remove(pos);
                        self.requeue(r)?;
                    }
                }
                if held {
                    self.in_encoder.push(req);
                    return Ok(());
                }
            }
        }
        self.requeue(req)
    }

    /// Whether `tap` takes the Viewfinder frames (it encodes at their size).
    fn tap_on_lores(&self, tap: &FrameTap) -> bool {
        self.lores.as_ref().is_some_and(|l| tap.output() == (l.layout.width, l.layout.height))
    }

    fn backend_kind(&self) -> Kind {
        match &self.backend {
            #[cfg(feature = "v4l2")]
            Backend::M2m(_) => Kind::M2m,
            _ => Kind::Software,
        }
    }

    fn log_stats(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_stats) >= Duration::from_secs(30) {
            self.last_stats = now;
            log::info!(
                "libcamera: {} requests completed, {} frames dropped (newest wins); capture to encoded {}",
                self.frames,
                self.dropped,
                self.latency.summary()
            );
            self.latency = Latency::default();
        }
    }
}

#[derive(PartialEq)]
enum Kind {
    Software,
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    M2m,
}

/// A capture time as the CLOCK_MONOTONIC timestamp the M2M encoder carries through.
#[cfg(feature = "v4l2")]
fn capture_ts(capture: Instant) -> Duration {
    monotonic_now().saturating_sub(Instant::now().saturating_duration_since(capture))
}

impl Pipeline for LibcameraPipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.completions.efd.as_fd().as_raw_fd(), events: libc::POLLIN });
        out.push(PollRequest { fd: self.watch.as_ref().map_or(-1, |w| w.as_raw_fd()), events: WATCH_EVENTS });
        match &self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.poll_requests(out),
            Backend::Jpeg(j) => j.poll_requests(out),
            #[cfg(feature = "v4l2")]
            Backend::M2m(enc) => out.push(PollRequest { fd: enc.raw_fd(), events: enc.poll_events() }),
        }
    }

    fn on_ready(&mut self, index: usize, revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        self.log_stats(now);
        if index == 0 {
            return self.on_completions(now);
        }
        if index == 1 {
            if gone(revents) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: the camera's device is gone (the kernel removed it)", self.desc),
                ));
            }
            return Ok(());
        }
        let index = index - 1;
        // Capture (sensor timestamp) to the access unit leaving the encoder, for the stats line.
        let latency = &mut self.latency;
        let sink = &mut |unit: &[u8], capture: Instant| {
            latency.push(now.saturating_duration_since(capture));
            sink(unit, capture);
        };
        match &mut self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.on_ready(index - 1, revents, now, sink),
            Backend::Jpeg(j) => j.on_ready(index - 1, revents, now, sink),
            #[cfg(feature = "v4l2")]
            Backend::M2m(enc) => {
                if revents & (libc::POLLERR | libc::POLLNVAL) != 0 && revents & (libc::POLLIN | libc::POLLOUT) == 0 {
                    return Err(io::Error::other(format!("{}: encoder failed (poll error)", enc.describe())));
                }
                let mut back = Vec::new();
                enc.reclaim(|i| back.push(i))?;
                let mono = monotonic_now();
                enc.drain(|unit, ts, _key| sink(unit, capture_instant(Some(ts.as_nanos() as i64), mono, now)))?;
                for i in back {
                    if let Some(pos) = self.in_encoder.iter().position(|r| r.cookie() as usize == i) {
                        let req = self.in_encoder.swap_remove(pos);
                        self.requeue(req)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.parked.is_empty() {
            None
        } else {
            self.pacer.release_at()
        }
    }

    fn on_timer(&mut self, now: Instant, _sink: &mut Sink<'_>) -> io::Result<()> {
        if self.pacer.release_at().is_some_and(|t| now >= t) {
            if let Some(req) = self.parked.pop() {
                self.requeue(req)?;
            }
        }
        Ok(())
    }

    fn request_idr(&mut self) {
        match &mut self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.request_idr(),
            Backend::Jpeg(_) => {}
            #[cfg(feature = "v4l2")]
            Backend::M2m(enc) => {
                enc.request_key_frame();
            }
        }
    }

    fn set_bitrate(&mut self, bps: u32) -> bool {
        match &mut self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.set_bitrate(bps),
            Backend::Jpeg(_) => false,
            #[cfg(feature = "v4l2")]
            Backend::M2m(enc) => enc.set_bitrate(bps),
        }
    }

    fn idr_control(&self) -> IdrControl {
        if self.codec == Codec::Jpeg {
            IdrControl::PassthroughOnly
        } else {
            IdrControl::OnRequest
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn codec(&self) -> Codec {
        self.codec
    }

    fn raw_layout(&self) -> Option<FrameLayout> {
        Some(self.main.layout)
    }

    fn set_raw_taps(&mut self, taps: Vec<FrameTap>) {
        self.taps = taps;
    }

    fn parameter_sets(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.backend {
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.parameter_sets(),
            _ => None,
        }
    }

    fn frames_dropped(&self) -> u64 {
        self.dropped
            + match &self.backend {
                #[cfg(feature = "software")]
                Backend::Software(sw) => sw.frames_dropped(),
                Backend::Jpeg(j) => j.frames_dropped(),
                #[cfg(feature = "v4l2")]
                Backend::M2m(_) => 0,
            }
    }
}
