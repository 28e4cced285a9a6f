//! Media bitstream parsing (no I/O).
pub mod h264;
