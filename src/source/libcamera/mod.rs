//! `source=libcamera`: Raspberry Pi CSI cameras (and any camera libcamera drives) through the
//! ISP, with libcamera's exposure, white-balance and focus loops.
//!
//! [`settings`] (controls, camera choice, the second output's size, request pacing) is pure and
//! always built; the capture itself needs the `libcamera` cargo feature (the `libcamera` crate,
//! libcamera-rs: it compiles a C++ shim and runs bindgen against libcamera >= 0.4).
//!
//! ```text
//!  libcamera thread: requestCompleted ─▶ completed queue (mutex) + eventfd write   (nothing else)
//!  poll loop: eventfd ─▶ newest request wins (older ones re-queued at once, counted)
//!      │ main stream (VideoRecording) ─┬─ mmap (read-only) ─ one copy (RGB: to I420) ─▶ shared frame ─▶ encoder, taps
//!      │                               └─ DMABUF fd ─▶ V4L2 M2M encoder (CM4; `v4l2` feature)
//!      │ second stream (Viewfinder) ─ mmap ─ one copy ─▶ the taps that encode at its size
//!      └─ request re-queued at once (M2M: once the encoder lets go of its buffer)
//! ```
//!
//! Invariants: libcamera's callback thread touches only the completed queue and the eventfd; the
//! loop never waits for libcamera (queueing a request does not block). Newest frame wins. A
//! camera that stops completing requests stalls its stream, and the loop rebuilds it with
//! backoff (sessions stay); a disconnected camera is an `Err` at once.

pub mod convert;
pub mod settings;

#[cfg(feature = "libcamera")]
mod buffers;
#[cfg(feature = "libcamera")]
mod capture;
#[cfg(feature = "libcamera")]
mod configure;
#[cfg(feature = "libcamera")]
mod list;

#[cfg(feature = "libcamera")]
pub use capture::build;
#[cfg(feature = "libcamera")]
pub use list::list_devices;
