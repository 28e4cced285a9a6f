//! The recording directory's file-system side, shared by the recorder and the snapshotter:
//! numbered files listed in recording order, retention applied to them, the `latest_*` link
//! switched atomically, free space, and the clocks that name new files.
//!
//! Invariants: only files whose names [`naming::parse_file_name`] accepts for the extension
//! are ever listed or deleted (a user's other files in the directory are left alone); the link
//! is replaced by `rename(2)` of a fresh symlink, so a reader opening it at any moment gets the
//! old target or the new one, never a missing or partial link.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::Duration;

use super::naming::{self, Clocks, SegmentName};
use super::retention::{self, RetentionPolicy, SegmentFile};

/// The first 8 hex digits of this boot's id (see [`naming`]).
pub fn boot() -> [u8; 8] {
    naming::boot_prefix(&fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default())
}

/// The clocks now, for naming a new file.
pub fn read_clocks(boot: [u8; 8]) -> Clocks {
    let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().clamp(0, 999_999_999) as u32))
        .unwrap_or_default();
    let unix_secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let wall_trusted = naming::wall_clock_trusted(unix_secs, crate::sys::clock_synchronised());
    Clocks { boot, since_boot, unix_secs, wall_trusted }
}

/// Makes the directory's entries (a created, renamed or deleted file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Points `dir/link` at `target` (a name in `dir`) atomically: a new symlink under the
/// temporary name `tmp`, renamed over the old one; the directory is synced when `durable`.
pub fn switch_link(dir: &Path, link: &str, tmp: &str, target: &str, durable: bool) -> io::Result<()> {
    let tmp = dir.join(tmp);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(link))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Bytes available to unprivileged writers on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// The numbered files of `dir` with extension `ext` (name, parsed), sorted by sequence.
pub fn list(dir: &Path, ext: &str) -> io::Result<Vec<(String, SegmentName)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if let Some(parsed) = naming::parse_file_name(&name, ext) {
            out.push((name, parsed));
        }
    }
    out.sort_by_key(|(_, p)| p.sequence);
    Ok(out)
}

/// The sequence number the next file of `dir` with `ext` gets: one past the highest there.
pub fn next_sequence(dir: &Path, ext: &str) -> io::Result<u64> {
    Ok(list(dir, ext)?.last().map_or(0, |(_, p)| p.sequence.saturating_add(1)))
}

/// What [`apply_retention`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub deleted: u64,
    /// Bytes of the numbered files left.
    pub kept_bytes: u64,
}

/// Deletes what [`retention::plan`] says of the numbered files with `ext` (`open`: the
/// sequence being written, never deleted); `log_target` names the module in the log lines.
pub fn apply_retention(
    dir: &Path,
    ext: &str,
    policy: &RetentionPolicy,
    open: Option<u64>,
    boot: [u8; 8],
    log_target: &str,
) -> Applied {
    if *policy == RetentionPolicy::default() {
        return Applied::default();
    }
    let Ok(names) = list(dir, ext) else { return Applied::default() };
    let clocks = read_clocks(boot);
    let files: Vec<SegmentFile> = names
        .iter()
        .map(|(name, parsed)| SegmentFile {
            sequence: parsed.sequence,
            bytes: fs::symlink_metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0),
            age: clocks.age_of(&parsed.stamp),
        })
        .collect();
    let plan = retention::plan(&files, open, free_bytes(dir), policy);
    let mut applied = Applied { deleted: 0, kept_bytes: files.iter().map(|f| f.bytes).sum() };
    for ((name, _), file) in names.iter().zip(&files).take(plan.delete) {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {
                log::info!(target: log_target, "retention: deleted {name}");
                applied.deleted += 1;
                applied.kept_bytes -= file.bytes;
            }
            Err(e) => log::warn!(target: log_target, "retention: cannot delete {name}: {e}"),
        }
    }
    applied
}
