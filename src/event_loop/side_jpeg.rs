//! The on-demand JPEG encoder behind HTTP while a stream is H.264.
//!
//! Browsers and vision scripts want `/PATH.jpg` and `/PATH.mjpeg` whatever codec RTSP serves.
//! For an H.264 stream a second, software JPEG encoder runs only while an HTTP client wants
//! frames, and a few seconds after the last one left (`http::DEMAND_LINGER`: a script polling
//! snapshots does not start a thread per request):
//!
//! ```text
//!  camera (V4L2 capture or test pattern) ──shared raw frame──▶ the stream's H.264 encoder ──▶ RTSP hub
//!        └── tap (no copy, newest wins) ──▶ JPEG encoder at the stream's size ──▶ HTTP latest frame
//! ```
//!
//! Invariants: at most one side encoder per stream; its tap is one of its camera's feeds (the
//! loop hands the camera the list whenever it changes, and again when a camera is rebuilt); the
//! tap is newest-wins, so a slow JPEG encoder never holds back the H.264 path. A camera without
//! raw frames (an H.264 camera, a file) cannot feed it: HTTP answers `503` saying why. A side
//! encoder that fails is retried no sooner than [`RETRY`].

use std::time::Duration;

use super::http::JpegSupply;
use crate::config::{PipelineConfig, SourceSpec};
use crate::encode::jpeg::{FrameLayout, JpegPipeline, Target};
use crate::rtp::Codec;

/// Earliest retry after the side encoder failed to start or died.
pub(super) const RETRY: Duration = Duration::from_secs(2);

/// Where HTTP's JPEG frames of a stream come from. `camera_raw`: whether its camera gives raw
/// frames (`None` while the camera is being rebuilt).
pub(super) fn supply(cfg: &PipelineConfig, camera_raw: Option<bool>) -> JpegSupply {
    if cfg.codec == Codec::Jpeg {
        return JpegSupply::Stream;
    }
    match (&cfg.source, camera_raw) {
        (SourceSpec::TestPattern, _) => JpegSupply::OnDemand,
        (SourceSpec::File(_), _) => JpegSupply::Unavailable(
            "source file: holds H.264 and is replayed without decoding: no raw frames to encode as JPEG".into(),
        ),
        // Being rebuilt: frames will come once it is back (snapshot requests wait or time out).
        (SourceSpec::V4l2 | SourceSpec::Libcamera, Some(true) | None) => JpegSupply::OnDemand,
        (SourceSpec::V4l2 | SourceSpec::Libcamera, Some(false)) => JpegSupply::Unavailable(
            "the camera gives no raw frames to encode as JPEG (its H.264 is passed through); run with --codec mjpeg \
             or a raw --pixel-format"
                .into(),
        ),
    }
}

/// A running side encoder: a JPEG encoder at the stream's size, fed its camera's frames
/// through its tap (the loop hands the tap to the camera).
pub(super) struct SideJpeg {
    pub(super) pipeline: JpegPipeline,
}

impl std::fmt::Debug for SideJpeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideJpeg").finish_non_exhaustive()
    }
}

impl SideJpeg {
    /// `camera`: the layout of the camera's frames when known (each frame carries its own).
    pub(super) fn start(cfg: &PipelineConfig, camera: Option<FrameLayout>) -> Result<SideJpeg, String> {
        let layout = camera.unwrap_or(FrameLayout {
            fourcc: *b"YU12",
            width: cfg.camera_width,
            height: cfg.camera_height,
            stride: cfg.camera_width,
        });
        let j = JpegPipeline::start_scaled(layout, (cfg.width, cfg.height), cfg.jpeg_quality, Target::Http)
            .map_err(|e| format!("JPEG encoder for HTTP: {e}"))?;
        log::info!("http: JPEG encoder started for HTTP clients: {}", crate::source::Pipeline::describe(&j));
        Ok(SideJpeg { pipeline: j })
    }
}
