//! Software H.264 encoding with OpenH264 on a worker thread (the CM5 path: it has no hardware
//! H.264 encoder).
//!
//! The worker paces itself at `--fps`, renders the test pattern, encodes it (constrained
//! baseline, no B-frames, one slice, an IDR every `--idr-interval` frames, bitrate rate
//! control) and hands the access unit to the loop through a short queue and an eventfd. The
//! loop never waits for it.
//!
//! Policies: when the worker falls behind, it skips frames (the newest frame wins) rather than
//! catching up; when the loop has not taken the last [`limits::ENCODED_QUEUE`] units, the new
//! unit is dropped and the next frame is forced to be an IDR so every client stays decodable.
//! Buffers are recycled, so steady state allocates nothing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

use crate::config::Config;
use crate::limits;
use crate::source::testpattern::TestPattern;
use crate::source::{IdrControl, Pipeline, PollRequest, Sink};

struct Encoded {
    data: Vec<u8>,
    capture: Instant,
}

struct Shared {
    ready: Mutex<VecDeque<Encoded>>,
    free: Mutex<Vec<Vec<u8>>>,
    force_idr: AtomicBool,
    stop: AtomicBool,
    efd: EventFd,
    skipped: AtomicU64,
    dropped: AtomicU64,
    encoded: AtomicU64,
}

pub struct SoftwarePipeline {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    desc: String,
    /// SPS and PPS, known before the first frame so DESCRIBE never waits for the encoder.
    parameter_sets: Option<(Vec<u8>, Vec<u8>)>,
}

/// SPS and PPS the encoder will emit with these settings, from one frame encoded by a
/// throwaway encoder of the same configuration (OpenH264 keeps them constant: `ConstantId`).
fn probe_parameter_sets(s: &EncoderSettings) -> Option<(Vec<u8>, Vec<u8>)> {
    use crate::media::h264::{annex_b, nal_type, nal_unit_type};
    let mut enc = new_encoder(s).ok()?;
    let pattern = TestPattern::new(s.width as usize, s.height as usize);
    let mut out = Vec::new();
    encode_frame(&mut enc, &pattern, Duration::ZERO, true, &mut out).ok()?;
    let find = |t| annex_b(&out).find(|n| nal_unit_type(n) == Some(t)).map(<[u8]>::to_vec);
    Some((find(nal_type::SPS)?, find(nal_type::PPS)?))
}

impl std::fmt::Debug for SoftwarePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwarePipeline").field("desc", &self.desc).finish()
    }
}

/// Settings the software encoder takes from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: u32,
    pub idr_period: u32,
    /// Let rate control drop frames to hold the bitrate (the daemon does; a quality benchmark
    /// that compares frame by frame must not).
    pub frame_skip: bool,
}

impl EncoderSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            bitrate: cfg.bitrate,
            idr_period: cfg.idr_period(),
            frame_skip: true,
        }
    }
}

