//! Media bitstream parsing (no I/O).
pub mod fmp4;
pub mod h264;
