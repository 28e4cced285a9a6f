//! put_base64/decode_base64 round trip; SDP sprop-parameter-sets. See `uavstream_fuzz::harness::base64`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::base64(data));