/// A configured OpenH264 encoder: constrained baseline, real-time camera usage, low complexity,
/// one slice per picture, bitrate rate control with frame skipping (OpenH264 cannot hold the
/// bitrate without it; a skipped frame is a dropped frame, never a delay), a fixed IDR period.
pub fn new_encoder(s: &EncoderSettings) -> Result<Encoder, openh264::Error> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(s.bitrate))
        .max_frame_rate(FrameRate::from_hz(s.fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .complexity(Complexity::Low)
        .intra_frame_period(IntraFramePeriod::from_num_frames(s.idr_period))
        .skip_frames(s.frame_skip)
        .scene_change_detect(false)
        .num_threads(1);
    Encoder::with_api_config(OpenH264API::from_source(), config)
}

/// Encodes one I420 frame into `out` (Annex B, appended). `force_idr` makes it an IDR.
pub fn encode_frame(
    enc: &mut Encoder,
    pattern: &TestPattern,
    ts: Duration,
    force_idr: bool,
    out: &mut Vec<u8>,
) -> Result<(), openh264::Error> {
    let (w, h) = (pattern.width, pattern.height);
    encode_planes(enc, (&pattern.y, &pattern.u, &pattern.v), (w, h), ts, force_idr, out)
}

/// Encodes one contiguous I420 frame (`w*h` luma, then U, then V) into `out`.
pub fn encode_frame_i420(
    enc: &mut Encoder,
    frame: &[u8],
    (w, h): (usize, usize),
    ts: Duration,
    force_idr: bool,
    out: &mut Vec<u8>,
) -> Result<(), openh264::Error> {
    let (y, uv) = frame.split_at(w * h);
    let (u, v) = uv.split_at(w * h / 4);
    encode_planes(enc, (y, u, v), (w, h), ts, force_idr, out)
}

fn encode_planes(
    enc: &mut Encoder,
    planes: (&[u8], &[u8], &[u8]),
    (w, h): (usize, usize),
    ts: Duration,
    force_idr: bool,
    out: &mut Vec<u8>,
) -> Result<(), openh264::Error> {
    if force_idr {
        enc.force_intra_frame();
    }
    let yuv = YUVSlices::new(planes, (w, h), (w, w / 2, w / 2));
    let bs = enc.encode_at(&yuv, Timestamp::from_millis(ts.as_millis() as u64))?;
    bs.write_vec(out);
    Ok(())
}

impl SoftwarePipeline {
    pub fn start(cfg: &Config) -> io::Result<SoftwarePipeline> {
        let settings = EncoderSettings::from_config(cfg);
        // Create the encoder here so a bad setting fails start-up, not the thread.
        let encoder = new_encoder(&settings).map_err(|e| io::Error::other(e.to_string()))?;
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(io::Error::from)?;
        let shared = Arc::new(Shared {
            ready: Mutex::new(VecDeque::with_capacity(limits::ENCODED_QUEUE)),
            free: Mutex::new(Vec::with_capacity(limits::ENCODED_QUEUE + 2)),
            force_idr: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            efd,
            skipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
        });
        let s2 = Arc::clone(&shared);
        let worker =
            std::thread::Builder::new().name("h264-encoder".into()).spawn(move || worker(s2, settings, encoder))?;
        let desc = format!(
            "test pattern {}x{} @ {} fps, software H.264 (OpenH264, constrained baseline, {} kbit/s, IDR every {} frames) on a worker thread",
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate / 1000,
            settings.idr_period
        );
        Ok(SoftwarePipeline { shared, worker: Some(worker), desc, parameter_sets: probe_parameter_sets(&settings) })
    }
}

fn worker(shared: Arc<Shared>, s: EncoderSettings, mut encoder: Encoder) {
    let mut pattern = TestPattern::new(s.width as usize, s.height as usize);
    let period = Duration::from_nanos(1_000_000_000 / u64::from(s.fps));
    let start = Instant::now();
    let mut next = start;
    let mut frame_no = 0u64;
    let mut force_next_idr = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let capture = Instant::now();
        next += period;
        if next <= capture {
            // Fell behind by more than a frame: newest frame wins, skip the backlog.
            let behind = (capture - next).as_nanos() / period.as_nanos() + 1;
            shared.skipped.fetch_add(behind as u64, Ordering::Relaxed);
            frame_no += behind as u64;
            next = capture + period;
        }
        pattern.render(frame_no);
        frame_no += 1;
        let force = shared.force_idr.swap(false, Ordering::AcqRel) || force_next_idr;
        let mut buf = shared.free.lock().map(|mut f| f.pop()).ok().flatten().unwrap_or_default();
        buf.clear();
        if let Err(e) = encode_frame(&mut encoder, &pattern, capture - start, force, &mut buf) {
            log::error!("software encoder: {e}");
            force_next_idr = true;
            continue;
        }
        if buf.is_empty() {
            continue;
        }
        force_next_idr = false;
        shared.encoded.fetch_add(1, Ordering::Relaxed);
        let Ok(mut q) = shared.ready.lock() else {
            return;
        };
        if q.len() >= limits::ENCODED_QUEUE || buf.len() > limits::MAX_ACCESS_UNIT {
            drop(q);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            force_next_idr = true;
            if let Ok(mut f) = shared.free.lock() {
                f.push(buf);
            }
            continue;
        }
        q.push_back(Encoded { data: buf, capture });
        drop(q);
        let _ = shared.efd.write(1);
    }
}

