//! Media bitstream parsing, fMP4 boxes and raw frame conversion (no I/O).
pub mod fmp4;
pub mod h264;
pub mod scale;
