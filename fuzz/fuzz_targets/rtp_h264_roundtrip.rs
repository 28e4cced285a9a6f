//! depacketize(packetize(x)) == x. See `uavstream_fuzz::harness::rtp_h264_roundtrip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtp_h264_roundtrip(data));
