//! parse_compound on raw bytes; SR/SDES/BYE and RR round trips. See `uavstream_fuzz::harness::rtcp`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::rtcp(data));
