//! On-board recording: fragmented MP4 segments of one H.264 stream, written by a thread.
pub mod naming;
pub mod retention;
pub mod segmenter;
