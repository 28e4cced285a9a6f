//! Software JPEG encoding (the `jpeg-encoder` crate: pure Rust, baseline, standard Huffman
//! tables) on a worker thread, for `--codec mjpeg` and for HTTP MJPEG.
//!
//! Same worker plumbing as the H.264 software encoder ([`super::worker`]): the worker renders the
//! test pattern at `--fps` (or takes camera frames from a single-slot mailbox, newest frame wins,
//! fed by [`JpegPipeline::push_frame`] or, from another pipeline, a [`FrameTap`]), encodes each
//! frame as a 4:2:0 baseline JPEG at `--jpeg-quality`, and hands it to the loop through a short
//! queue and an eventfd. The loop never waits for it.
//!
//! Policies: a worker that falls behind skips frames (newest wins); when the loop has not taken
//! the last [`crate::limits::ENCODED_QUEUE`] frames, the new one is dropped (every JPEG frame stands
//! alone, so nothing else is needed). Buffers are recycled: steady state allocates nothing.
//!
//! Output is always something RTP/JPEG (RFC 2435) can carry: 4:2:0 sampling is set explicitly
//! (the crate's default at quality >= 90 is 4:4:4), tables are the standard ones, sides must be
//! multiples of 8 (other sizes are cropped by up to 7 pixels) and at most 2040 (larger ones are
//! refused). HTTP's on-demand encoder ([`Target::Http`]) encodes the whole frame at any size.

use std::io;
use std::time::Instant;

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use super::worker::{EncoderThread, Handoff, Labels, Mailbox, SharedFrame, ToI420};
pub use super::worker::{FrameLayout, FrameTap};
use crate::pipeline::testpattern::TestPattern;
use crate::pipeline::{IdrControl, Pipeline, PollRequest, Sink};
use crate::rtp::{jpeg::MAX_DIMENSION, Codec};

/// A frame as rows of Y, Cb, Cr for the encoder: I420 planes, NV12, or YUYV, any stride;
/// the top-left `size` of it (a crop to what RTP/JPEG carries, or the whole frame).
struct RawImage<'a> {
    layout: FrameLayout,
    size: (u16, u16),
    data: &'a [u8],
}

impl ImageBuffer for RawImage<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.size.0
    }

    fn height(&self) -> u16 {
        self.size.1
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (h, s) = (self.layout.height as usize, self.layout.stride as usize);
        let w = usize::from(self.size.0);
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

/// The test pattern's I420 planes as encoder rows: the top-left `.1` of it.
struct PatternImage<'a>(&'a TestPattern, (u16, u16));

impl ImageBuffer for PatternImage<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.1 .0
    }

    fn height(&self) -> u16 {
        self.1 .1
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let p = self.0;
        let (w, out_w) = (p.width, usize::from(self.1 .0).min(p.width));
        let y = usize::from(y).min(p.height.saturating_sub(1));
        buffers[0].extend_from_slice(&p.y[y * w..y * w + out_w]);
        // Chroma is subsampled 2x2 (odd sides: the last column/row reuses its neighbour's).
        let (cw, ch) = (w / 2, p.height / 2);
        let row = (y / 2).min(ch.saturating_sub(1)) * cw;
        for x in 0..out_w {
            let i = row + (x / 2).min(cw.saturating_sub(1));
            buffers[1].push(p.u.get(i).copied().unwrap_or(128));
            buffers[2].push(p.v.get(i).copied().unwrap_or(128));
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
    let size = (pattern.width as u16, pattern.height as u16);
    encode_into(PatternImage(pattern, size), quality, out).map_err(|e| io::Error::other(e.to_string()))
}

static LABELS: Labels = Labels {
    thread: "jpeg-encoder",
    log_target: module_path!(),
    panicked: "JPEG encoder thread panicked",
    stopped: "JPEG encoder thread stopped",
    fell_behind: "JPEG encoder fell behind",
    dropped_what: "encoded frames dropped",
};

/// JPEG frames from the test pattern or from raw camera frames, encoded on a worker thread.
pub struct JpegPipeline {
    worker: EncoderThread,
    desc: String,
}

impl std::fmt::Debug for JpegPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JpegPipeline").field("desc", &self.desc).finish()
    }
}

/// Who the JPEGs are for: RTP/JPEG carries sides in multiples of 8 up to 2040 (a frame is cropped
/// by up to 7 pixels to fit; larger ones are refused); HTTP takes any size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Rtp,
    Http,
}

