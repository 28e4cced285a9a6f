//! RTCP feedback (NACK/PLI/FIR) parse and round trips, and the retransmission core driven by the
//! input. See `uavstream_fuzz::harness::rtcp_feedback`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtcp_feedback(data));
