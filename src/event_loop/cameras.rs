//! Cameras and their feeds: one capture serves all of a camera's streams.
//!
//! ```text
//!  test-pattern camera (its own thread, renders once) ─┐
//!  V4L2 camera (its first stream's pipeline captures) ─┴─ shared raw frame ──▶ taps:
//!        the camera's further streams (scaled / thinned on their workers), HTTP's JPEG encoders,
//!        the snapshot encoder,
//!        the camera's raw-frame socket (`raw-socket`, its own thread: see `crate::raw`)
//! ```
//!
//! Invariants:
//! - A camera's frame is copied out of the capture buffer (or rendered) once, and every stream of
//!   it gets a reference; nothing is copied per stream, except the scaling a smaller stream needs.
//! - The feed list of a camera is handed to it whole whenever it changes: a stream or a camera
//!   rebuilt, an HTTP JPEG encoder started or stopped. A feed whose pipeline is gone refuses
//!   frames until the next list replaces it.
//! - A stream slower than its camera takes frames at most every 1/fps (its tap thins them).

use std::time::{Duration, Instant};

use super::http::JpegSupply;
use super::{side_jpeg, EventLoop};
use crate::config::SourceSpec;
use crate::source::pattern_camera::PatternCamera;

/// A camera as the loop runs it. A capturing camera's frames come from its first stream's
/// pipeline; a test-pattern camera renders on its own thread.
#[derive(Debug, Default)]
pub(super) struct CameraRt {
    pub(super) pattern: Option<PatternCamera>,
    /// Snapshots (`snapshot-dir`), see `snapshots`.
    pub(super) snapshots: Option<super::snapshots::CameraSnapshots>,
    /// The camera's raw-frame socket (`raw-socket`), for the daemon's whole life.
    pub(super) raw: Option<crate::raw::RawOutput>,
    /// Skipped frames the last warning covered, and when it was.
    warned: (u64, Option<Instant>),
}

/// At most one "fell behind" warning per camera this often.
const WARN_EVERY: Duration = Duration::from_secs(5);

