//! Software JPEG encoding (the `jpeg-encoder` crate: pure Rust, baseline, standard Huffman
//! tables) on a worker thread, for `--codec mjpeg` and for HTTP MJPEG.
//!
//! Same shape as the H.264 software encoder: the worker renders the test pattern at `--fps`
//! (or takes camera frames from a single-slot mailbox, newest frame wins), encodes each frame as
//! a 4:2:0 baseline JPEG at `--jpeg-quality`, and hands it to the loop through a short queue and
//! an eventfd. The loop never waits for it.
//!
//! Policies: a worker that falls behind skips frames (newest wins); when the loop has not taken
//! the last [`limits::ENCODED_QUEUE`] frames, the new one is dropped (every JPEG frame stands
//! alone, so nothing else is needed). Buffers are recycled: steady state allocates nothing.
//!
//! Output is always something RTP/JPEG (RFC 2435) can carry: 4:2:0 sampling is set explicitly
//! (the crate's default at quality >= 90 is 4:4:4), tables are the standard ones, sides must be
//! multiples of 8 and at most 2040 ([`JpegPipeline::start`] refuses other sizes).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::config::Config;
use crate::limits;
use crate::rtp::{jpeg::MAX_DIMENSION, Codec};
use crate::source::testpattern::TestPattern;
use crate::source::{IdrControl, Pipeline, PollRequest, Sink};

/// Layout of raw camera frames given to [`JpegPipeline::push_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// `YU12` (I420), `NV12` or `YUYV`.
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per line of the first plane.
    pub stride: u32,
}

impl FrameLayout {
    pub fn frame_bytes(&self) -> usize {
        let (s, h) = (self.stride as usize, self.height as usize);
        match &self.fourcc {
            b"YUYV" => s * h,
            _ => s * h + s * h / 2,
        }
    }
}

/// A frame as rows of Y, Cb, Cr for the encoder: I420 planes, NV12, or YUYV, any stride.
struct RawImage<'a> {
    layout: FrameLayout,
    data: &'a [u8],
}

impl ImageBuffer for RawImage<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.layout.width as u16
    }

    fn height(&self) -> u16 {
        self.layout.height as u16
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, h, s) = (self.layout.width as usize, self.layout.height as usize, self.layout.stride as usize);
        let y = usize::from(y).min(h.saturating_sub(1));
        let d = self.data;
        let px = |i: usize| d.get(i).copied().unwrap_or(128);
        match &self.layout.fourcc {
            b"YUYV" => {
                for x in 0..w {
                    buffers[0].push(px(y * s + 2 * x));
                    buffers[1].push(px(y * s + 4 * (x / 2) + 1));
                    buffers[2].push(px(y * s + 4 * (x / 2) + 3));
                }
            }
            b"NV12" => {
                let c = s * h + (y / 2) * s;
                for x in 0..w {
                    buffers[0].push(px(y * s + x));
                    buffers[1].push(px(c + 2 * (x / 2)));
                    buffers[2].push(px(c + 2 * (x / 2) + 1));
                }
            }
            _ => {
                let cs = s / 2;
                let (u, v) = (s * h + (y / 2) * cs, s * h + cs * h.div_ceil(2) + (y / 2) * cs);
                for x in 0..w {
                    buffers[0].push(px(y * s + x));
                    buffers[1].push(px(u + x / 2));
                    buffers[2].push(px(v + x / 2));
                }
            }
        }
    }
}

/// The test pattern's I420 planes as encoder rows.
struct PatternImage<'a>(&'a TestPattern);

impl ImageBuffer for PatternImage<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.0.width as u16
    }

    fn height(&self) -> u16 {
        self.0.height as u16
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let p = self.0;
        let (w, y) = (p.width, usize::from(y));
        let cw = w / 2;
        buffers[0].extend_from_slice(&p.y[y * w..(y + 1) * w]);
        let (u, v) = (&p.u[(y / 2) * cw..(y / 2 + 1) * cw], &p.v[(y / 2) * cw..(y / 2 + 1) * cw]);
        for x in 0..w {
            buffers[1].push(u[x / 2]);
            buffers[2].push(v[x / 2]);
        }
    }
}

/// Encodes one image as a baseline 4:2:0 JPEG into `out` (cleared first).
fn encode_into<I: ImageBuffer>(image: I, quality: u8, out: &mut Vec<u8>) -> Result<(), jpeg_encoder::EncodingError> {
    out.clear();
    let mut enc = Encoder::new(out, quality);
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.encode_image(image)
}

/// Encodes one test-pattern frame (for the benchmark and tests).
pub fn encode_pattern(pattern: &TestPattern, quality: u8, out: &mut Vec<u8>) -> io::Result<()> {
    encode_into(PatternImage(pattern), quality, out).map_err(|e| io::Error::other(e.to_string()))
}

struct Encoded {
    data: Vec<u8>,
    capture: Instant,
}

/// The waiting frame and spare buffers.
type MailState = (Option<(Vec<u8>, Instant)>, Vec<Vec<u8>>);

#[derive(Default)]
struct Mailbox {
    frame: Mutex<MailState>,
    wake: Condvar,
}

