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
//! multiples of 8 and at most 2040 ([`JpegPipeline::start`] refuses other sizes).

use std::io;
use std::time::Instant;

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use super::worker::{EncoderThread, Handoff, Labels, Mailbox, Pacer};
pub use super::worker::{FrameLayout, FrameTap};
use crate::config::Config;
use crate::rtp::{jpeg::MAX_DIMENSION, Codec};
use crate::source::testpattern::TestPattern;
use crate::source::{IdrControl, Pipeline, PollRequest, Sink};

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

fn check_size(width: u32, height: u32) -> io::Result<()> {
    if width % 8 != 0 || height % 8 != 0 || width > u32::from(MAX_DIMENSION) || height > u32::from(MAX_DIMENSION) {
        return Err(io::Error::other(format!(
            "{width}x{height}: RTP/JPEG carries sides that are multiples of 8 up to {MAX_DIMENSION}"
        )));
    }
    Ok(())
}

impl JpegPipeline {
    /// Encodes the moving test pattern at `--fps` and `--jpeg-quality`.
    pub fn start(cfg: &Config) -> io::Result<JpegPipeline> {
        check_size(cfg.width, cfg.height)?;
        let (w, h, fps, q) = (cfg.width as usize, cfg.height as usize, cfg.fps, cfg.jpeg_quality);
        let worker = EncoderThread::spawn(&LABELS, move |handoff| pattern_worker(handoff, w, h, fps, q))?;
        Ok(JpegPipeline {
            worker,
            desc: format!(
                "test pattern {w}x{h} @ {fps} fps, software JPEG (jpeg-encoder, baseline 4:2:0, quality {q}) on a worker thread"
            ),
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
        let worker = EncoderThread::spawn_frames(&LABELS, layout, move |handoff, mailbox| {
            frame_worker(handoff, mailbox, layout, quality)
        })?;
        Ok(JpegPipeline {
            worker,
            desc: format!(
                "software JPEG (jpeg-encoder, baseline 4:2:0, quality {quality}) of {} {}x{} camera frames on a worker thread",
                String::from_utf8_lossy(&layout.fourcc),
                layout.width,
                layout.height
            ),
        })
    }

    /// Hands a camera frame to the worker (one copy); a frame still waiting is replaced (newest
    /// wins). Returns `false` when it replaced one. Ignored in test-pattern mode.
    pub fn push_frame(&self, data: &[u8], capture: Instant) -> bool {
        self.worker.push_frame(data, capture)
    }

    /// A clonable, `Send` handle to the camera-frame mailbox, so another pipeline can feed this
    /// one raw frames in [`FrameTap::layout`]. `None` in test-pattern mode. A tap that outlives
    /// the pipeline is harmless: its pushes are refused.
    pub fn frame_tap(&self) -> Option<FrameTap> {
        self.worker.frame_tap().cloned()
    }
}

fn pattern_worker(handoff: &Handoff, w: usize, h: usize, fps: u32, quality: u8) {
    let mut pattern = TestPattern::new(w, h);
    let mut pacer = Pacer::new(fps);
    while !handoff.stopping() {
        let (capture, frame_no) = pacer.wait_next(handoff);
        pattern.render(frame_no);
        let mut buf = handoff.take_buffer();
        match encode_into(PatternImage(&pattern), quality, &mut buf) {
            Ok(()) => _ = handoff.deliver(buf, capture),
            Err(e) => {
                handoff.recycle(buf);
                log::error!("JPEG encoder: {e}");
            }
        }
    }
}

fn frame_worker(handoff: &Handoff, mailbox: &Mailbox, layout: FrameLayout, quality: u8) {
    while let Some(frame) = mailbox.next_frame(handoff) {
        if frame.data().len() < layout.frame_bytes() {
            drop(frame);
            log::warn!("JPEG encoder: short camera frame skipped");
            continue;
        }
        let mut buf = handoff.take_buffer();
        let result = encode_into(RawImage { layout, data: frame.data() }, quality, &mut buf);
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
        let cfg = crate::config::RawConfig::new().resolve().unwrap();
        assert!(JpegPipeline::start(&cfg).is_ok_and(|p| p.frame_tap().is_none()), "no tap in test-pattern mode");
    }
}
