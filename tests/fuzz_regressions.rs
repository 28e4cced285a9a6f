//! Replays every input kept in `fuzz/regressions/<target>/` (crashes found by `scripts/fuzz`) and
//! every seed in `fuzz/seeds/<target>/` through the fuzz targets' own code
//! (`fuzz/src/harness.rs`), so a fixed crash stays fixed in plain `cargo test`.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Reproducers of bugs not fixed yet: skipped by `kept_crashes_stay_fixed`, replayed by the
/// `#[ignore]`d `open_*` tests below. Remove an entry (and its test) with the fix.
const OPEN: &[(&str, &str)] = &[
    ("base64", "crash-d4c2a1f7240e5614eebf4b12da6757c2f4fc421e"),
    ("h264", "crash-d86475e512de8d959693f445b6f9389c39b133ea"),
    ("h264", "sps-scaling-list-delta-overflow"),
    ("rtsp_input", "crash-da3800ffb89a9036e4df8a1e879d84125d4a4a6d"),
    ("rtsp_session", "cseq-longer-than-response-buffer"),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> fn(&[u8]) {
    harness::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, f)| f)
        .unwrap_or_else(|| panic!("fuzz/*/{name}: no such fuzz target"))
}

/// Runs every input file under `dir/<target>/` (not READMEs or scripts) through its target;
/// returns how many ran, after failing with the list of every file that panicked.
fn replay(dir: &Path, skip: &[(&str, &str)]) -> usize {
    let Ok(targets) = fs::read_dir(dir) else { return 0 };
    let mut ran = 0;
    let mut failed = Vec::new();
    for t in targets {
        let t = t.unwrap().path();
        if !t.is_dir() {
            continue;
        }
        let name = t.file_name().unwrap().to_str().unwrap().to_owned();
        let run = target(&name);
        let mut files: Vec<PathBuf> = fs::read_dir(&t).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let file = f.file_name().unwrap().to_str().unwrap();
            if file.starts_with("README") || file.ends_with(".py") || skip.contains(&(name.as_str(), file)) {
                continue;
            }
            let data = fs::read(&f).unwrap();
            if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(f.display().to_string());
            }
            ran += 1;
        }
    }
    assert!(failed.is_empty(), "inputs that fail their fuzz target: {failed:#?}");
    ran
}

#[test]
fn kept_crashes_stay_fixed() {
    let n = replay(&fuzz_dir().join("regressions"), OPEN);
    eprintln!("{n} kept crash inputs replayed");
}

#[test]
fn seeds_pass_their_targets() {
    let n = replay(&fuzz_dir().join("seeds"), &[]);
    assert!(n >= harness::TARGETS.len(), "only {n} seeds found");
}

#[test]
fn every_target_has_a_fuzz_binary_and_seeds() {
    for (name, _) in harness::TARGETS {
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "{name}");
        assert!(fuzz_dir().join("seeds").join(name).is_dir(), "{name}");
    }
}

fn replay_open(target_name: &str, file: &str) {
    assert!(OPEN.contains(&(target_name, file)));
    let data = fs::read(fuzz_dir().join("regressions").join(target_name).join(file)).unwrap();
    target(target_name)(&data);
}

/// Open: `AuSplitter::finish` on a stream that ends right after a slice's NAL header byte
/// (state `FirstMb`) calls `nal_begins` after taking `au_start`, which resets the last unit's
/// `idr`/`has_sps` flags: SPS + P slice + 1-byte P slice gives `has_sps: false`.
#[test]
#[ignore = "open bug in media::h264::AuSplitter::finish"]
fn open_h264_splitter_finish_loses_last_unit_flags() {
    replay_open("h264", "crash-d86475e512de8d959693f445b6f9389c39b133ea");
}

/// Open: `Sps::parse` overflows `i32` in `last + delta_scale + 256` (scaling lists) when an
/// SPS carries a huge `delta_scale` (valid range -128..=127): a panic on untrusted input in
/// builds with overflow checks. Found through the SDP writer (base64 target), pinned as a bare
/// SPS (`67 64 00 1f ad 80 00 00 03 00 ff ff ff fe`) for the h264 target.
#[test]
#[ignore = "open bug in media::h264::Sps::parse (scaling list overflow)"]
fn open_sps_scaling_list_delta_overflows() {
    replay_open("h264", "sps-scaling-list-delta-overflow");
    replay_open("base64", "crash-d4c2a1f7240e5614eebf4b12da6757c2f4fc421e");
}

/// Open: a request line ending in `\r\r\n` is accepted when the whole head is in the buffer
/// (the head splitter strips one `\r`, `parse_request_line` another) but answered 400 when the
/// head arrives in pieces: the early first-line check in `parse_request` strips only one `\r`, so
/// `RTSP/1.0\r` is a bad version. Minimal form: `SETUP rtsp://h/live RTSP/1.0\r\r\nCSeq: 1\r\n\r\n`
/// cut anywhere after the first `\n`.
#[test]
#[ignore = "open bug in rtsp::parse::parse_request (split-point inconsistency)"]
fn open_rtsp_input_cr_cr_lf_request_line_depends_on_segmentation() {
    replay_open("rtsp_input", "crash-da3800ffb89a9036e4df8a1e879d84125d4a4a6d");
}

/// Open: a request with a CSeq of ~4 KiB (the request limit is 8 KiB) gets a zero-length
/// response: the answer does not fit `MAX_RESPONSE_BYTES`, nor does the 500 that echoes the
/// same CSeq, so `handle_request` returns `len: 0` and the client is never answered.
#[test]
#[ignore = "open bug in rtsp::session::Server::handle_request"]
fn open_rtsp_session_long_cseq_gets_no_response() {
    replay_open("rtsp_session", "cseq-longer-than-response-buffer");
}
