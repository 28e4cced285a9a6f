//! uavstream: a low-latency RTSP/RTP camera streaming daemon for embedded Linux.
//!
//! The library holds two tiers:
//! - **Sans-IO protocol cores** (`rtsp`, `rtp`, `http`, `media`, `abr`, `cmdline`, `limits`, `wbuf`): pure code
//!   that takes bytes and `now` and returns bytes/events, with fixed-capacity state. They build
//!   with `--no-default-features` as `#![no_std]` without `alloc`.
//! - **I/O modules** behind the `std` feature (`config`, `event_loop`, `hub`, `source`,
//!   `pipeline`, `encode`):
//!   the poll loop that owns every fd and the clock, and the pipeline around it.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::print_stdout, clippy::print_stderr))]

pub mod abr;
pub mod cmdline;
pub mod http;
pub mod limits;
pub mod media;
pub mod raw;
pub mod rtp;
pub mod rtsp;
pub mod time;
pub mod wbuf;

#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod encode;
#[cfg(feature = "std")]
pub mod event_loop;
#[cfg(feature = "std")]
pub mod hub;
#[cfg(feature = "std")]
pub mod pipeline;
#[cfg(feature = "std")]
pub mod record;
#[cfg(feature = "std")]
pub mod source;
#[cfg(feature = "std")]
pub mod sys;
#[cfg(feature = "v4l2")]
pub mod v4l2;
