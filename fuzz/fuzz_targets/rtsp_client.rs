//! What an upstream RTSP server sends the publishing client. See
//! `uavstream_fuzz::harness::rtsp_client`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtsp_client(data));
