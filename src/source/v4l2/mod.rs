//! `source=v4l2`: a V4L2 camera in the poll loop, through v4l2r's `ioctl` layer (its
//! thread-based `Encoder` would put a second loop behind our back).
//!
//! ```text
//!  camera fd ──POLLIN──▶ dequeue every ready buffer, keep the newest (older ones go back)
//!     │ H.264 or MJPEG camera ────────────────────▶ sink (passthrough, no re-encoding)
//!     │ raw + M2M encoder ─DMABUF (or copy)────────▶ encoder fd ──POLLIN──▶ sink
//!     │ raw, no M2M encoder ─one copy into mailbox─▶ OpenH264 worker ─eventfd─▶ sink
//!     │                  (--codec mjpeg: M2M MJPG/JPEG encoder, or the software JPEG worker)
//! ```
//!
//! Invariants: every fd is non-blocking and polled by the loop; no ioctl waits. Buffers are few
//! (latency first): the camera always keeps at least two queued. The capture time of each
//! frame is its V4L2 timestamp (CLOCK_MONOTONIC), mapped onto `Instant` and carried to the RTP
//! timestamp. Device loss (unbind, unplug) shows up as POLLERR/ENODEV and becomes an `Err`, so
//! the loop rebuilds the pipeline with backoff while RTSP sessions stay up.

pub use crate::v4l2::device;

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use v4l2r::bindings;
use v4l2r::memory::MemoryType;
use v4l2r::QueueType;

use self::device::{
    align_up, describe_offer, formats, fourcc_of, fourcc_str, luma_bytes_per_pixel, monotonic_now,
    monotonic_to_instant, open_node, poll_error, stride_alignment, BufferQueue, Dequeued, DmabufPlane, NodeInfo,
    RAW_FORMATS, SUPPORTED_FORMATS,
};
use super::{Codec, FrameLayout, FrameTap, IdrControl, Pipeline, PollRequest, Sink};
use crate::config::{EncoderChoice, PipelineConfig};
use crate::encode::v4l2_m2m::{find_encoder, InputPath, M2mEncoder, M2mSettings};
use crate::encode::worker::FramePool;

pub use self::device::list_devices;

/// What to ask the camera for.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Acceptable FourCCs, best first.
    pub formats: Vec<[u8; 4]>,
}

/// An open, negotiated camera.
#[derive(Debug)]
pub struct Capture {
    pub node: NodeInfo,
    fd: File,
    queue: QueueType,
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Line stride of the first plane (0 for compressed formats).
    pub stride: u32,
    pub fps: Option<f64>,
    bufs: Option<BufferQueue>,
    /// Frames dequeued, and frames dropped because a newer one was ready (newest wins).
    pub frames: u64,
    pub dropped: u64,
}

/// The node `--device` names, or the first capture-capable one.
pub fn resolve_device(device: &str) -> Result<NodeInfo, String> {
    if device == "auto" {
        let nodes = device::scan();
        return nodes.iter().find(|n| n.is_capture()).cloned().ok_or_else(|| {
            if nodes.is_empty() {
                "no V4L2 device found (/dev/video*)".to_owned()
            } else {
                format!(
                    "no capture device among {}",
                    nodes.iter().map(|n| format!("{} ({})", n.path.display(), n.card)).collect::<Vec<_>>().join(", ")
                )
            }
        });
    }
    let path = Path::new(device);
    let fd = open_node(path).map_err(|e| format!("{device}: {e}"))?;
    let node = device::query(path, &fd).map_err(|e| format!("{device}: {e}"))?;
    if !node.is_capture() {
        return Err(format!("{device} ({}) is not a streaming capture device", node.card));
    }
    Ok(node)
}