/// The encoded size for a `width` x `height` source.
fn output_size(width: u32, height: u32, target: Target) -> io::Result<(u16, u16)> {
    let (w, h) = match target {
        Target::Rtp => (width & !7, height & !7),
        Target::Http => (width, height),
    };
    let max = match target {
        Target::Rtp => u32::from(MAX_DIMENSION),
        Target::Http => u32::from(u16::MAX),
    };
    if w == 0 || h == 0 || w > max || h > max {
        return Err(io::Error::other(match target {
            Target::Rtp => format!("{width}x{height}: RTP/JPEG carries sides of 8 to {MAX_DIMENSION} pixels"),
            Target::Http => format!("{width}x{height}: JPEG sides are 1 to 65535 pixels"),
        }));
    }
    if (w, h) != (width, height) {
        log::info!("JPEG: {width}x{height} is cropped to {w}x{h} (RTP/JPEG carries sides in multiples of 8)");
    }
    Ok((w as u16, h as u16))
}

impl JpegPipeline {
    /// Encodes camera frames given with [`JpegPipeline::push_frame`] (YU12, NV12 or YUYV), for
    /// RTP/JPEG.
    pub fn start_frames(layout: FrameLayout, quality: u8) -> io::Result<JpegPipeline> {
        Self::start_frames_with(layout, quality, Target::Rtp)
    }

    /// The same for HTTP's on-demand encoder, fed by a [`FrameTap`] (any size, no crop).
    pub fn start_frames_for_http(layout: FrameLayout, quality: u8) -> io::Result<JpegPipeline> {
        Self::start_frames_with(layout, quality, Target::Http)
    }

    fn start_frames_with(layout: FrameLayout, quality: u8, target: Target) -> io::Result<JpegPipeline> {
        Self::start_scaled(layout, (layout.width, layout.height), quality, target)
    }

    /// Encodes camera frames (expected in `layout`; each frame carries its own) at `out`:
    /// frames of another size are scaled down by area averaging on the worker.
    pub fn start_scaled(layout: FrameLayout, out: (u32, u32), quality: u8, target: Target) -> io::Result<JpegPipeline> {
        if !matches!(&layout.fourcc, b"YU12" | b"NV12" | b"YUYV") {
            return Err(io::Error::other(format!(
                "the JPEG encoder takes YU12, NV12 or YUYV, not {}",
                String::from_utf8_lossy(&layout.fourcc)
            )));
        }
        let size = output_size(out.0, out.1, target)?;
        let worker = EncoderThread::spawn_frames(&LABELS, layout, out, move |handoff, mailbox| {
            frame_worker(handoff, mailbox, out, size, quality)
        })?;
        let scaled = if out == (layout.width, layout.height) {
            String::new()
        } else {
            format!(" scaled to {}x{}", out.0, out.1)
        };
        Ok(JpegPipeline {
            worker,
            desc: format!(
                "software JPEG (jpeg-encoder, baseline 4:2:0, quality {quality}) of {} {}x{} camera frames{scaled}{} on a worker thread",
                String::from_utf8_lossy(&layout.fourcc),
                layout.width,
                layout.height,
                if (u32::from(size.0), u32::from(size.1)) == out {
                    String::new()
                } else {
                    format!(" cropped to {}x{}", size.0, size.1)
                }
            ),
        })
    }

    /// Hands a camera frame to the worker (one copy); a frame still waiting is replaced (newest
    /// wins). Returns `false` when it replaced one. Ignored in test-pattern mode.
    pub fn push_frame(&self, data: &[u8], capture: Instant) -> bool {
        self.worker.push_frame(data, capture)
    }

    /// Hands a shared camera frame to the worker without copying it. Ignored in test-pattern mode.
    pub fn push_shared(&self, frame: &SharedFrame) -> bool {
        self.worker.frame_tap().is_none_or(|tap| tap.push_shared(frame))
    }

    /// A clonable, `Send` handle to the camera-frame mailbox, so another pipeline can feed this
    /// one raw frames in [`FrameTap::layout`]. `None` in test-pattern mode. A tap that outlives
    /// the pipeline is harmless: its pushes are refused.
    pub fn frame_tap(&self) -> Option<FrameTap> {
        self.worker.frame_tap().cloned()
    }
}

