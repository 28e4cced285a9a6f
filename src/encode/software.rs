//! Software H.264 encoding with OpenH264 on a worker thread (the CM5 path: it has no hardware
//! H.264 encoder).
//!
//! Two inputs:
//! - **Test pattern**: the worker paces itself at `--fps` and renders the pattern.
//! - **Camera frames**: the loop drops each captured frame (NV12, YU12 or YUYV, any stride)
//!   into a single-slot mailbox with [`SoftwarePipeline::push_frame`] (one memcpy) and goes
//!   on; the worker converts it to I420 and encodes it. A frame that arrives while the slot is
//!   still full replaces the one waiting there: the newest frame wins.
//!
//! Either way the worker encodes (constrained baseline, no B-frames, one slice, an IDR every
//! `--idr-interval` frames, timestamp rate control without frame skipping: every frame is
//! encoded, see [`new_encoder`]) and hands the access unit to the loop through a short queue
//! and an eventfd. The loop never waits for it. The thread, mailbox and queue plumbing is shared
//! with the JPEG encoder ([`super::worker`]).
//!
//! Policies: when the worker falls behind (the CPU cannot encode in real time), it skips frames
//! (the newest frame wins) rather than catching up, counts them and warns; when the loop has not
//! taken the last [`crate::limits::ENCODED_QUEUE`] units, the new unit is dropped (counted too)
//! and the next frame is forced to be an IDR so every client stays decodable. Buffers are
//! recycled, so steady state allocates nothing.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, QpRange, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};

use super::worker::{EncoderThread, Handoff, Labels, Mailbox, SharedFrame, ToI420};
use crate::config::PipelineConfig;
use crate::pipeline::testpattern::TestPattern;
use crate::pipeline::{IdrControl, Pipeline, PollRequest, Sink};

/// The layout of camera frames given to [`SoftwarePipeline::push_frame`] (the same type the JPEG
/// encoder takes).
pub use super::worker::FrameLayout as RawLayout;

static LABELS: Labels = Labels {
    thread: "h264-encoder",
    log_target: module_path!(),
    panicked: "encoder thread panicked",
    stopped: "encoder thread stopped",
    fell_behind: "software encoder fell behind",
    dropped_what: "encoded units dropped (next unit is an IDR)",
};

/// Requests from the loop to the worker, applied before the next frame.
#[derive(Default)]
struct Controls {
    force_idr: AtomicBool,
    /// A new bitrate for the worker to apply (0: none pending).
    new_bitrate: AtomicU32,
}

pub struct SoftwarePipeline {
    worker: EncoderThread,
    controls: Arc<Controls>,
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
    /// Let OpenH264's rate control drop frames to hold the bitrate. The daemon does not (every
    /// frame reaches the clients; see [`new_encoder`]); kept to measure the difference.
    pub frame_skip: bool,
}

impl EncoderSettings {
    pub fn from_config(cfg: &PipelineConfig) -> Self {
        Self {
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            bitrate: cfg.bitrate,
            idr_period: cfg.idr_period(),
            frame_skip: false,
        }
    }
}

