//! The on-demand JPEG encoder behind HTTP while the RTSP stream is H.264.
//!
//! Browsers and vision scripts want `/PATH.jpg` and `/PATH.mjpeg` whatever codec RTSP serves.
//! With `--codec h264` a second, software JPEG encoder runs only while an HTTP client wants
//! frames, and a few seconds after the last one left (`http::DEMAND_LINGER`: a script polling
//! snapshots does not start a thread per request):
//!
//! ```text
//!  raw camera frame ──▶ main pipeline (H.264 encoder)            ──▶ RTSP hub
//!        └── tap: one copy into the JPEG worker's mailbox ──▶ JPEG ──▶ HTTP latest frame
//!  test pattern: the JPEG worker renders its own copy of the pattern at --fps
//! ```
//!
//! Invariants: at most one side encoder; the main pipeline holds the only tap and loses it when
//! the side encoder stops (or the main pipeline is rebuilt: the loop re-attaches); the tap copies
//! newest-wins, so a slow JPEG encoder never holds back the H.264 path. A source without raw
//! frames (an H.264 camera, a file) cannot feed it: HTTP answers `503` saying why. A side
//! encoder that fails is retried no sooner than [`RETRY`].

use std::time::Duration;

use super::http::JpegSupply;
use crate::config::{PipelineConfig, SourceSpec};
use crate::encode::jpeg::JpegPipeline;
use crate::rtp::Codec;
use crate::source::Pipeline;

/// Earliest retry after the side encoder failed to start or died.
pub(super) const RETRY: Duration = Duration::from_secs(2);

/// Where HTTP's JPEG frames come from, for this configuration and main pipeline.
pub(super) fn supply(cfg: &PipelineConfig, pipeline: Option<&dyn Pipeline>) -> JpegSupply {
    if cfg.codec == Codec::Jpeg {
        return JpegSupply::Stream;
    }
    match (&cfg.source, pipeline) {
        (SourceSpec::TestPattern, _) => JpegSupply::OnDemand,
        (SourceSpec::File(_), _) => JpegSupply::Unavailable(
            "source file: holds H.264 and is replayed without decoding: no raw frames to encode as JPEG".into(),
        ),
        (SourceSpec::V4l2, Some(p)) if p.raw_layout().is_some() => JpegSupply::OnDemand,
        (SourceSpec::V4l2, Some(p)) => JpegSupply::Unavailable(format!(
            "{}: no raw frames to encode as JPEG (the camera's H.264 is passed through); run with --codec mjpeg \
             or a raw --pixel-format",
            p.describe()
        )),
        // Being rebuilt: frames will come once it is back (snapshot requests wait or time out).
        (SourceSpec::V4l2, None) => JpegSupply::OnDemand,
    }
}

/// A running side encoder.
pub(super) struct SideJpeg {
    pub(super) pipeline: JpegPipeline,
    /// Whether it takes frames from the main pipeline (else it renders the test pattern).
    tapped: bool,
}

impl std::fmt::Debug for SideJpeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideJpeg").field("tapped", &self.tapped).finish_non_exhaustive()
    }
}

impl SideJpeg {
    /// Starts it: tapping the main pipeline's raw frames when it has them, else (test pattern)
    /// rendering the pattern itself.
    pub(super) fn start(cfg: &PipelineConfig, main: Option<&mut (dyn Pipeline + '_)>) -> Result<SideJpeg, String> {
        if let Some(p) = main {
            if let Some(layout) = p.raw_layout() {
                let j = JpegPipeline::start_frames_for_http(layout, cfg.jpeg_quality)
                    .map_err(|e| format!("JPEG encoder for HTTP: {e}"))?;
                p.set_raw_tap(j.frame_tap());
                log::info!("http: JPEG encoder started for HTTP clients: {}", crate::source::Pipeline::describe(&j));
                return Ok(SideJpeg { pipeline: j, tapped: true });
            }
        }
        if cfg.source != SourceSpec::TestPattern {
            return Err("the source has no raw frames right now".into());
        }
        let j = JpegPipeline::start_for_http(cfg).map_err(|e| format!("JPEG encoder for HTTP: {e}"))?;
        log::info!("http: JPEG encoder started for HTTP clients: {}", crate::source::Pipeline::describe(&j));
        Ok(SideJpeg { pipeline: j, tapped: false })
    }

    /// Gives a rebuilt main pipeline the tap again. `false`: the new pipeline's frames differ
    /// (or it has none); the caller stops this encoder.
    pub(super) fn reattach(&mut self, main: &mut dyn Pipeline) -> bool {
        if !self.tapped {
            return true;
        }
        match (main.raw_layout(), self.pipeline.frame_tap()) {
            (Some(layout), Some(tap)) if layout == tap.layout() => {
                main.set_raw_tap(Some(tap));
                true
            }
            _ => false,
        }
    }

    /// Removes the tap from the main pipeline (before the encoder is dropped).
    pub(super) fn detach(&self, main: Option<&mut (dyn Pipeline + '_)>) {
        if let (true, Some(p)) = (self.tapped, main) {
            p.set_raw_tap(None);
        }
    }
}
