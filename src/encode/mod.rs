//! Encoders that turn raw frames into H.264 access units or JPEG frames.
pub mod jpeg;
#[cfg(feature = "software")]
pub mod software;
#[cfg(feature = "v4l2")]
pub mod v4l2_m2m;
pub mod worker;
