//! Kernel command-line tokenizer. See `uavstream_fuzz::harness::cmdline`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uavstream_fuzz::harness::cmdline(data));
