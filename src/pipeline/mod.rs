//! The pipeline layer between sources and encoders: what a pipeline is to the loop
//! ([`Pipeline`]: fds to poll, access units to a sink), the raw frames that flow from a camera to
//! its consumers ([`frames`]), and the test pattern's frames ([`testpattern`]).
//!
//! ```text
//!   source/ (cameras: test pattern, file, V4L2)  ──raw frames (frames::FrameTap)──▶  encode/
//!        └──────────── both are Pipelines to the loop (this module) ────────────────┘
//! ```
//!
//! Dependencies point one way: `source` and `encode` use this module, and `source` builds
//! `encode`'s pipelines; this module uses neither.
//!
//! A pipeline lists the fds it wants in the loop's `poll(2)` set ([`Pipeline::poll_requests`]);
//! when one is ready the loop calls [`Pipeline::on_ready`], which hands every finished access
//! unit with its capture time to the sink: H.264 Annex B, or one whole JPEG file per frame when
//! [`Pipeline::codec`] is [`Codec::Jpeg`]. Pipelines never block the loop.

pub mod frames;
pub mod testpattern;

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::rtp::Codec;
use frames::{FrameLayout, FrameTap};

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