/// Encodes each frame at `out` (the stream's size), cropped to `size` (what the target carries):
/// a frame already at `out` is encoded as it is; a larger one is scaled down to I420 first.
fn frame_worker(handoff: &Handoff, mailbox: &Mailbox, out: (u32, u32), size: (u16, u16), quality: u8) {
    let mut convert = ToI420::new(out);
    let mut i420 = vec![0u8; convert.output_bytes()];
    let i420_layout = FrameLayout { fourcc: *b"YU12", width: out.0, height: out.1, stride: out.0 };
    let mut bad_frames = 0u64;
    while let Some(frame) = mailbox.next_frame(&|| handoff.stopping()) {
        let direct = (frame.layout.width, frame.layout.height) == out;
        let image = if direct && frame.data.len() >= frame.layout.frame_bytes() {
            Ok(RawImage { layout: frame.layout, size, data: &frame.data })
        } else {
            convert.convert(&frame, &mut i420).map(|()| RawImage { layout: i420_layout, size, data: &i420 })
        };
        let mut buf = handoff.take_buffer();
        let result = match image {
            Ok(image) => encode_into(image, quality, &mut buf),
            Err(e) => {
                bad_frames += 1;
                handoff.count_skipped(1);
                if bad_frames.is_power_of_two() {
                    log::warn!("JPEG encoder: camera frame skipped ({e}; {bad_frames} so far)");
                }
                handoff.recycle(buf);
                continue;
            }
        };
        let capture = frame.capture;
        drop(frame);
        match result {
            Ok(()) => _ = handoff.deliver(buf, capture),
            Err(e) => {
                handoff.recycle(buf);
                log::error!("JPEG encoder: {e}");
            }
        }
    }
}

impl Pipeline for JpegPipeline {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        self.worker.poll_requests(out);
    }

    fn on_ready(&mut self, _index: usize, _revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        self.worker.on_ready(now, sink)
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

    fn frames_dropped(&self) -> u64 {
        self.worker.frames_dropped()
    }

    fn frame_tap(&self) -> Option<FrameTap> {
        self.worker.frame_tap().cloned()
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
            let data = &i420[..layout.frame_bytes().min(i420.len())];
            encode_into(RawImage { layout, size: (w as u16, h as u16), data }, 80, &mut out).unwrap();
            assert!(crate::rtp::jpeg::parse(&out).is_ok());
            // Cropped to 56x40: still a JPEG RTP carries, of the cropped size.
            encode_into(RawImage { layout, size: (56, 40), data }, 80, &mut out).unwrap();
            let f = crate::rtp::jpeg::parse(&out).unwrap();
            assert_eq!((f.width, f.height), (56, 40));
        }
        assert_eq!(output_size(1920, 1080, Target::Rtp).unwrap(), (1920, 1080));
        assert_eq!(output_size(320, 180, Target::Rtp).unwrap(), (320, 176), "cropped to multiples of 8");
        assert_eq!(output_size(320, 180, Target::Http).unwrap(), (320, 180), "HTTP takes any size");
        assert!(output_size(2048, 1080, Target::Rtp).is_err() && output_size(4, 64, Target::Rtp).is_err());
        assert!(output_size(2048, 1080, Target::Http).is_ok());
    }

    #[test]
    fn a_pattern_of_any_size_encodes_whole_for_http_and_cropped_for_rtp() {
        let mut p = TestPattern::new(322, 181);
        p.render(3);
        let mut out = Vec::new();
        encode_into(PatternImage(&p, (322, 181)), 80, &mut out).unwrap();
        let f = crate::rtp::jpeg::parse(&out);
        // 322x181 is a valid JPEG that RTP cannot carry; the crop is one it can.
        assert!(f.is_err());
        encode_into(PatternImage(&p, (320, 176)), 80, &mut out).unwrap();
        let f = crate::rtp::jpeg::parse(&out).unwrap();
        assert_eq!((f.width, f.height), (320, 176));
    }

    #[test]
    fn camera_frames_fed_through_a_tap_come_out_as_jpegs_and_a_stale_tap_is_harmless() {
        let layout = FrameLayout { fourcc: *b"NV12", width: 64, height: 48, stride: 64 };
        let mut pipeline = JpegPipeline::start_frames(layout, 80).unwrap();
        let tap = pipeline.frame_tap().unwrap();
        assert_eq!(tap.layout(), layout);
        let frame = vec![128u8; layout.frame_bytes()];
        let t0 = Instant::now();
        let mut got = Vec::new();
        let feeder = tap.clone();
        while got.is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) {
            let pushed = std::thread::scope(|s| s.spawn(|| feeder.push(&frame, t0)).join());
            assert!(pushed.is_ok());
            std::thread::sleep(std::time::Duration::from_millis(10));
            pipeline.on_ready(0, 0, Instant::now(), &mut |d: &[u8], at| got.push((d.to_vec(), at))).unwrap();
        }
        let (jpeg, at) = &got[0];
        let parsed = crate::rtp::jpeg::parse(jpeg).unwrap();
        assert_eq!((parsed.width, parsed.height, *at), (64, 48, t0));

        drop(pipeline);
        assert!(!tap.push(&frame, Instant::now()), "the pipeline is gone: the frame goes nowhere");
    }
}