impl Capture {
    /// Opens `node` and negotiates the first of `req.formats` it offers at the requested size
    /// and rate, with the stride every encoder accepts. The error says what the device offers.
    pub fn open(node: &NodeInfo, req: &CaptureRequest) -> Result<Capture, String> {
        let name = format!("{} ({})", node.path.display(), node.card);
        let mut fd = open_node(&node.path).map_err(|e| format!("{name}: {e}"))?;
        let queue = node.capture_queue();
        let offered: Vec<[u8; 4]> = formats(&fd, queue).iter().map(|d| fourcc_of(d.pixelformat)).collect();
        let Some(&fourcc) = req.formats.iter().find(|f| offered.contains(f)) else {
            return Err(format!(
                "{name} offers none of {}; it offers:\n{}",
                req.formats.iter().map(|f| fourcc_str(*f)).collect::<Vec<_>>().join(", "),
                describe_offer(&fd, queue)
            ));
        };
        let stride = luma_bytes_per_pixel(fourcc).map_or(0, |b| align_up(req.width * b, stride_alignment(fourcc)));
        let fmt = device::set_format(&mut fd, queue, fourcc, req.width, req.height, stride)
            .map_err(|e| format!("{name}: {e}; it offers:\n{}", describe_offer(&fd, queue)))?;
        if (fmt.width, fmt.height, fourcc_of(fmt.pixelformat)) != (req.width, req.height, fourcc) {
            return Err(format!(
                "{name} cannot capture {} {}x{} (it proposed {} {}x{}); it offers:\n{}",
                fourcc_str(fourcc),
                req.width,
                req.height,
                fourcc_str(fourcc_of(fmt.pixelformat)),
                fmt.width,
                fmt.height,
                describe_offer(&fd, queue)
            ));
        }
        let fps = device::set_fps(&fd, queue, req.fps);
        if let Some(got) = fps {
            if (got - f64::from(req.fps)).abs() > 0.5 {
                return Err(format!(
                    "{name} cannot capture {} {}x{} at {} fps (it proposed {got:.2}); it offers:\n{}",
                    fourcc_str(fourcc),
                    req.width,
                    req.height,
                    req.fps,
                    describe_offer(&fd, queue)
                ));
            }
        }
        let stride = fmt.plane_fmt.first().map_or(0, |p| p.bytesperline);
        Ok(Capture {
            node: node.clone(),
            fd,
            queue,
            fourcc,
            width: req.width,
            height: req.height,
            stride,
            fps,
            bufs: None,
            frames: 0,
            dropped: 0,
        })
    }

    /// Asks for another line stride (before [`Capture::start`]); returns what the driver kept.
    pub fn set_stride(&mut self, stride: u32) -> io::Result<u32> {
        let f = device::set_format(&mut self.fd, self.queue, self.fourcc, self.width, self.height, stride)?;
        self.stride = f.plane_fmt.first().map_or(0, |p| p.bytesperline);
        Ok(self.stride)
    }

    /// Allocates `count` MMAP buffers (exported as DMABUF when `export`), queues them all and
    /// starts streaming.
    pub fn start(&mut self, count: u32, export: bool) -> io::Result<()> {
        let mut q = BufferQueue::allocate(&self.fd, self.queue, MemoryType::Mmap, count, export)?;
        for i in 0..q.len() {
            q.queue_mmap(&self.fd, i, 0, Duration::ZERO)?;
        }
        q.stream_on(&self.fd)?;
        self.bufs = Some(q);
        Ok(())
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        device::raw(&self.fd)
    }

    fn bufs(&mut self) -> io::Result<&mut BufferQueue> {
        self.bufs.as_mut().ok_or_else(|| io::Error::other("capture not started"))
    }

    /// Dequeues every ready buffer and keeps the newest; the older ones go straight back.
    pub fn dequeue_newest(&mut self) -> io::Result<Option<Dequeued>> {
        let mut newest: Option<Dequeued> = None;
        loop {
            let fd = &self.fd;
            let Some(d) = self.bufs.as_mut().ok_or_else(|| io::Error::other("capture not started"))?.dequeue(fd)?
            else {
                break;
            };
            self.frames += 1;
            if d.error {
                self.requeue(d.index)?;
                continue;
            }
            if let Some(old) = newest.replace(d) {
                self.dropped += 1;
                self.requeue(old.index)?;
            }
        }
        Ok(newest)
    }