/// A configured OpenH264 encoder: constrained baseline, real-time camera usage, low complexity,
/// one slice per picture, a fixed IDR period, and rate control that encodes every frame.
///
/// Rate control (measured with the test pattern, 30 s per figure; the bench's `delivery`
/// subcommand prints them live):
/// - Frame skipping is off. With it on, OpenH264 holds the bitrate by not encoding frames
///   (22.6 of 30 fps arrived at 640x360 and 2 Mbit/s); a camera's frame rate is not ours to cut.
/// - Timestamp mode: the budget of each frame follows its capture time, which is also right
///   when the worker had to skip a frame. Bitrate mode without skipping overshoots by up to
///   2x (640x360 at 1 Mbit/s: 2.2 Mbit/s); timestamp mode holds the average within 2 % where
///   the picture fits the bitrate.
/// - QP 12..51: the crate's default (0..51) makes OpenH264 fall back to 12..42, and QP 42
///   cannot get a large picture down to a low bitrate.
/// - Background detection only below `BACKGROUND_DETECTION_BELOW` bits per pixel. Above it,
///   background detection makes timestamp rate control swing between 0.2x and 3x of the target
///   second by second (640x360 at 1 Mbit/s: 20 % over on average). Below it the picture fits
///   only near QP 51, and the blocks it skips are what hold the bitrate (1280x720 at 300
///   kbit/s: +1.3 % with it, +9.4 % without).
/// - Some pictures do not fit the bitrate even at QP 51 (the pattern at 1920x1080 needs about
///   400 kbit/s): every frame is still sent, and the worker warns (`BitrateWatch`).
///
/// OpenH264 warns once on stderr that the bitrate "can't be controlled ... without enabling
/// skip frame"; that is about its own buffer model, not what the stream shows.
pub fn new_encoder(s: &EncoderSettings) -> Result<Encoder, openh264::Error> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(s.bitrate))
        .max_frame_rate(FrameRate::from_hz(s.fps as f32))
        .rate_control_mode(RateControlMode::Timestamp)
        .skip_frames(s.frame_skip)
        .qp(QpRange::new(12, 51))
        .background_detection(bits_per_pixel(s) < BACKGROUND_DETECTION_BELOW)
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .complexity(Complexity::Low)
        .intra_frame_period(IntraFramePeriod::from_num_frames(s.idr_period))
        .scene_change_detect(false)
        .num_threads(1);
    Encoder::with_api_config(OpenH264API::from_source(), config)
}

/// Bits per pixel per frame below which OpenH264's background detection is on (see
/// [`new_encoder`]); measured, not derived. It helped at 0.011 to 0.036 (1280x720 at 300 kbit/s
/// to 1 Mbit/s, 1920x1080 at 1 Mbit/s), made the rate swing at 0.145 and 0.29 (640x360 at 1 and
/// 2 Mbit/s), and made no difference at 0.043 and 0.072 (640x360 at 300 kbit/s, 1280x720 at
/// 2 Mbit/s): the threshold sits in that gap.
const BACKGROUND_DETECTION_BELOW: f64 = 0.05;

fn bits_per_pixel(s: &EncoderSettings) -> f64 {
    f64::from(s.bitrate) / (f64::from(s.width) * f64::from(s.height) * f64::from(s.fps.max(1)))
}

/// Watches the encoder's output over windows of capture time and says when it is more than
/// 10 % over the target: a picture that does not fit the bitrate even at the coarsest
/// quantizer. Frames are never dropped for it; the user can lower the size or raise the
/// bitrate. Pure: it takes capture times, never reads the clock.
#[derive(Debug, Default)]
struct BitrateWatch {
    start: Option<Instant>,
    bits: u64,
    warned: Option<Instant>,
}

impl BitrateWatch {
    const WINDOW: Duration = Duration::from_secs(10);
    const WARN_EVERY: Duration = Duration::from_secs(60);

    /// Counts a unit of `bytes` captured at `capture`. Returns the bitrate of the window this
    /// unit closes when it was over `target` (bit/s) by more than 10 % and a warning is due.
    fn push(&mut self, capture: Instant, bytes: usize, target: u32) -> Option<u64> {
        let start = *self.start.get_or_insert(capture);
        let elapsed = capture.saturating_duration_since(start);
        let mut over = None;
        if elapsed >= Self::WINDOW {
            let bps = (u128::from(self.bits) * 1_000_000_000 / elapsed.as_nanos()) as u64;
            (self.start, self.bits) = (Some(capture), 0);
            let due = self.warned.is_none_or(|t| capture.saturating_duration_since(t) >= Self::WARN_EVERY);
            if bps * 10 > u64::from(target) * 11 && due {
                self.warned = Some(capture);
                over = Some(bps);
            }
        }
        self.bits += bytes as u64 * 8;
        over
    }

    /// Starts over (a new target).
    fn reset(&mut self) {
        (self.start, self.bits) = (None, 0);
    }
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
    /// Encodes camera frames of `layout` at the camera's size, given with
    /// [`SoftwarePipeline::push_frame`] or through its [`FrameTap`].
    pub fn start_frames(settings: EncoderSettings, layout: RawLayout) -> io::Result<SoftwarePipeline> {
        let settings = EncoderSettings { width: layout.width, height: layout.height, ..settings };
        Self::start_scaled(settings, layout)
    }

