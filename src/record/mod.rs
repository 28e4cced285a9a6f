//! On-board recording: fragmented MP4 segments of one H.264 stream, written by a thread.
//!
//! - [`segmenter`]: sans-IO core, access units → segment/fragment actions.
//! - [`naming`], [`retention`]: pure decisions on file names and on what to delete.
//! - [`writer`]: the [`Recorder`] the loop owns (bounded queue, writer thread, files).
pub mod naming;
pub mod retention;
pub mod segmenter;
pub mod writer;

pub use writer::{FsyncPolicy, Recorder, RecorderSettings, RecorderState, RecorderStatus};