    pub fn requeue(&mut self, index: usize) -> io::Result<()> {
        let fd = &self.fd;
        let q = self.bufs.as_mut().ok_or_else(|| io::Error::other("capture not started"))?;
        q.queue_mmap(fd, index, 0, Duration::ZERO)
    }

    /// The payload of a dequeued buffer.
    pub fn data(&self, d: &Dequeued) -> &[u8] {
        let Some(map) = self.bufs.as_ref().and_then(|q| q.maps.get(d.index)) else { return &[] };
        let end = d.bytesused.min(map.len());
        &map[d.data_offset.min(end)..end]
    }

    /// The exported DMABUF of buffer `index` (when started with `export`).
    pub fn dmabuf(&self, index: usize) -> Option<DmabufPlane> {
        let q = self.bufs.as_ref()?;
        Some(DmabufPlane { fd: device::raw(q.exported.get(index)?), len: q.lengths[index] })
    }

    pub fn buffer_count(&mut self) -> usize {
        self.bufs().map_or(0, |q| q.len())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({}) {} {}x{}{}{}",
            self.node.path.display(),
            self.node.card,
            fourcc_str(self.fourcc),
            self.width,
            self.height,
            self.fps.map(|f| format!(" @ {f:.0} fps")).unwrap_or_default(),
            if self.stride > 0 { format!(", stride {}", self.stride) } else { String::new() },
        )
    }

    /// Whether the camera has V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME (H.264 cameras).
    pub fn has_force_key_frame(&self) -> bool {
        v4l2r::ioctl::CtrlId::new(bindings::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME).is_ok_and(|id| {
            v4l2r::ioctl::queryctrl::<bindings::v4l2_queryctrl>(&self.fd, id, v4l2r::ioctl::QueryCtrlFlags::empty())
                .is_ok()
        })
    }

    pub fn force_key_frame(&self) {
        let _ = v4l2r::ioctl::s_ctrl(&self.fd, bindings::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut q) = self.bufs.take() {
            q.release(&self.fd);
        }
    }
}

enum Backend {
    /// H.264 or MJPEG straight from the camera.
    Passthrough {
        force_key: bool,
        codec: Codec,
    },
    #[cfg(feature = "software")]
    Software(crate::encode::software::SoftwarePipeline),
    /// Raw frames JPEG-encoded in software (`--codec mjpeg`, no M2M JPEG encoder).
    Jpeg(crate::encode::jpeg::JpegPipeline),
    M2m(Box<M2mEncoder>),
}

/// Camera plus encoder, as one pipeline of the loop.
pub struct V4l2Pipeline {
    // Field order is drop order: the encoder lets go of imported camera buffers first.
    backend: Backend,
    cap: Capture,
    desc: String,
    codec: Codec,
    /// The camera's further streams and HTTP's on-demand JPEG encoders, fed each raw frame.
    taps: Vec<FrameTap>,
    /// Raw frames copied once from the capture buffer for the software encoders and the taps.
    pool: FramePool,
    last_stats: Instant,
}

impl std::fmt::Debug for V4l2Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Pipeline").field("desc", &self.desc).finish_non_exhaustive()
    }
}

/// Capture buffers: the camera keeps two queued while the encoder holds its input slots.
const CAPTURE_BUFFERS: u32 = 3;
const CAPTURE_BUFFERS_M2M: u32 = 4;

