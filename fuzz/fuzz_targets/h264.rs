//! annex_b, Sps::parse, AuSplitter in any chunking. See `uavstream_fuzz::harness::h264`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::h264(data));