    /// Encodes camera frames (expected in `layout`; each frame carries its own) at the size in
    /// `settings`: frames of another size are scaled down by area averaging on the worker.
    pub fn start_scaled(settings: EncoderSettings, layout: RawLayout) -> io::Result<SoftwarePipeline> {
        if !matches!(&layout.fourcc, b"NV12" | b"YU12" | b"YUYV") {
            return Err(io::Error::other(format!(
                "the software encoder takes NV12, YU12 or YUYV, not {}",
                String::from_utf8_lossy(&layout.fourcc)
            )));
        }
        let encoder = new_encoder(&settings).map_err(|e| io::Error::other(e.to_string()))?;
        let controls = Arc::new(Controls::default());
        let worker_controls = Arc::clone(&controls);
        let output = (settings.width, settings.height);
        let worker = EncoderThread::spawn_frames(&LABELS, layout, output, move |handoff, mailbox| {
            frame_worker(handoff, mailbox, H264Worker::new(worker_controls, settings, encoder))
        })?;
        let scaled = if (settings.width, settings.height) == (layout.width, layout.height) {
            String::new()
        } else {
            format!(" scaled to {}x{}", settings.width, settings.height)
        };
        let desc = format!(
            "software H.264 (OpenH264, constrained baseline, {} kbit/s, IDR every {} frames) of {} {}x{} camera frames{scaled} on a worker thread",
            settings.bitrate / 1000,
            settings.idr_period,
            String::from_utf8_lossy(&layout.fourcc),
            layout.width,
            layout.height,
        );
        Ok(SoftwarePipeline { worker, controls, desc, parameter_sets: probe_parameter_sets(&settings) })
    }

    /// Hands a camera frame to the worker (frame mode only): one copy into the mailbox. A
    /// frame still waiting there is replaced (newest wins). Returns `false` when it replaced one.
    pub fn push_frame(&self, data: &[u8], capture: Instant) -> bool {
        self.worker.push_frame(data, capture)
    }

    /// Hands a shared camera frame to the worker without copying it (frame mode only).
    pub fn push_shared(&self, frame: &SharedFrame) -> bool {
        self.worker.frame_tap().is_none_or(|tap| tap.push_shared(frame))
    }
}

/// The encoder as the worker thread holds it, with what it needs to honour the loop's requests.
struct H264Worker {
    controls: Arc<Controls>,
    settings: EncoderSettings,
    encoder: Encoder,
    /// The last unit failed or was dropped: the next one must be an IDR so clients can decode.
    force_next_idr: bool,
    bitrate: BitrateWatch,
    /// Frames OpenH264 made nothing of (logged at 1, 2, 4, 8... of them).
    rate_control_skips: u64,
}

impl H264Worker {
    fn new(controls: Arc<Controls>, settings: EncoderSettings, encoder: Encoder) -> H264Worker {
        H264Worker {
            controls,
            settings,
            encoder,
            force_next_idr: false,
            bitrate: BitrateWatch::default(),
            rate_control_skips: 0,
        }
    }

    /// Applies pending requests, encodes one frame with `encode` (given the encoder and whether
    /// to force an IDR) and hands the unit to the loop.
    fn encode_and_deliver(
        &mut self,
        handoff: &Handoff,
        capture: Instant,
        encode: impl FnOnce(&mut Encoder, bool, &mut Vec<u8>) -> Result<(), openh264::Error>,
    ) {
        self.apply_new_bitrate();
        let force = self.controls.force_idr.swap(false, Ordering::AcqRel) || self.force_next_idr;
        let mut buf = handoff.take_buffer();
        if let Err(e) = encode(&mut self.encoder, force, &mut buf) {
            handoff.recycle(buf);
            log::error!("software encoder: {e}");
            self.force_next_idr = true;
            return;
        }
        if buf.is_empty() {
            // Only rate control with frame skipping makes nothing of a frame, and that is off
            // (unless a benchmark asks for it): counted all the same, never silent.
            handoff.recycle(buf);
            handoff.count_skipped(1);
            self.rate_control_skips += 1;
            if self.rate_control_skips.is_power_of_two() {
                log::warn!(
                    "software encoder: OpenH264 rate control skipped a frame ({} so far)",
                    self.rate_control_skips
                );
            }
            return;
        }
        if let Some(bps) = self.bitrate.push(capture, buf.len(), self.settings.bitrate) {
            log::warn!(
                "software encoder: {} kbit/s over the last {} s for a target of {} kbit/s: this picture does not fit the bitrate at {}x{} even at the coarsest quantizer (every frame is still sent; lower the size or raise the bitrate)",
                bps / 1000,
                BitrateWatch::WINDOW.as_secs(),
                self.settings.bitrate / 1000,
                self.settings.width,
                self.settings.height
            );
        }
        self.force_next_idr = !handoff.deliver(buf, capture);
    }