/// Builds the pipeline for `source=v4l2`: camera, then the encoder `--codec` and `--encoder`
/// ask for. H.264 (auto): passthrough for an H.264 camera, else an M2M H.264 encoder, else
/// software. MJPEG (auto): passthrough for an MJPEG camera, else an M2M JPEG encoder
/// (bcm2835-codec's MJPG or JPEG node), else software JPEG.
pub fn build(cfg: &PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    let jpeg = cfg.codec == Codec::Jpeg;
    // What the camera delivers when it already encodes what we stream.
    let coded: [u8; 4] = if jpeg { *b"MJPG" } else { *b"H264" };
    let wanted: Vec<[u8; 4]> = match (cfg.pixel_format, cfg.encoder) {
        (Some(f), _) if !SUPPORTED_FORMATS.contains(&f) => {
            return Err(format!(
                "pixel-format {} is not one uavstream captures ({})",
                fourcc_str(f),
                SUPPORTED_FORMATS.map(fourcc_str).join(", ")
            ))
        }
        (Some(f), _) if luma_bytes_per_pixel(f).is_none() && f != coded => {
            return Err(format!(
                "pixel-format {} cannot be streamed as {}: choose {} or a raw format ({})",
                fourcc_str(f),
                codec_name(cfg.codec),
                fourcc_str(coded),
                RAW_FORMATS.map(fourcc_str).join(", ")
            ))
        }
        (Some(f), _) => vec![f],
        (None, EncoderChoice::Passthrough) => vec![coded],
        (None, EncoderChoice::Software | EncoderChoice::V4l2) => RAW_FORMATS.to_vec(),
        (None, EncoderChoice::Auto) => [[coded].as_slice(), &RAW_FORMATS].concat(),
    };
    let node = resolve_device(&cfg.device)?;
    let req = CaptureRequest { width: cfg.width, height: cfg.height, fps: cfg.fps, formats: wanted };
    let mut cap = Capture::open(&node, &req)?;
    let raw = luma_bytes_per_pixel(cap.fourcc).is_some();
    let (backend, why) = match (cfg.encoder, cap.fourcc == coded) {
        (EncoderChoice::Auto | EncoderChoice::Passthrough, true) => {
            cap.start(CAPTURE_BUFFERS, false).map_err(|e| format!("{}: {e}", cap.describe()))?;
            let force_key = !jpeg && cap.has_force_key_frame();
            if force_key {
                cap.force_key_frame();
            }
            let why = if jpeg {
                "--codec mjpeg and the camera delivers JPEG frames: streamed without re-encoding"
            } else {
                "the camera delivers H.264: streamed without re-encoding"
            };
            (Backend::Passthrough { force_key, codec: cfg.codec }, why)
        }
        (EncoderChoice::Software | EncoderChoice::V4l2, true) => {
            return Err(format!(
                "{}: the camera delivers {} already; use --encoder passthrough (or auto)",
                cap.describe(),
                fourcc_str(coded)
            ))
        }
        (EncoderChoice::Passthrough, false) => {
            return Err(format!(
                "{}: --encoder passthrough needs a camera that delivers {}",
                cap.describe(),
                fourcc_str(coded)
            ))
        }
        (choice, false) if raw => {
            let m2m = match choice {
                EncoderChoice::Software => None,
                _ if jpeg => JPEG_CODECS.iter().find_map(|c| find_encoder(*c, Some(cap.fourcc)).map(|n| (*c, n))),
                _ => find_encoder(*b"H264", Some(cap.fourcc)).map(|n| (*b"H264", n)),
            };
            match (choice, m2m) {
                (EncoderChoice::V4l2, None) => {
                    return Err(format!(
                        "--encoder v4l2: no V4L2 memory-to-memory encoder takes {} and produces {}",
                        fourcc_str(cap.fourcc),
                        if jpeg { "JPEG (MJPG or JPEG)" } else { "H.264" }
                    ))
                }
                (_, Some((codec, enc))) => {
                    let settings = M2mSettings {
                        codec,
                        input: cap.fourcc,
                        width: cap.width,
                        height: cap.height,
                        stride: cap.stride,
                        fps: cfg.fps,
                        bitrate: if jpeg { jpeg_bitrate(cfg) } else { cfg.bitrate },
                        idr_period: cfg.idr_period(),
                        jpeg_quality: cfg.jpeg_quality,
                        dmabuf: true,
                    };
                    let e = open_m2m(&mut cap, &enc, settings)?;
                    let why = match (choice, jpeg) {
                        (EncoderChoice::Auto, false) => "raw camera frames and a V4L2 M2M H.264 encoder exists",
                        (EncoderChoice::Auto, true) => "raw camera frames and a V4L2 M2M JPEG encoder exists",
                        _ => "--encoder v4l2",
                    };
                    (Backend::M2m(Box::new(e)), why)
                }
                (_, None) if jpeg => software_jpeg_backend(&mut cap, cfg, choice)?,
                (_, None) => software_backend(&mut cap, cfg, choice)?,
            }
        }
        (_, false) => {
            return Err(format!(
                "{}: cannot be streamed as {}; choose --pixel-format {} or a raw format ({})",
                cap.describe(),
                codec_name(cfg.codec),
                fourcc_str(coded),
                RAW_FORMATS.map(fourcc_str).join(", ")
            ))
        }
    };
    let enc_desc = match &backend {
        Backend::Passthrough { codec: Codec::Jpeg, .. } => "MJPEG passthrough (RTP/JPEG)".to_owned(),
        Backend::Passthrough { force_key, .. } => format!(
            "H.264 passthrough ({})",
            if *force_key {
                "IDR on request via FORCE_KEY_FRAME"
            } else {
                "no IDR control: clients wait for the next IDR"
            }
        ),
        #[cfg(feature = "software")]
        Backend::Software(s) => s.describe(),
        Backend::Jpeg(j) => j.describe(),
        Backend::M2m(e) if jpeg => format!("V4L2 M2M JPEG encoder {}", e.describe()),
        Backend::M2m(e) => format!("V4L2 M2M H.264 encoder {}", e.describe()),
    };
    log::info!("encoder: {enc_desc} — chosen because {why}");
    if let Backend::M2m(e) = &backend {
        log::info!("M2M input path: {}", e.path);
    }
    let desc = format!("v4l2 {} -> {enc_desc}", cap.describe());
    Ok(Box::new(V4l2Pipeline {
        backend,
        cap,
        desc,
        codec: cfg.codec,
        taps: Vec::new(),
        pool: FramePool::default(),
        last_stats: Instant::now(),
    }))
}

