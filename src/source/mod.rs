//! Where access units come from: the pipeline behind the stream hub.
//!
//! A pipeline exposes one fd for the loop's `poll(2)` set; when it is readable the loop calls
//! [`Pipeline::on_ready`], which hands every finished access unit (Annex B) with its capture
//! time to the sink. Pipelines never block the loop: CPU-heavy work runs on a worker thread
//! that signals through an eventfd; timed replay uses a timerfd.

pub mod file;
pub mod testpattern;

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// Whether the pipeline can make an IDR on request (a live encoder) or only passes through
/// what it has (a file or an H.264 camera).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdrControl {
    OnRequest,
    PassthroughOnly,
}

pub trait Pipeline {
    /// The fd to poll for `POLLIN`.
    fn fd(&self) -> RawFd;
    /// Drains ready access units into `sink(annex_b, capture_time)`.
    fn on_ready(&mut self, sink: &mut dyn FnMut(&[u8], Instant)) -> io::Result<()>;
    /// Asks for the next access unit to be an IDR (ignored by passthrough pipelines).
    fn request_idr(&mut self);
    fn idr_control(&self) -> IdrControl;
    /// One line for the start-up log.
    fn describe(&self) -> String;
    /// SPS and PPS known before the first access unit (a file's), so DESCRIBE works at once.
    fn parameter_sets(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        None
    }
}

/// Builds the pipeline the configuration asks for.
pub fn build(cfg: &crate::config::Config) -> Result<Box<dyn Pipeline>, String> {
    use crate::config::{EncoderChoice, SourceSpec};
    match (&cfg.source, cfg.encoder) {
        (SourceSpec::File(path), EncoderChoice::Auto | EncoderChoice::Passthrough) => {
            let f =
                file::FileSource::open(path, cfg.fps).map_err(|e| format!("source file:{}: {e}", path.display()))?;
            Ok(Box::new(f))
        }
        (SourceSpec::File(_), EncoderChoice::Software) => Err(
            "source file: holds H.264 already; it is replayed without re-encoding (use --encoder auto or passthrough)"
                .into(),
        ),
        (SourceSpec::TestPattern, EncoderChoice::Passthrough) => {
            Err("the test pattern is raw video; it needs an encoder (--encoder auto or software)".into())
        }
        (SourceSpec::TestPattern, EncoderChoice::Auto | EncoderChoice::Software) => software_testpattern(cfg),
    }
}

#[cfg(feature = "software")]
fn software_testpattern(cfg: &crate::config::Config) -> Result<Box<dyn Pipeline>, String> {
    let p = crate::encode::software::SoftwarePipeline::start(cfg).map_err(|e| format!("software encoder: {e}"))?;
    Ok(Box::new(p))
}

#[cfg(not(feature = "software"))]
fn software_testpattern(_cfg: &crate::config::Config) -> Result<Box<dyn Pipeline>, String> {
    Err("this build has no software H.264 encoder (feature `software`)".into())
}