impl EventLoop<'_> {
    /// The stream whose pipeline captures camera `c` (`None` for a test-pattern camera).
    pub(super) fn capturing_stream(&self, c: usize) -> Option<usize> {
        if self.cameras[c].pattern.is_some() {
            return None;
        }
        self.streams.iter().position(|st| st.cfg.camera == c && !st.pipeline_cfg.fed)
    }

    /// Hands camera `c` every tap that wants its frames.
    pub(super) fn feed_camera(&mut self, c: usize) {
        let camera_fps = self.cfg.cameras[c].fps;
        let mut taps = Vec::new();
        for st in self.streams.iter().filter(|st| st.cfg.camera == c) {
            let interval = (st.cfg.fps < camera_fps).then(|| Duration::from_secs_f64(1.0 / f64::from(st.cfg.fps)));
            let own = st.pipeline.as_ref().filter(|_| st.pipeline_cfg.fed).and_then(|p| p.frame_tap());
            let side = st.side_jpeg.as_ref().and_then(|s| crate::source::Pipeline::frame_tap(&s.pipeline));
            for tap in own.into_iter().chain(side) {
                tap.set_interval(interval);
                taps.push(tap);
            }
        }
        let snapshot_tap = self.cameras[c].snapshots.as_ref().and_then(|s| s.encoder()).and_then(|e| e.frame_tap());
        if let (Some(tap), Some(settings)) = (snapshot_tap, &self.cfg.cameras[c].snapshot) {
            tap.set_interval(Some(settings.interval));
            taps.push(tap);
        }
        if let Some(raw) = &self.cameras[c].raw {
            taps.push(raw.tap());
        }
        match (&self.cameras[c].pattern, self.capturing_stream(c)) {
            (Some(cam), _) => cam.set_taps(taps),
            (None, Some(si)) => {
                if let Some(p) = self.streams[si].pipeline.as_mut() {
                    p.set_raw_taps(taps);
                }
            }
            (None, None) => {}
        }
    }

    /// Frames camera `c` itself never delivered since the start (a test pattern that fell
    /// behind); a capturing camera's are counted by its pipeline.
    pub(super) fn camera_skipped(&self, c: usize) -> u64 {
        self.cameras[c].pattern.as_ref().map_or(0, PatternCamera::skipped)
    }

    /// Once a second: a camera that fell behind says so, at most every [`WARN_EVERY`].
    pub(super) fn supervise_cameras(&mut self, now: Instant) {
        for c in 0..self.cameras.len() {
            self.supervise_snapshots(c, now);
        }
        for (c, cam) in self.cameras.iter_mut().enumerate() {
            let Some(p) = &cam.pattern else { continue };
            let total = p.skipped();
            if total > cam.warned.0 && cam.warned.1.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY) {
                log::warn!(
                    "{}: the test pattern fell behind: {} frames skipped ({total} since start)",
                    self.cfg.cameras[c].name,
                    total - cam.warned.0
                );
                cam.warned = (total, Some(now));
            }
        }
    }

    /// The layout of camera `c`'s raw frames, when known.
    pub(super) fn camera_layout(&self, c: usize) -> Option<crate::encode::worker::FrameLayout> {
        match (&self.cameras[c].pattern, self.capturing_stream(c)) {
            (Some(p), _) => Some(p.layout()),
            (None, Some(si)) => self.streams[si].pipeline.as_ref().and_then(|p| p.raw_layout()),
            (None, None) => None,
        }
    }

    /// Whether camera `c` gives raw frames: `None` while it is being rebuilt.
    fn camera_raw(&self, c: usize) -> Option<bool> {
        match self.capturing_stream(c) {
            None => Some(true),
            Some(si) => self.streams[si].pipeline.as_ref().map(|p| p.raw_layout().is_some()),
        }
    }

    /// Whether camera `c` delivered within the stall timeout (a test pattern always does).
    pub(super) fn camera_delivering(&self, c: usize, now: Instant) -> bool {
        match self.capturing_stream(c) {
            None => true,
            Some(si) => {
                let st = &self.streams[si];
                st.pipeline.is_some() && now.saturating_duration_since(st.last_unit) < self.stall_timeout
            }
        }
    }

    /// Where HTTP's JPEGs of stream `si` come from.
    pub(super) fn jpeg_supply(&self, si: usize) -> JpegSupply {
        side_jpeg::supply(&self.streams[si].pipeline_cfg, self.camera_raw(self.streams[si].cfg.camera))
    }

    /// Starts the test-pattern cameras, feeds every camera, and sets HTTP's supplies: once, when
    /// every stream exists.
    pub(super) fn start_cameras(&mut self) -> std::io::Result<()> {
        for (c, cam) in self.cfg.cameras.iter().enumerate() {
            if cam.source == SourceSpec::TestPattern {
                let p = PatternCamera::start(cam.width, cam.height, cam.fps)?;
                log::info!("{}: {}", cam.name, p.describe());
                self.cameras[c].pattern = Some(p);
            }
            if let Some(settings) = &cam.raw {
                let guess = crate::encode::worker::FrameLayout {
                    fourcc: *b"YU12",
                    width: cam.width,
                    height: cam.height,
                    stride: cam.width,
                };
                let layout = self.camera_layout(c).unwrap_or(guess);
                self.cameras[c].raw = Some(crate::raw::RawOutput::start(&cam.name, settings, layout)?);
                if self.camera_raw(c) == Some(false) {
                    log::warn!(
                        "{}: raw-socket: the camera delivers coded frames (H.264 or MJPEG), not raw ones: consumers will get none; set pixel-format to NV12, YU12 or YUYV",
                        cam.name
                    );
                }
            }
        }
        self.start_snapshots();
        for c in 0..self.cameras.len() {
            self.feed_camera(c);
        }
        let now = Instant::now();
        for c in 0..self.cameras.len() {
            self.supervise_snapshots(c, now);
        }
        for si in 0..self.streams.len() {
            let supply = self.jpeg_supply(si);
            self.streams[si].jpeg_on_demand = matches!(supply, JpegSupply::OnDemand);
            if let Some(h) = self.http.as_mut() {
                h.set_supply(si, supply, now);
            }
        }
        Ok(())
    }
}
