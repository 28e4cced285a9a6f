//! Which segments to delete: by total size (`record-max-size`), by age (`record-max-age`) and to
//! keep a free-space floor on the file system (`record-min-free`). Pure: the writer lists the
//! directory, asks statvfs, and deletes what [`plan`] says, oldest first.
//!
//! - Oldest means lowest sequence number (recording order, see [`super::naming`]).
//! - The segment being written and the newest closed one (the `latest_video.mp4` target) are
//!   never deleted.
//! - Age comes from the file name and is not always known (a monotonic stamp of an earlier
//!   boot, or a wall stamp while the wall clock is untrusted). Since sequence order is
//!   recording order, a file is over age when any later file is: so a wrong clock never
//!   deletes recent files, and old files of an earlier boot still go.

use std::time::Duration;

/// Retention settings; `None` disables a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    pub max_total_bytes: Option<u64>,
    pub max_age: Option<Duration>,
    pub min_free_bytes: Option<u64>,
}

/// One segment file of the recording directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFile {
    pub sequence: u64,
    pub bytes: u64,
    pub age: Option<Duration>,
}

/// The decision for one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Delete this many of the oldest files (of the list sorted by sequence).
    pub delete: usize,
    /// Even after deleting every file allowed, free space stays under the floor.
    pub short_of_space: bool,
}

/// `files` sorted by sequence, oldest first; `open`: the sequence being written, if any;
/// `free_bytes`: what statvfs says is available to us now.
pub fn plan(files: &[SegmentFile], open: Option<u64>, free_bytes: Option<u64>, policy: &RetentionPolicy) -> Plan {
    // Files that may go: all but the open segment and the newest closed one.
    let newest_closed = files.iter().rev().find(|f| Some(f.sequence) != open).map(|f| f.sequence);
    let deletable = files.iter().take_while(|f| Some(f.sequence) != open && Some(f.sequence) != newest_closed).count();

    let mut delete = 0;
    if let Some(max_age) = policy.max_age {
        if let Some(i) = files.iter().rposition(|f| f.age.is_some_and(|a| a > max_age)) {
            delete = (i + 1).min(deletable);
        }
    }
    if let Some(max_total) = policy.max_total_bytes {
        let mut total: u64 = files[delete..].iter().map(|f| f.bytes).sum();
        while total > max_total && delete < deletable {
            total -= files[delete].bytes;
            delete += 1;
        }
    }
    let mut short_of_space = false;
    if let (Some(floor), Some(free)) = (policy.min_free_bytes, free_bytes) {
        let mut free = free.saturating_add(files[..delete].iter().map(|f| f.bytes).sum());
        while free < floor && delete < deletable {
            free = free.saturating_add(files[delete].bytes);
            delete += 1;
        }
        short_of_space = free < floor;
    }
    Plan { delete, short_of_space }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(spec: &[(u64, Option<u64>)]) -> Vec<SegmentFile> {
        spec.iter()
            .enumerate()
            .map(|(i, &(bytes, age))| SegmentFile { sequence: i as u64 + 10, bytes, age: age.map(Duration::from_secs) })
            .collect()
    }

    const MB: u64 = 1_000_000;

    #[test]
    fn nothing_to_do_without_rules() {
        let f = files(&[(MB, Some(1000)), (MB, Some(10))]);
        assert_eq!(plan(&f, None, Some(0), &RetentionPolicy::default()), Plan { delete: 0, short_of_space: false });
        assert_eq!(plan(&[], None, Some(0), &RetentionPolicy::default()).delete, 0);
    }

    #[test]
    fn total_size_deletes_oldest_first_and_spares_open_and_latest() {
        let f = files(&[(5 * MB, None), (5 * MB, None), (5 * MB, None), (5 * MB, None)]);
        let p = RetentionPolicy { max_total_bytes: Some(12 * MB), ..Default::default() };
        assert_eq!(plan(&f, Some(13), None, &p).delete, 2);
        let p = RetentionPolicy { max_total_bytes: Some(0), ..Default::default() };
        // 13 is open, 12 is latest: only 10 and 11 may go.
        assert_eq!(plan(&f, Some(13), None, &p).delete, 2);
        // Nothing open: 13 is latest.
        assert_eq!(plan(&f, None, None, &p).delete, 3);
    }

    #[test]
    fn age_counts_files_of_unknown_age_before_an_old_one() {
        // Earlier boot (unknown age), then this boot's files of known age.
        let f = files(&[(MB, None), (MB, None), (MB, Some(4000)), (MB, None), (MB, Some(100)), (MB, Some(10))]);
        let p = RetentionPolicy { max_age: Some(Duration::from_secs(3600)), ..Default::default() };
        assert_eq!(plan(&f, Some(15), None, &p).delete, 3);
        // A clock that makes recent files look old cannot reach the newest closed or open file.
        let f = files(&[(MB, Some(9999)), (MB, Some(9999)), (MB, Some(9999))]);
        assert_eq!(plan(&f, Some(12), None, &p).delete, 1);
    }

    #[test]
    fn free_space_floor_deletes_until_it_holds_or_says_short() {
        let f = files(&[(10 * MB, None), (10 * MB, None), (10 * MB, None), (10 * MB, None)]);
        let p = RetentionPolicy { min_free_bytes: Some(25 * MB), ..Default::default() };
        assert_eq!(plan(&f, Some(13), Some(30 * MB), &p), Plan { delete: 0, short_of_space: false });
        assert_eq!(plan(&f, Some(13), Some(10 * MB), &p), Plan { delete: 2, short_of_space: false });
        assert_eq!(plan(&f, Some(13), Some(0), &p), Plan { delete: 2, short_of_space: true });
        // Unknown free space: the floor rule does nothing.
        assert_eq!(plan(&f, Some(13), None, &p), Plan { delete: 0, short_of_space: false });
    }

    #[test]
    fn rules_combine() {
        let f = files(&[(MB, Some(5000)), (8 * MB, Some(3000)), (8 * MB, Some(20)), (MB, Some(10)), (MB, Some(0))]);
        let p = RetentionPolicy {
            max_age: Some(Duration::from_secs(3600)),
            max_total_bytes: Some(10 * MB),
            min_free_bytes: Some(MB),
        };
        // Age removes 1, size one more (8+8+1+1 > 10, 8+1+1 is not), free space already fine.
        assert_eq!(plan(&f, Some(14), Some(MB), &p), Plan { delete: 2, short_of_space: false });
    }
}
