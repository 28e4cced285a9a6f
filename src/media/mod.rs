//! Media bitstream parsing and raw frame conversion (no I/O).
pub mod h264;
pub mod scale;