    /// Applies a bitrate change asked for by the loop: in place ([`crate::sys::openh264_set_bitrate`]),
    /// so the stream goes on with P-frames (a change forcing an IDR would put a burst the size of
    /// a keyframe on a link that just showed it is full). Only when OpenH264 refuses (before the
    /// first frame) is the encoder rebuilt with the new rate (its first frame is an IDR). On
    /// failure the old encoder stays.
    fn apply_new_bitrate(&mut self) {
        let bps = self.controls.new_bitrate.swap(0, Ordering::AcqRel);
        if bps == 0 || bps == self.settings.bitrate {
            return;
        }
        let wanted = EncoderSettings { bitrate: bps, ..self.settings };
        match crate::sys::openh264_set_bitrate(&mut self.encoder, self.settings.bitrate, bps) {
            Ok(()) => {
                log::info!("software encoder: bitrate now {} kbit/s (in place)", bps / 1000);
                self.settings = wanted;
                self.bitrate.reset();
                return;
            }
            Err(e) => log::debug!("software encoder: {e} refused, rebuilding the encoder for {} kbit/s", bps / 1000),
        }
        match new_encoder(&wanted) {
            Ok(e) => {
                self.encoder = e;
                self.settings = wanted;
                self.bitrate.reset();
                log::info!("software encoder: bitrate now {} kbit/s (new encoder)", bps / 1000);
            }
            Err(e) => log::warn!("software encoder: bitrate {bps} refused: {e}"),
        }
    }
}

fn frame_worker(handoff: &Handoff, mailbox: &Mailbox, mut h264: H264Worker) {
    let (w, h) = (h264.settings.width, h264.settings.height);
    let mut convert = ToI420::new((w, h));
    let mut i420 = vec![0u8; convert.output_bytes()];
    let mut start = None;
    let mut bad_frames = 0u64;
    while let Some(frame) = mailbox.next_frame(&|| handoff.stopping()) {
        let converted = convert.convert(&frame, &mut i420);
        let capture = frame.capture;
        drop(frame);
        if let Err(e) = converted {
            bad_frames += 1;
            handoff.count_skipped(1);
            if bad_frames.is_power_of_two() {
                log::warn!("software encoder: camera frame skipped ({e}; {bad_frames} so far)");
            }
            continue;
        }
        let ts = capture.saturating_duration_since(*start.get_or_insert(capture));
        h264.encode_and_deliver(handoff, capture, |encoder, force, buf| {
            encode_frame_i420(encoder, &i420, (w as usize, h as usize), ts, force, buf)
        });
    }
}

