//! Where access units come from: the pipeline behind the stream hub.
//!
//! A pipeline lists the fds it wants in the loop's `poll(2)` set ([`Pipeline::poll_requests`]);
//! when one is ready the loop calls [`Pipeline::on_ready`], which hands every finished access
//! unit with its capture time to the sink: H.264 Annex B, or one whole JPEG file per frame when
//! [`Pipeline::codec`] is [`Codec::Jpeg`] (an MJPEG camera passes its buffers through as they
//! are; the stream hub drops, with a log line, frames RTP/JPEG cannot carry).
//! Pipelines never block the loop: CPU-heavy
//! work runs on a worker thread that signals through an eventfd; timed replay uses a timerfd;
//! V4L2 devices are polled directly.
//!
//! An `Err` from a pipeline means it is broken (device gone, worker dead): the loop drops it and
//! builds a new one with backoff, keeping every RTSP session. The loop also restarts a pipeline
//! that delivers nothing for `--stall-timeout`.

pub mod file;
pub mod libcamera;
pub mod pattern_camera;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use crate::pipeline::frames::{FrameLayout, FrameTap};
pub use crate::pipeline::{testpattern, IdrControl, Pipeline, PollRequest, Sink};
pub use crate::rtp::Codec;

/// Builds the pipeline the configuration asks for.
pub fn build(cfg: &crate::config::PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    build_with(cfg, None)
}

/// [`build`], telling a stream fed by its camera the layout of the camera's frames when it is
/// known (for its description: every frame carries its own layout).
pub fn build_with(
    cfg: &crate::config::PipelineConfig,
    camera: Option<FrameLayout>,
) -> Result<Box<dyn Pipeline>, String> {
    let p = build_any(cfg, camera)?;
    if p.codec() != cfg.codec {
        return Err(format!("source {} delivers {:?}, but --codec asks for {:?}", p.describe(), p.codec(), cfg.codec));
    }
    Ok(p)
}

fn build_any(cfg: &crate::config::PipelineConfig, camera: Option<FrameLayout>) -> Result<Box<dyn Pipeline>, String> {
    use crate::config::{EncoderChoice, SourceSpec};
    if cfg.fed {
        return build_fed(cfg, camera);
    }
    if cfg.codec == Codec::Jpeg {
        match (&cfg.source, cfg.encoder) {
            (SourceSpec::TestPattern, _) => return build_fed(cfg, camera),
            (SourceSpec::File(_), _) => {
                return Err("source file: holds H.264; --codec mjpeg needs the test pattern or a camera".into())
            }
            (SourceSpec::V4l2 | SourceSpec::Libcamera, _) => {}
        }
    }
    match (&cfg.source, cfg.encoder) {
        (SourceSpec::V4l2, _) => v4l2_pipeline(cfg),
        (SourceSpec::Libcamera, _) => libcamera_pipeline(cfg),
        (SourceSpec::File(path), EncoderChoice::Auto | EncoderChoice::Passthrough) => {
            let f =
                file::FileSource::open(path, cfg.fps).map_err(|e| format!("source file:{}: {e}", path.display()))?;
            Ok(Box::new(f))
        }
        (SourceSpec::File(_), EncoderChoice::Software | EncoderChoice::V4l2) => Err(
            "source file: holds H.264 already; it is replayed without re-encoding (use --encoder auto or passthrough)"
                .into(),
        ),
        (SourceSpec::TestPattern, _) => build_fed(cfg, camera),
    }
}

/// A stream fed raw frames by its camera (a test-pattern camera, or a capturing camera's
/// first stream): a software encoder at the stream's size, scaling and thinning the camera's
/// frames on its worker. Frames come through [`Pipeline::frame_tap`].
fn build_fed(cfg: &crate::config::PipelineConfig, camera: Option<FrameLayout>) -> Result<Box<dyn Pipeline>, String> {
    use crate::config::EncoderChoice;
    use crate::encode::jpeg::{JpegPipeline, Target};
    if !matches!(cfg.encoder, EncoderChoice::Auto | EncoderChoice::Software) {
        return Err(format!(
            "this stream is fed its camera's frames (a test pattern, or a camera's further stream): it is encoded in software, so encoder must be auto or software, not {:?}",
            cfg.encoder
        ));
    }
    // Without it, the test pattern's (a camera's frames carry their own layout anyway).
    let layout = camera.unwrap_or(FrameLayout {
        fourcc: *b"YU12",
        width: cfg.camera_width,
        height: cfg.camera_height,
        stride: cfg.camera_width,
    });
    match cfg.codec {
        Codec::Jpeg => {
            let p = JpegPipeline::start_scaled(layout, (cfg.width, cfg.height), cfg.jpeg_quality, Target::Rtp)
                .map_err(|e| format!("JPEG encoder: {e}"))?;
            Ok(Box::new(p))
        }
        Codec::H264 => software_fed(cfg, layout),
    }
}

#[cfg(feature = "software")]
fn software_fed(cfg: &crate::config::PipelineConfig, layout: FrameLayout) -> Result<Box<dyn Pipeline>, String> {
    use crate::encode::software::{EncoderSettings, SoftwarePipeline};
    let p = SoftwarePipeline::start_scaled(EncoderSettings::from_config(cfg), layout)
        .map_err(|e| format!("software encoder: {e}"))?;
    Ok(Box::new(p))
}

#[cfg(not(feature = "software"))]
fn software_fed(_cfg: &crate::config::PipelineConfig, _layout: FrameLayout) -> Result<Box<dyn Pipeline>, String> {
    Err("this build has no software H.264 encoder (feature `software`)".into())
}

#[cfg(feature = "libcamera")]
fn libcamera_pipeline(cfg: &crate::config::PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    libcamera::build(cfg)
}

#[cfg(not(feature = "libcamera"))]
fn libcamera_pipeline(_cfg: &crate::config::PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    Err("this build has no libcamera support (cargo feature `libcamera`)".into())
}

#[cfg(feature = "v4l2")]
fn v4l2_pipeline(cfg: &crate::config::PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    v4l2::build(cfg)
}

#[cfg(not(feature = "v4l2"))]
fn v4l2_pipeline(_cfg: &crate::config::PipelineConfig) -> Result<Box<dyn Pipeline>, String> {
    Err("this build has no V4L2 support (cargo feature `v4l2`)".into())
}
