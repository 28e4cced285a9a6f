//! Encoders that turn raw frames into H.264 access units.
#[cfg(feature = "software")]
pub mod software;