/// M2M coded formats that carry JPEG frames, best first: bcm2835-codec's video encoder offers
/// `MJPG` (rate-controlled), its image encoder (`/dev/video31`) `JPEG` (quality control).
const JPEG_CODECS: [[u8; 4]; 2] = [*b"MJPG", *b"JPEG"];

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "H.264",
        Codec::Jpeg => "MJPEG (--codec mjpeg)",
    }
}

/// Bitrate for an M2M MJPEG encoder that is rate-controlled rather than quality-controlled
/// (bcm2835-codec's `MJPG`): bits per pixel a baseline 4:2:0 JPEG of camera content takes at
/// `--jpeg-quality` (measured with the software encoder: 0.59 bit/pixel at quality 80, 720p).
fn jpeg_bitrate(cfg: &PipelineConfig) -> u32 {
    let bits_per_pixel = match cfg.jpeg_quality {
        0..=50 => 0.3,
        51..=80 => 0.6,
        81..=90 => 0.9,
        _ => 1.5,
    };
    let bps = f64::from(cfg.width) * f64::from(cfg.height) * f64::from(cfg.fps) * bits_per_pixel;
    bps.min(f64::from(u32::MAX / 2)) as u32
}

fn software_jpeg_backend(
    cap: &mut Capture,
    cfg: &PipelineConfig,
    choice: EncoderChoice,
) -> Result<(Backend, &'static str), String> {
    use crate::encode::jpeg::{FrameLayout, JpegPipeline};
    let layout = FrameLayout { fourcc: cap.fourcc, width: cap.width, height: cap.height, stride: cap.stride };
    let j = JpegPipeline::start_frames(layout, cfg.jpeg_quality).map_err(|e| format!("JPEG encoder: {e}"))?;
    cap.start(CAPTURE_BUFFERS, false).map_err(|e| format!("{}: {e}", cap.describe()))?;
    let why = if choice == EncoderChoice::Software {
        "--encoder software"
    } else {
        "raw camera frames and no V4L2 M2M JPEG encoder"
    };
    Ok((Backend::Jpeg(j), why))
}

