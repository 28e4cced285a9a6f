//! Server::handle_request/handle_rtcp/close_session_of/poll_expired sequences. See `uavstream_fuzz::harness::rtsp_session`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtsp_session(data));
