//! Fuzz targets for uavstream's parsers of untrusted input. The bodies live in [`harness`] so
//! that `tests/fuzz_regressions.rs` in the main crate replays saved crashes through them.
pub mod harness;