/// Opens the M2M encoder with the camera's stride; when the encoder insists on another stride,
/// moves the camera to it so DMABUF import stays possible. Starts the camera.
pub fn open_m2m(cap: &mut Capture, node: &NodeInfo, mut s: M2mSettings) -> Result<M2mEncoder, String> {
    let mut enc = M2mEncoder::open(node, &s)?;
    if s.dmabuf && enc.stride != cap.stride {
        let want = enc.stride;
        if cap.set_stride(want).is_ok_and(|got| got == want) {
            drop(enc);
            s.stride = want;
            enc = M2mEncoder::open(node, &s)?;
        }
    }
    let export = enc.path == InputPath::Dmabuf;
    cap.start(CAPTURE_BUFFERS_M2M, export).map_err(|e| format!("{}: {e}", cap.describe()))?;
    Ok(enc)
}

#[cfg(feature = "software")]
fn software_backend(
    cap: &mut Capture,
    cfg: &PipelineConfig,
    choice: EncoderChoice,
) -> Result<(Backend, &'static str), String> {
    use crate::encode::software::{EncoderSettings, RawLayout, SoftwarePipeline};
    let layout = RawLayout { fourcc: cap.fourcc, width: cap.width, height: cap.height, stride: cap.stride };
    let sw = SoftwarePipeline::start_frames(EncoderSettings::from_config(cfg), layout)
        .map_err(|e| format!("software encoder: {e}"))?;
    cap.start(CAPTURE_BUFFERS, false).map_err(|e| format!("{}: {e}", cap.describe()))?;
    let why = if choice == EncoderChoice::Software {
        "--encoder software"
    } else {
        "raw camera frames and no V4L2 M2M H.264 encoder"
    };
    Ok((Backend::Software(sw), why))
}

#[cfg(not(feature = "software"))]
fn software_backend(_: &mut Capture, _: &PipelineConfig, _: EncoderChoice) -> Result<(Backend, &'static str), String> {
    Err("raw camera frames need an H.264 encoder: no V4L2 M2M encoder found and this build has no software encoder"
        .into())
}

impl V4l2Pipeline {
    fn on_capture(&mut self, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        let Some(d) = self.cap.dequeue_newest()? else { return Ok(()) };
        let capture = monotonic_to_instant(d.timestamp, monotonic_now(), now);
        // One copy out of the capture buffer, shared by every software encoder of this camera.
        let software_backend = match &self.backend {
            Backend::Jpeg(_) => true,
            #[cfg(feature = "software")]
            Backend::Software(_) => true,
            _ => false,
        };
        let shared = match self.raw_layout() {
            Some(layout) if software_backend || !self.taps.is_empty() => {
                let data = self.cap.data(&d);
                self.pool.fill(layout, capture, |buf| buf.extend_from_slice(data))
            }
            _ => None,
        };
        if let Some(frame) = &shared {
            for tap in &self.taps {
                tap.push_shared(frame);
            }
        }
        match &mut self.backend {
            Backend::Passthrough { .. } => {
                sink(self.cap.data(&d), capture);
                self.cap.requeue(d.index)
            }
            #[cfg(feature = "software")]
            Backend::Software(sw) => {
                match &shared {
                    Some(frame) => _ = sw.push_shared(frame),
                    None => _ = sw.push_frame(self.cap.data(&d), capture),
                }
                self.cap.requeue(d.index)
            }
            Backend::Jpeg(j) => {
                match &shared {
                    Some(frame) => _ = j.push_shared(frame),
                    None => _ = j.push_frame(self.cap.data(&d), capture),
                }
                self.cap.requeue(d.index)
            }
            Backend::M2m(enc) => {
                let cap = &mut self.cap;
                let mut back = Vec::new();
                enc.reclaim(|i| back.push(i))?;
                for i in back {
                    cap.requeue(i)?;
                }
                if enc.path == InputPath::Dmabuf {
                    let plane = cap.dmabuf(d.index).ok_or_else(|| io::Error::other("capture buffer not exported"))?;
                    match enc.push_dmabuf(d.index, &plane, d.bytesused, d.timestamp) {
                        Ok(true) => return Ok(()),
                        Ok(false) => {
                            cap.dropped += 1;
                            return cap.requeue(d.index);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Err(e),
                        Err(e) => enc.fall_back_to_copy(&format!("QBUF: {e}"))?,
                    }
                }
                if !enc.push_copy(cap.data(&d), cap.stride, d.timestamp)? {
                    cap.dropped += 1;
                }
                cap.requeue(d.index)
            }
        }
    }

    fn log_stats(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_stats) >= Duration::from_secs(30) {
            self.last_stats = now;
            log::info!("v4l2: {} frames captured, {} dropped (newest wins)", self.cap.frames, self.cap.dropped);
        }
    }
}

