//! HTTP request heads of the MJPEG listener. See `uavstream_fuzz::harness::http_request`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::http_request(data));
