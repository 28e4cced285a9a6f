//! The test pattern as a camera: one thread renders each frame once, at the camera's size and
//! rate, into a shared frame that every stream of the camera (and HTTP's JPEG encoders) gets by
//! reference through its [`FrameTap`]; streams of another size or rate scale or thin it out on
//! their own workers.
//!
//! Invariants:
//! - Frames are rendered only while someone takes them, on the camera's own thread: the loop
//!   never waits for it.
//! - Capture times lie on the frame grid of the configured rate (like a sensor clock); a thread
//!   that falls more than a frame behind skips ahead (newest wins) and counts what it skipped.
//! - Dropping the camera stops and joins the thread.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::testpattern::TestPattern;
use crate::encode::worker::{FrameLayout, FramePool, FrameTap, Pacer};

/// A running test-pattern camera.
pub struct PatternCamera {
    taps: Arc<Mutex<Vec<FrameTap>>>,
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    layout: FrameLayout,
    fps: u32,
}

impl std::fmt::Debug for PatternCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternCamera").field("layout", &self.layout).field("fps", &self.fps).finish_non_exhaustive()
    }
}

impl PatternCamera {
    /// Starts the rendering thread (`width` and `height` even).
    pub fn start(width: u32, height: u32, fps: u32) -> io::Result<PatternCamera> {
        let layout = FrameLayout { fourcc: *b"YU12", width, height, stride: width };
        let taps: Arc<Mutex<Vec<FrameTap>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let (t, s) = (Arc::clone(&taps), Arc::clone(&stop));
        let counters = (Arc::clone(&frames), Arc::clone(&skipped));
        let thread = std::thread::Builder::new()
            .name("test-pattern".into())
            .spawn(move || render_loop(layout, fps, &t, &s, &counters.0, &counters.1))?;
        Ok(PatternCamera { taps, stop, frames, skipped, thread: Some(thread), layout, fps })
    }

    /// Who gets the frames from now on.
    pub fn set_taps(&self, taps: Vec<FrameTap>) {
        if let Ok(mut t) = self.taps.lock() {
            *t = taps;
        }
    }

    /// Frames rendered since the start.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Frames never rendered since the start: the thread fell behind the rate (newest wins), or
    /// every pooled frame was still held by a slow encoder.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The layout of its frames (I420 at the camera's size).
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn describe(&self) -> String {
        format!(
            "test pattern {}x{} @ {} fps (rendered once per frame for all its streams)",
            self.layout.width, self.layout.height, self.fps
        )
    }
}

impl Drop for PatternCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn render_loop(
    layout: FrameLayout,
    fps: u32,
    taps: &Mutex<Vec<FrameTap>>,
    stop: &AtomicBool,
    frames: &AtomicU64,
    skipped: &AtomicU64,
) {
    let mut pattern = TestPattern::new(layout.width as usize, layout.height as usize);
    let mut pool = FramePool::default();
    let mut pacer = Pacer::new(fps);
    while !stop.load(Ordering::Relaxed) {
        let (capture, frame_no, behind) = pacer.wait_next();
        skipped.fetch_add(behind, Ordering::Relaxed);
        let Ok(list) = taps.lock().map(|t| t.clone()) else { return };
        if list.is_empty() {
            continue;
        }
        pattern.render(frame_no);
        pattern.stamp(super::testpattern::time_code_of(capture));
        let frame = pool.fill(layout, capture, |buf| {
            buf.extend_from_slice(&pattern.y);
            buf.extend_from_slice(&pattern.u);
            buf.extend_from_slice(&pattern.v);
        });
        let Some(frame) = frame else {
            skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        frames.fetch_add(1, Ordering::Relaxed);
        for tap in &list {
            tap.push_shared(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::encode::jpeg::{JpegPipeline, Target};
    use crate::source::Pipeline;

    #[test]
    fn one_rendering_feeds_two_encoders_at_their_own_sizes_and_rates() {
        let cam = PatternCamera::start(320, 240, 30).unwrap();
        let full = JpegPipeline::start_scaled(cam.layout(), (320, 240), 80, Target::Http).unwrap();
        let half = JpegPipeline::start_scaled(cam.layout(), (160, 120), 80, Target::Http).unwrap();
        let (a, b) = (full.frame_tap().unwrap(), half.frame_tap().unwrap());
        b.set_interval(Some(Duration::from_millis(66)));
        cam.set_taps(vec![a, b]);
        let (mut full, mut half) = (full, half);
        let mut got = [Vec::new(), Vec::new()];
        let t = Instant::now();
        while (got[0].len() < 20 || got[1].len() < 8) && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
            for (k, p) in [&mut full, &mut half].into_iter().enumerate() {
                let g = &mut got[k];
                p.on_ready(0, 0, Instant::now(), &mut |jpeg: &[u8], capture: Instant| g.push((jpeg.to_vec(), capture)))
                    .unwrap();
            }
        }
        let size = |jpeg: &[u8]| {
            let mut d = jpeg_decoder::Decoder::new(jpeg);
            d.read_info().unwrap();
            let i = d.info().unwrap();
            (i.width, i.height)
        };
        assert_eq!(size(&got[0][0].0), (320, 240));
        assert_eq!(size(&got[1][0].0), (160, 120));
        // The slower one took every other frame of the same captures.
        let step = |v: &[(Vec<u8>, Instant)]| v[v.len() - 1].1.duration_since(v[1].1) / (v.len() as u32 - 2);
        let (fast, slow) = (step(&got[0]), step(&got[1]));
        assert!(slow >= fast * 3 / 2, "{fast:?} {slow:?}");
        assert!(cam.frames() >= 20);
    }
}