/// Converts a camera frame to tightly packed I420. `false` when `src` is too short.
pub fn to_i420(layout: &RawLayout, src: &[u8], dst: &mut [u8]) -> bool {
    let (w, h, s) = (layout.width as usize, layout.height as usize, layout.stride as usize);
    if src.len() < layout.frame_bytes() || dst.len() < w * h * 3 / 2 {
        return false;
    }
    let (y, uv) = dst.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(w * h / 4);
    let (cw, ch) = (w / 2, h / 2);
    match &layout.fourcc {
        b"NV12" => {
            for r in 0..h {
                y[r * w..(r + 1) * w].copy_from_slice(&src[r * s..r * s + w]);
            }
            let c = &src[s * h..];
            for r in 0..ch {
                let row = &c[r * s..r * s + 2 * cw];
                for x in 0..cw {
                    u[r * cw + x] = row[2 * x];
                    v[r * cw + x] = row[2 * x + 1];
                }
            }
        }
        b"YU12" => {
            for r in 0..h {
                y[r * w..(r + 1) * w].copy_from_slice(&src[r * s..r * s + w]);
            }
            let cs = s / 2;
            let (us, vs) = (&src[s * h..], &src[s * h + cs * ch..]);
            for r in 0..ch {
                u[r * cw..(r + 1) * cw].copy_from_slice(&us[r * cs..r * cs + cw]);
                v[r * cw..(r + 1) * cw].copy_from_slice(&vs[r * cs..r * cs + cw]);
            }
        }
        b"YUYV" => {
            for r in (0..h).step_by(2) {
                let (row, next) = (&src[r * s..r * s + 2 * w], &src[(r + 1).min(h - 1) * s..]);
                for x in 0..w {
                    y[r * w + x] = row[2 * x];
                    if r + 1 < h {
                        y[(r + 1) * w + x] = next[2 * x];
                    }
                }
                // 4:2:2 to 4:2:0: average each chroma sample with the next line's.
                let avg = |a: u8, b: u8| (u16::from(a) + u16::from(b)).div_ceil(2) as u8;
                for x in 0..cw {
                    u[(r / 2) * cw + x] = avg(row[4 * x + 1], next[4 * x + 1]);
                    v[(r / 2) * cw + x] = avg(row[4 * x + 3], next[4 * x + 3]);
                }
            }
        }
        _ => return false,
    }
    true
}

