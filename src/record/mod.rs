//! On-board recording: fragmented MP4 segments of one H.264 stream, written by a thread.
//!
//! - [`segmenter`]: sans-IO core, access units → segment/fragment actions.
//! - [`naming`], [`retention`]: pure decisions on file names and on what to delete.
//! - [`files`]: the directory: listing, retention, the atomic `latest_*` link.
//! - [`snapshot`]: a camera's JPEG every `snapshot-interval`, `latest_image.jpg`, same retention.
//! - [`writer`]: the [`Recorder`] the loop owns (bounded queue, writer thread, files).
pub mod files;
pub mod naming;
pub mod repair;
pub mod retention;
pub mod segmenter;
pub mod snapshot;
pub mod writer;

pub use writer::{FsyncPolicy, Recorder, RecorderSettings, RecorderState, RecorderStatus};
