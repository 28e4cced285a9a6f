//! fMP4 reader on any bytes, write → parse round trips. See `uavstream_fuzz::harness::fmp4_roundtrip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::fmp4_roundtrip(data));