impl Pipeline for SoftwarePipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.shared.efd.as_fd().as_raw_fd(), events: libc::POLLIN });
    }

    fn on_ready(&mut self, _index: usize, _revents: i16, _now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        let _ = self.shared.efd.read();
        loop {
            let item = self.shared.ready.lock().map_err(|_| io::Error::other("encoder thread panicked"))?.pop_front();
            let Some(enc) = item else { break };
            sink(&enc.data, enc.capture);
            if let Ok(mut f) = self.shared.free.lock() {
                if f.len() < limits::ENCODED_QUEUE + 2 {
                    f.push(enc.data);
                }
            }
        }
        let skipped = self.shared.skipped.swap(0, Ordering::Relaxed);
        let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
        if skipped > 0 || dropped > 0 {
            log::warn!("software encoder fell behind: {skipped} frames skipped, {dropped} encoded units dropped (next unit is an IDR)");
        }
        if self.worker.as_ref().is_some_and(|w| w.is_finished()) {
            return Err(io::Error::other("encoder thread stopped"));
        }
        Ok(())
    }

    fn request_idr(&mut self) {
        self.shared.force_idr.store(true, Ordering::Release);
    }

    fn idr_control(&self) -> IdrControl {
        IdrControl::OnRequest
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn parameter_sets(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.parameter_sets.clone()
    }
}

impl Drop for SoftwarePipeline {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::{annex_b, nal_type, nal_unit_type, Sps};

    #[test]
    fn encodes_constrained_baseline_with_idr_period_and_forced_idr() {
        let s =
            EncoderSettings { width: 320, height: 240, fps: 30, bitrate: 500_000, idr_period: 10, frame_skip: false };
        let mut enc = new_encoder(&s).unwrap();
        let mut pattern = TestPattern::new(320, 240);
        let mut idr_frames = Vec::new();
        for n in 0..25u64 {
            pattern.render(n);
            let mut out = Vec::new();
            encode_frame(&mut enc, &pattern, Duration::from_millis(n * 33), n == 13, &mut out).unwrap();
            let types: Vec<u8> = annex_b(&out).filter_map(nal_unit_type).collect();
            assert!(!types.is_empty(), "frame {n} produced nothing");
            if types.contains(&nal_type::IDR) {
                idr_frames.push(n);
                assert!(types.contains(&nal_type::SPS) && types.contains(&nal_type::PPS), "IDR {n} without SPS/PPS");
                let sps = annex_b(&out).find(|n| nal_unit_type(n) == Some(nal_type::SPS)).unwrap();
                let sps = Sps::parse(sps).unwrap();
                assert_eq!((sps.width, sps.height, sps.profile_idc), (320, 240, 66));
            }
            // No B-frames: every slice is I or P (slice_type 0/5 or 2/7 in the first bits).
            assert!(types.iter().all(|&t| t != 0 && t <= 12), "{types:?}");
        }
        assert_eq!(idr_frames, vec![0, 10, 13, 23], "IDR every 10 frames, plus the forced one at 13");
    }

    #[test]
    fn probed_parameter_sets_match_the_stream() {
        let s =
            EncoderSettings { width: 640, height: 360, fps: 30, bitrate: 1_000_000, idr_period: 30, frame_skip: true };
        let (sps, pps) = probe_parameter_sets(&s).unwrap();
        let mut enc = new_encoder(&s).unwrap();
        let mut pattern = TestPattern::new(640, 360);
        pattern.render(7);
        let mut out = Vec::new();
        encode_frame(&mut enc, &pattern, Duration::ZERO, false, &mut out).unwrap();
        let nals: Vec<&[u8]> = annex_b(&out).collect();
        assert!(nals.contains(&sps.as_slice()) && nals.contains(&pps.as_slice()));
    }
}