struct Shared {
    ready: Mutex<VecDeque<Encoded>>,
    free: Mutex<Vec<Vec<u8>>>,
    stop: AtomicBool,
    efd: EventFd,
    skipped: AtomicU64,
    dropped: AtomicU64,
}

/// JPEG frames from the test pattern or from raw camera frames, encoded on a worker thread.
pub struct JpegPipeline {
    shared: Arc<Shared>,
    mailbox: Option<(Arc<Mailbox>, FrameLayout)>,
    worker: Option<JoinHandle<()>>,
    desc: String,
    last_warn: Option<Instant>,
}

impl std::fmt::Debug for JpegPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JpegPipeline").field("desc", &self.desc).finish()
    }
}

fn check_size(width: u32, height: u32) -> io::Result<()> {
    if width % 8 != 0 || height % 8 != 0 || width > u32::from(MAX_DIMENSION) || height > u32::from(MAX_DIMENSION) {
        return Err(io::Error::other(format!(
            "{width}x{height}: RTP/JPEG carries sides that are multiples of 8 up to {MAX_DIMENSION}"
        )));
    }
    Ok(())
}

fn new_shared() -> io::Result<Arc<Shared>> {
    let efd =
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(io::Error::from)?;
    Ok(Arc::new(Shared {
        ready: Mutex::new(VecDeque::with_capacity(limits::ENCODED_QUEUE)),
        free: Mutex::new(Vec::with_capacity(limits::ENCODED_QUEUE + 2)),
        stop: AtomicBool::new(false),
        efd,
        skipped: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    }))
}

fn deliver(shared: &Shared, buf: Vec<u8>, capture: Instant) {
    let Ok(mut q) = shared.ready.lock() else { return };
    if q.len() >= limits::ENCODED_QUEUE || buf.len() > limits::MAX_ACCESS_UNIT {
        drop(q);
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = shared.free.lock() {
            f.push(buf);
        }
        return;
    }
    q.push_back(Encoded { data: buf, capture });
    drop(q);
    let _ = shared.efd.write(1);
}

fn take_buffer(shared: &Shared) -> Vec<u8> {
    shared.free.lock().map(|mut f| f.pop()).ok().flatten().unwrap_or_default()
}

impl JpegPipeline {
    /// Encodes the moving test pattern at `--fps` and `--jpeg-quality`.
    pub fn start(cfg: &Config) -> io::Result<JpegPipeline> {
        check_size(cfg.width, cfg.height)?;
        let shared = new_shared()?;
        let s2 = Arc::clone(&shared);
        let (w, h, fps, q) = (cfg.width as usize, cfg.height as usize, cfg.fps, cfg.jpeg_quality);
        let worker =
            std::thread::Builder::new().name("jpeg-encoder".into()).spawn(move || pattern_worker(s2, w, h, fps, q))?;
        Ok(JpegPipeline {
            shared,
            mailbox: None,
            worker: Some(worker),
            desc: format!(
                "test pattern {w}x{h} @ {fps} fps, software JPEG (jpeg-encoder, baseline 4:2:0, quality {q}) on a worker thread"
            ),
            last_warn: None,
        })
    }

    /// Encodes camera frames given with [`JpegPipeline::push_frame`] (YU12, NV12 or YUYV).
    pub fn start_frames(layout: FrameLayout, quality: u8) -> io::Result<JpegPipeline> {
        if !matches!(&layout.fourcc, b"YU12" | b"NV12" | b"YUYV") {
            return Err(io::Error::other(format!(
                "the JPEG encoder takes YU12, NV12 or YUYV, not {}",
                String::from_utf8_lossy(&layout.fourcc)
            )));
        }
        check_size(layout.width, layout.height)?;
        let shared = new_shared()?;
        let mailbox = Arc::new(Mailbox::default());
        let (s2, m2) = (Arc::clone(&shared), Arc::clone(&mailbox));
        let worker = std::thread::Builder::new()
            .name("jpeg-encoder".into())
            .spawn(move || frame_worker(s2, m2, layout, quality))?;
        Ok(JpegPipeline {
            shared,
            mailbox: Some((mailbox, layout)),
            worker: Some(worker),
            desc: format!(
                "software JPEG (jpeg-encoder, baseline 4:2:0, quality {quality}) of {} {}x{} camera frames on a worker thread",
                String::from_utf8_lossy(&layout.fourcc),
                layout.width,
                layout.height
            ),
            last_warn: None,
        })
    }

    /// Hands a camera frame to the worker (one copy); a frame still waiting is replaced (newest
    /// wins). Returns `false` when it replaced one.
    pub fn push_frame(&self, data: &[u8], capture: Instant) -> bool {
        let Some((mailbox, layout)) = &self.mailbox else { return true };
        let n = layout.frame_bytes().min(data.len());
        let Ok(mut st) = mailbox.frame.lock() else { return true };
        let mut buf = st.1.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&data[..n]);
        let old = st.0.replace((buf, capture));
        let replaced = old.is_some();
        if let Some((old, _)) = old {
            st.1.push(old);
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
        }
        drop(st);
        mailbox.wake.notify_one();
        !replaced
    }
}