impl Pipeline for V4l2Pipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.cap.raw_fd(), events: libc::POLLIN });
        match &self.backend {
            Backend::Passthrough { .. } => {}
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.poll_requests(out),
            Backend::Jpeg(j) => j.poll_requests(out),
            Backend::M2m(enc) => out.push(PollRequest { fd: enc.raw_fd(), events: enc.poll_events() }),
        }
    }

    fn on_ready(&mut self, index: usize, revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        self.log_stats(now);
        if index == 0 {
            if poll_error(revents) && revents & libc::POLLIN == 0 {
                return Err(io::Error::other(format!("{}: device gone or failed (poll error)", self.cap.describe())));
            }
            return self.on_capture(now, sink);
        }
        match &mut self.backend {
            Backend::Passthrough { .. } => Ok(()),
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.on_ready(index - 1, revents, now, sink),
            Backend::Jpeg(j) => j.on_ready(index - 1, revents, now, sink),
            Backend::M2m(enc) => {
                if revents & (libc::POLLERR | libc::POLLNVAL) != 0 && revents & (libc::POLLIN | libc::POLLOUT) == 0 {
                    return Err(io::Error::other(format!("{}: encoder failed (poll error)", enc.describe())));
                }
                let mut back = Vec::new();
                enc.reclaim(|i| back.push(i))?;
                for i in back {
                    self.cap.requeue(i)?;
                }
                let mono = monotonic_now();
                enc.drain(|unit, ts, _key| sink(unit, monotonic_to_instant(ts, mono, now)))?;
                Ok(())
            }
        }
    }

    fn request_idr(&mut self) {
        match &mut self.backend {
            Backend::Passthrough { force_key: true, .. } => self.cap.force_key_frame(),
            Backend::Passthrough { force_key: false, .. } => {}
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.request_idr(),
            Backend::Jpeg(_) => {}
            Backend::M2m(enc) => {
                enc.request_key_frame();
            }
        }
    }

    fn set_bitrate(&mut self, bps: u32) -> bool {
        match &mut self.backend {
            Backend::Passthrough { .. } => false,
            #[cfg(feature = "software")]
            Backend::Software(sw) => sw.set_bitrate(bps),
            Backend::Jpeg(_) => false,
            Backend::M2m(enc) => enc.set_bitrate(bps),
        }
    }

    fn idr_control(&self) -> IdrControl {
        match &self.backend {
            // Every JPEG frame stands alone: nothing to request.
            _ if self.codec == Codec::Jpeg => IdrControl::PassthroughOnly,
            Backend::Passthrough { force_key: false, .. } => IdrControl::PassthroughOnly,
            _ => IdrControl::OnRequest,
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn codec(&self) -> Codec {
        self.codec
    }

    fn raw_layout(&self) -> Option<FrameLayout> {
        let raw = luma_bytes_per_pixel(self.cap.fourcc).is_some();
        raw.then_some(FrameLayout {
            fourcc: self.cap.fourcc,
            width: self.cap.width,
            height: self.cap.height,
            stride: self.cap.stride,
        })
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

    /// Capture buffers dropped for a newer one, plus frames a software encoder dropped.
    fn frames_dropped(&self) -> u64 {
        self.cap.dropped
            + match &self.backend {
                #[cfg(feature = "software")]
                Backend::Software(sw) => sw.frames_dropped(),
                Backend::Jpeg(j) => j.frames_dropped(),
                _ => 0,
            }
    }
}