impl Pipeline for SoftwarePipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        self.worker.poll_requests(out);
    }

    fn on_ready(&mut self, _index: usize, _revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        self.worker.on_ready(now, sink)
    }

    fn request_idr(&mut self) {
        self.controls.force_idr.store(true, Ordering::Release);
    }

    fn set_bitrate(&mut self, bps: u32) -> bool {
        self.controls.new_bitrate.store(bps, Ordering::Release);
        true
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

    fn frames_dropped(&self) -> u64 {
        self.worker.frames_dropped()
    }

    fn frame_tap(&self) -> Option<crate::pipeline::frames::FrameTap> {
        self.worker.frame_tap().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::{annex_b, nal_type, nal_unit_type, Sps};

    /// The live bitrate setter: refused before the first frame (the worker then rebuilds), and
    /// after it the rate follows down and back up without an IDR.
    #[test]
    fn the_bitrate_changes_in_place_without_an_idr() {
        let s = EncoderSettings {
            width: 640,
            height: 360,
            fps: 30,
            bitrate: 3_000_000,
            idr_period: 600,
            frame_skip: false,
        };
        let mut enc = new_encoder(&s).unwrap();
        assert!(crate::sys::openh264_set_bitrate(&mut enc, 3_000_000, 1_000_000).is_err());
        let mut pattern = TestPattern::new(640, 360);
        let mut n = 0u64;
        // Bytes of the last `count` of `frames` frames, and whether any of them was an IDR.
        let mut run = |enc: &mut Encoder, frames: u64, count: u64| {
            let (mut bytes, mut idr) = (0usize, false);
            for i in 0..frames {
                pattern.render(n);
                let mut out = Vec::new();
                encode_frame(enc, &pattern, Duration::from_millis(n * 33), false, &mut out).unwrap();
                n += 1;
                if i >= frames - count {
                    bytes += out.len();
                    idr |= annex_b(&out).any(|u| nal_unit_type(u) == Some(nal_type::IDR));
                }
            }
            (bytes, idr)
        };
        let (high, _) = run(&mut enc, 90, 60);
        crate::sys::openh264_set_bitrate(&mut enc, 3_000_000, 300_000).unwrap();
        let (low, idr) = run(&mut enc, 120, 60);
        assert!(!idr, "a bitrate change made an IDR");
        crate::sys::openh264_set_bitrate(&mut enc, 300_000, 3_000_000).unwrap();
        let (again, idr) = run(&mut enc, 120, 60);
        assert!(!idr, "a bitrate change made an IDR");
        eprintln!("2 s at 3 Mbit/s: {high} bytes, at 300 kbit/s: {low}, at 3 Mbit/s again: {again}");
        assert!(low * 3 < high && low < 2 * 300_000 / 8 * 13 / 10, "{high} then {low}");
        assert!(again > 3 * low, "{low} then {again}");
    }

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
                // Constrained baseline (constraint_set1, 42e0xx/42c0xx): what browsers' WebRTC
                // negotiates (profile-level-id 42e01f), so WHEP sends the stream as it is.
                assert_ne!(sps.constraint_flags & 0x40, 0, "constraint flags {:#04x}", sps.constraint_flags);
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

    #[test]
    fn the_bitrate_watch_warns_about_a_window_over_the_target_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut watch = BitrateWatch::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 1 Mbit/s target: 30 units of 4583 bytes a second is 1.1 Mbit/s, 4584 a little more.
        let mut warnings = Vec::new();
        for n in 0..=900u64 {
            let bytes = if n < 300 { 4583 } else { 4600 };
            if let Some(bps) = watch.push(at(n * 1000 / 30), bytes, 1_000_000) {
                warnings.push((n, bps));
            }
        }
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (n, bps) = warnings[0];
        assert_eq!(n, 600, "the first window at 1.1 Mbit/s does not count, the second does");
        assert!((1_100_000..1_110_000).contains(&bps), "{bps}");
        watch.reset();
        assert_eq!(watch.push(at(40_000), 1, 1_000_000), None);
        assert_eq!(watch.start, Some(at(40_000)));
    }

    #[test]
    fn background_detection_only_at_low_bits_per_pixel() {
        let s = |width, height, bitrate| EncoderSettings {
            width,
            height,
            fps: 30,
            bitrate,
            idr_period: 30,
            frame_skip: false,
        };
        assert!(bits_per_pixel(&s(1280, 720, 300_000)) < BACKGROUND_DETECTION_BELOW);
        assert!(bits_per_pixel(&s(640, 360, 300_000)) < BACKGROUND_DETECTION_BELOW);
        assert!(bits_per_pixel(&s(640, 360, 1_000_000)) > BACKGROUND_DETECTION_BELOW);
        assert!(bits_per_pixel(&s(1280, 720, 2_000_000)) > BACKGROUND_DETECTION_BELOW);
    }

    /// A 4x2 frame in every camera layout (stride 6), converted to the same I420.
    #[test]
    fn camera_layouts_convert_to_i420() {
        let i420 = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21];
        let nv12 = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0, 10, 20, 11, 21, 0, 0];
        let yu12 = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0, 10, 11, 0, 20, 21, 0];
        for (fourcc, src) in [(*b"NV12", &nv12[..]), (*b"YU12", &yu12[..])] {
            let layout = RawLayout { fourcc, width: 4, height: 2, stride: 6 };
            let mut out = [0xa5; 12];
            assert!(to_i420(&layout, src, &mut out));
            assert_eq!(out, i420, "{}", String::from_utf8_lossy(&fourcc));
        }
        // YUYV: Y0 U Y1 V; the chroma of the two lines is averaged.
        let yuyv = [1, 10, 2, 20, 3, 11, 4, 21, 5, 12, 6, 22, 7, 13, 8, 23];
        let layout = RawLayout { fourcc: *b"YUYV", width: 4, height: 2, stride: 8 };
        let mut out = [0xa5; 12];
        assert!(to_i420(&layout, &yuyv, &mut out));
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 21, 22]);
        assert!(!to_i420(&layout, &yuyv[..15], &mut out), "short frames are refused");
    }

    #[test]
    fn frame_mode_encodes_the_newest_frame_and_carries_its_capture_time() {
        let settings =
            EncoderSettings { width: 64, height: 48, fps: 30, bitrate: 200_000, idr_period: 30, frame_skip: false };
        let layout = RawLayout { fourcc: *b"NV12", width: 64, height: 48, stride: 64 };
        let mut p = SoftwarePipeline::start_frames(settings, layout).unwrap();
        let frame = vec![128u8; layout.frame_bytes()];
        let t0 = Instant::now();
        let mut got = Vec::new();
        let mut n = 0;
        while got.is_empty() && t0.elapsed() < Duration::from_secs(10) {
            p.push_frame(&frame, t0 + Duration::from_millis(n));
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
            p.on_ready(0, 0, Instant::now(), &mut |d: &[u8], at| got.push((d.to_vec(), at))).unwrap();
        }
        let (unit, at) = &got[0];
        assert!(annex_b(unit).any(|n| nal_unit_type(n) == Some(nal_type::IDR)), "first unit is an IDR");
        assert!(*at >= t0, "the capture time is carried through");
    }
}
