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
pub mod testpattern;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

pub use crate::encode::jpeg::{FrameLayout, FrameTap};
pub use crate::rtp::Codec;

/// Whether the pipeline can make an IDR on request (a live encoder) or only passes through
/// what it has (a file or an H.264 camera).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdrControl {
    OnRequest,
    PassthroughOnly,
}

/// One fd the pipeline wants polled, with the `poll(2)` events it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRequest {
    pub fd: RawFd,
    pub events: i16,
}

/// Where access units go: `sink(annex_b, capture_time)`.
pub type Sink<'a> = dyn FnMut(&[u8], Instant) + 'a;

pub trait Pipeline {
    /// Appends the fds to poll; called before every `poll(2)`.
    fn poll_requests(&self, out: &mut Vec<PollRequest>);
    /// `index` is the position in the list from `poll_requests`, `revents` what poll reported.
    /// Hands ready access units to `sink`.
    fn on_ready(&mut self, index: usize, revents: i16, now: Instant, sink: &mut Sink<'_>) -> io::Result<()>;
    /// When the pipeline next wants [`Pipeline::on_timer`].
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    fn on_timer(&mut self, _now: Instant, _sink: &mut Sink<'_>) -> io::Result<()> {
        Ok(())
    }
    /// Asks for the next access unit to be an IDR (ignored by passthrough pipelines).
    fn request_idr(&mut self);
    /// Changes the encoder's bitrate while streaming; `false` when this pipeline cannot
    /// (passthrough).
    fn set_bitrate(&mut self, _bps: u32) -> bool {
        false
    }
    fn idr_control(&self) -> IdrControl;
    /// One line for the start-up log.
    fn describe(&self) -> String;
    /// SPS and PPS known before the first access unit (a file's), so DESCRIBE works at once.
    fn parameter_sets(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        None
    }
    /// What the units given to the sink are. Must match `--codec` (checked by [`build`]).
    fn codec(&self) -> Codec {
        Codec::H264
    }
    /// The layout of the raw frames this pipeline encodes (a raw camera), when it has them:
    /// HTTP's on-demand JPEG encoder can tap them.
    fn raw_layout(&self) -> Option<FrameLayout> {
        None
    }
    /// Also hands every raw frame to each of `taps` (copied once into a shared frame for all of
    /// them, newest wins): the camera's further streams and HTTP's on-demand JPEG encoders. An
    /// empty list stops it.
    fn set_raw_taps(&mut self, _taps: Vec<FrameTap>) {}
    /// Where a pipeline fed by a camera (rather than capturing itself) takes its raw frames.
    fn frame_tap(&self) -> Option<FrameTap> {
        None
    }
    /// Frames the camera (or test pattern) gave that never became an access unit, since the
    /// pipeline started: the encoder could not keep up (newest wins) or its output found no
    /// room. Shown in the loop's `stats:` line, so no frame goes missing silently.
    fn frames_dropped(&self) -> u64 {
        0
    }
}

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
