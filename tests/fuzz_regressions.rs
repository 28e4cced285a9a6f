//! Replays every input kept in `fuzz/regressions/<target>/` (crashes found by `scripts/fuzz`) and
//! every seed in `fuzz/seeds/<target>/` through the fuzz targets' own code
//! (`fuzz/src/harness/mod.rs`), so a fixed crash stays fixed in plain `cargo test`.

#[path = "../fuzz/src/harness/mod.rs"]
mod harness;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Reproducers of bugs not fixed yet: skipped by `kept_crashes_stay_fixed`, replayed by the
/// `#[ignore]`d `open_*` tests below. Remove an entry (and its test) with the fix.
const OPEN: &[(&str, &str)] = &[];

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