impl Drop for JpegPipeline {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some((m, _)) = &self.mailbox {
            m.wake.notify_all();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn pattern_worker(shared: Arc<Shared>, w: usize, h: usize, fps: u32, quality: u8) {
    let mut pattern = TestPattern::new(w, h);
    let period = Duration::from_nanos(1_000_000_000 / u64::from(fps.max(1)));
    let mut next = Instant::now();
    let mut frame_no = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let capture = Instant::now();
        next += period;
        if next <= capture {
            let behind = (capture - next).as_nanos() / period.as_nanos() + 1;
            shared.skipped.fetch_add(behind as u64, Ordering::Relaxed);
            frame_no += behind as u64;
            next = capture + period;
        }
        pattern.render(frame_no);
        frame_no += 1;
        let mut buf = take_buffer(&shared);
        if let Err(e) = encode_into(PatternImage(&pattern), quality, &mut buf) {
            log::error!("JPEG encoder: {e}");
            continue;
        }
        deliver(&shared, buf, capture);
    }
}

fn frame_worker(shared: Arc<Shared>, mailbox: Arc<Mailbox>, layout: FrameLayout, quality: u8) {
    while !shared.stop.load(Ordering::Relaxed) {
        let frame = {
            let Ok(mut st) = mailbox.frame.lock() else { return };
            loop {
                if let Some(f) = st.0.take() {
                    break Some(f);
                }
                if shared.stop.load(Ordering::Relaxed) {
                    break None;
                }
                match mailbox.wake.wait_timeout(st, Duration::from_millis(100)) {
                    Ok((g, _)) => st = g,
                    Err(_) => return,
                }
            }
        };
        let Some((data, capture)) = frame else { break };
        let mut buf = take_buffer(&shared);
        let short = data.len() < layout.frame_bytes();
        let result = if short { Ok(()) } else { encode_into(RawImage { layout, data: &data }, quality, &mut buf) };
        if let Ok(mut st) = mailbox.frame.lock() {
            st.1.push(data);
        }
        match result {
            Ok(()) if short => log::warn!("JPEG encoder: short camera frame skipped"),
            Ok(()) => deliver(&shared, buf, capture),
            Err(e) => log::error!("JPEG encoder: {e}"),
        }
    }
}

impl Pipeline for JpegPipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.shared.efd.as_fd().as_raw_fd(), events: libc::POLLIN });
    }

    fn on_ready(&mut self, _index: usize, _revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        let _ = self.shared.efd.read();
        loop {
            let item =
                self.shared.ready.lock().map_err(|_| io::Error::other("JPEG encoder thread panicked"))?.pop_front();
            let Some(enc) = item else { break };
            sink(&enc.data, enc.capture);
            if let Ok(mut f) = self.shared.free.lock() {
                if f.len() < limits::ENCODED_QUEUE + 2 {
                    f.push(enc.data);
                }
            }
        }
        if self.last_warn.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(5)) {
            let skipped = self.shared.skipped.swap(0, Ordering::Relaxed);
            let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
            if skipped > 0 || dropped > 0 {
                self.last_warn = Some(now);
                log::warn!("JPEG encoder fell behind: {skipped} frames skipped, {dropped} encoded frames dropped");
            }
        }
        if self.worker.as_ref().is_some_and(|w| w.is_finished()) {
            return Err(io::Error::other("JPEG encoder thread stopped"));
        }
        Ok(())
    }

    fn request_idr(&mut self) {}

    /// Every JPEG frame is a keyframe: nothing to request.
    fn idr_control(&self) -> IdrControl {
        IdrControl::PassthroughOnly
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn codec(&self) -> Codec {
        Codec::Jpeg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_and_camera_frames_encode_to_jpegs_rtp_can_carry() {
        let mut p = TestPattern::new(320, 240);
        p.render(7);
        let mut out = Vec::new();
        for q in [1, 50, 80, 95, 100] {
            encode_pattern(&p, q, &mut out).unwrap();
            let f = crate::rtp::jpeg::parse(&out).unwrap();
            assert_eq!((f.width, f.height, f.kind), (320, 240, 1), "quality {q}");
        }
        // The same picture from I420, NV12 and YUYV camera layouts with padding.
        let (w, h, s) = (64usize, 48usize, 80usize);
        let i420: Vec<u8> = (0..s * h * 3 / 2).map(|i| (i % 200) as u8 + 16).collect();
        for fourcc in [*b"YU12", *b"NV12", *b"YUYV"] {
            let stride = if &fourcc == b"YUYV" { 2 * s } else { s } as u32;
            let layout = FrameLayout { fourcc, width: w as u32, height: h as u32, stride };
            encode_into(RawImage { layout, data: &i420[..layout.frame_bytes().min(i420.len())] }, 80, &mut out)
                .unwrap();
            assert!(crate::rtp::jpeg::parse(&out).is_ok());
        }
        assert!(check_size(1920, 1080).is_ok());
        assert!(check_size(2048, 1080).is_err() && check_size(100, 64).is_err());
    }
}
