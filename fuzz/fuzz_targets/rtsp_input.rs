//! RTSP requests and `$` interleaved frames, pipelined; write_to round trip; Transport; URI. See `uavstream_fuzz::harness::rtsp_input`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtsp_input(data));
