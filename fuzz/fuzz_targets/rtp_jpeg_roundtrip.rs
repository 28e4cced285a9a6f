//! JPEG parsing and the RTP/JPEG round trip. See `uavstream_fuzz::harness::rtp_jpeg_roundtrip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtp_jpeg_roundtrip(data));
