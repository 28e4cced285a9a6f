//! Snapshots: a JPEG of a camera every `snapshot-interval`, written by a thread, with
//! `latest_image.jpg` switched atomically and the recorder's retention rules.
//!
//! ```text
//!  camera ──tap (thinned to one frame per interval)──▶ JPEG encoder ──▶ loop ──▶ Snapshotter::push
//!  MJPEG camera's own frames ──▶ loop: Snapshotter::due? ──▶ Snapshotter::push         │ (copy, try_send)
//!                                                                    writer thread ◀──┘
//! ```
//!
//! Invariants:
//! - The loop never waits: [`Snapshotter::push`] copies the JPEG into a recycled buffer and
//!   hands it over with `try_send` on a one-deep queue; when the writer is still busy with the
//!   previous one (a slow card), the new snapshot is dropped and counted.
//! - A reader never sees a partial JPEG: each file is written under a temporary name, synced,
//!   renamed to `NNNNNNNNNN_<stamp>.jpg` ([`naming`]), and only then is `latest_image.jpg` (a
//!   symlink) replaced by renaming a fresh link over it. Retention never deletes the newest
//!   snapshot, so the link's target exists.
//! - Disk full (ENOSPC, or free space under `snapshot-min-free` that retention cannot
//!   restore): the snapshot is skipped with one log line, and writing resumes by itself once
//!   there is room, again with one log line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::files;
use super::naming::{self, SNAPSHOT_EXT};
use super::retention::RetentionPolicy;
use crate::encode::worker::Thinning;

/// The link to the newest snapshot, in the snapshot directory.
pub const LATEST: &str = "latest_image.jpg";
const LATEST_TMP: &str = ".latest_image.jpg.tmp";
const FILE_TMP: &str = ".snapshot.jpg.tmp";
/// Retention lists the directory at most this often for `snapshot-max-age` (a week of 1 s
/// snapshots is 600 000 files); the size limit and the free-space floor are checked before
/// every snapshot, and the directory listed again when one would be passed.
const RETENTION_EVERY: Duration = Duration::from_secs(10);

/// Default of `snapshot-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default of `snapshot-min-free` (bytes).
pub const DEFAULT_MIN_FREE: u64 = 64 * 1024 * 1024;

/// The `snapshot-*` keys of a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    pub dir: PathBuf,
    pub interval: Duration,
    pub quality: u8,
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    pub min_free: Option<u64>,
}

impl SnapshotSettings {
    pub fn new(dir: impl Into<PathBuf>) -> SnapshotSettings {
        SnapshotSettings {
            dir: dir.into(),
            interval: DEFAULT_INTERVAL,
            quality: 85,
            max_size: None,
            max_age: None,
            min_free: Some(DEFAULT_MIN_FREE),
        }
    }

    fn retention(&self) -> RetentionPolicy {
        RetentionPolicy { max_total_bytes: self.max_size, max_age: self.max_age, min_free_bytes: self.min_free }
    }
}

/// What `/status` and `/metrics` show of a camera's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// Snapshots written (renamed into place).
    pub written: u64,
    pub bytes: u64,
    /// Snapshots dropped because the writer was still busy (slow disk).
    pub dropped: u64,
    /// Snapshots skipped because the disk was full or a write failed.
    pub skipped: u64,
    /// Files deleted by retention.
    pub deleted: u64,
    /// Whether writing is paused by a full disk or a failing write.
    pub paused: bool,
    /// The newest snapshot's file name.
    pub latest: Option<String>,
}

struct Job {
    jpeg: Vec<u8>,
}

/// The snapshot writer of one camera: owned by the loop, its thread does the file work.
pub struct Snapshotter {
    tx: Option<SyncSender<Job>>,
    /// Buffers coming back from the thread, reused for the next snapshot.
    recycled: Receiver<Vec<u8>>,
    status: Arc<Mutex<SnapshotStatus>>,
    schedule: Thinning,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter").finish_non_exhaustive()
    }
}

impl Snapshotter {
    /// Creates the directory if needed and starts the writer thread.
    pub fn start(settings: SnapshotSettings) -> io::Result<Snapshotter> {
        fs::create_dir_all(&settings.dir)?;
        let next = files::next_sequence(&settings.dir, SNAPSHOT_EXT)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        let (back_tx, recycled) = mpsc::channel();
        let status = Arc::new(Mutex::new(SnapshotStatus::default()));
        let schedule = Thinning::new(settings.interval);
        let mut writer = Writer {
            boot: files::boot(),
            next,
            settings,
            status: Arc::clone(&status),
            last_retention: None,
            kept_bytes: 0,
        };
        let thread = std::thread::Builder::new().name("snapshots".into()).spawn(move || {
            for job in rx {
                writer.write(&job.jpeg);
                let _ = back_tx.send(job.jpeg);
            }
        })?;
        Ok(Snapshotter { tx: Some(tx), recycled, status, schedule, thread: Some(thread) })
    }

    /// Whether a frame captured at `capture` is due (for frames not thinned by a tap: an MJPEG
    /// camera's own JPEGs).
    pub fn due(&mut self, capture: Instant) -> bool {
        self.schedule.due(capture)
    }

    /// Hands a JPEG to the writer without waiting; dropped and counted when it is busy.
    pub fn push(&mut self, jpeg: &[u8]) {
        let Some(tx) = &self.tx else { return };
        let mut buf = self.recycled.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(jpeg);
        match tx.try_send(Job { jpeg: buf }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if let Ok(mut s) = self.status.lock() {
                    s.dropped += 1;
                }
            }
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    pub fn status(&self) -> SnapshotStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the snapshot it is writing.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    settings: SnapshotSettings,
    boot: [u8; 8],
    next: u64,
    status: Arc<Mutex<SnapshotStatus>>,
    last_retention: Option<Instant>,
    /// Bytes of snapshots in the directory as of the last listing plus those written since:
    /// `snapshot-max-size` is applied as soon as the next one would pass it.
    kept_bytes: u64,
}

impl Writer {
    fn with_status(&self, f: impl FnOnce(&mut SnapshotStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn write(&mut self, jpeg: &[u8]) {
        let dir = self.settings.dir.clone();
        let policy = self.settings.retention();
        let floor = self.settings.min_free;
        let below_floor = |dir: &Path| floor.is_some_and(|f| files::free_bytes(dir).is_some_and(|free| free < f));
        let now = Instant::now();
        let over_size =
            self.settings.max_size.is_some_and(|max| self.kept_bytes.saturating_add(jpeg.len() as u64) > max);
        if over_size
            || below_floor(&dir)
            || self.last_retention.is_none_or(|t| now.saturating_duration_since(t) >= RETENTION_EVERY)
        {
            self.last_retention = Some(now);
            let applied = files::apply_retention(&dir, SNAPSHOT_EXT, &policy, None, self.boot, "snapshot");
            self.kept_bytes = applied.kept_bytes;
            self.with_status(|s| s.deleted += applied.deleted);
        }
        if below_floor(&dir) {
            self.pause(&format!(
                "free space under snapshot-min-free ({} bytes) and nothing left to delete",
                floor.unwrap_or(0)
            ));
            return;
        }
        let name = naming::file_name(self.next, &files::read_clocks(self.boot).stamp(), SNAPSHOT_EXT);
        match write_snapshot(&dir, &name, jpeg) {
            Ok(()) => {
                self.next += 1;
                self.kept_bytes += jpeg.len() as u64;
                let resumed = self.status.lock().map(|s| s.paused).unwrap_or(false);
                if resumed {
                    log::info!(target: "snapshot", "{}: snapshots resumed", dir.display());
                }
                self.with_status(|s| {
                    s.written += 1;
                    s.bytes += jpeg.len() as u64;
                    s.paused = false;
                    s.latest = Some(name);
                });
            }
            Err(e) => {
                let _ = fs::remove_file(dir.join(FILE_TMP));
                let why = if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    "the disk is full".to_owned()
                } else {
                    format!("cannot write: {e}")
                };
                self.pause(&why);
            }
        }
    }

    /// Skips this snapshot; says so once per pause.
    fn pause(&mut self, why: &str) {
        let was = self.status.lock().map(|s| s.paused).unwrap_or(false);
        if !was {
            log::warn!(
                target: "snapshot",
                "{}: snapshots paused: {why}; streaming is not affected, they resume when there is room",
                self.settings.dir.display()
            );
        }
        self.with_status(|s| {
            s.paused = true;
            s.skipped += 1;
        });
    }
}

/// Writes `jpeg` as `dir/name` (temporary file, data sync, rename, directory sync) and points
/// `latest_image.jpg` at it.
fn write_snapshot(dir: &Path, name: &str, jpeg: &[u8]) -> io::Result<()> {
    let tmp = dir.join(FILE_TMP);
    let mut f: File = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
    f.write_all(jpeg)?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    files::switch_link(dir, LATEST, LATEST_TMP, name, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_takes_one_frame_per_interval_and_absorbs_jitter() {
        let t0 = Instant::now();
        let mut s = Thinning::new(Duration::from_secs(1));
        let frame = |i: u64| t0 + Duration::from_millis(i * 1000 / 30);
        let taken: Vec<u64> = (0..30 * 10).filter(|&i| s.due(frame(i))).collect();
        assert_eq!(taken.len(), 10, "{taken:?}");
        for w in taken.windows(2) {
            assert!((29..=31).contains(&(w[1] - w[0])), "{taken:?}");
        }
        // A camera that stalls for 5 s starts over at its next frame.
        assert!(s.due(frame(300) + Duration::from_secs(5)));
        assert!(!s.due(frame(301) + Duration::from_secs(5)));
    }

    #[test]
    fn writes_files_in_order_and_points_latest_at_the_newest() {
        let dir = std::env::temp_dir().join(format!("uavstream-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut settings = SnapshotSettings::new(&dir);
        settings.min_free = None;
        settings.max_size = Some(25);
        {
            let mut s = Snapshotter::start(settings.clone()).unwrap();
            for i in 0..4u8 {
                s.push(&[0xff, 0xd8, i, i, i, i, i, i, 0xff, 0xd9]);
                // One-deep queue: wait for the writer so none is dropped.
                while s.status().written < u64::from(i) + 1 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let st = s.status();
            assert_eq!((st.written, st.dropped, st.paused), (4, 0, false));
        }
        let names = files::list(&dir, SNAPSHOT_EXT).unwrap();
        let seqs: Vec<u64> = names.iter().map(|(_, p)| p.sequence).collect();
        // 10 bytes each, at most 25 kept (checked before each write): the last ones remain.
        assert!(seqs.ends_with(&[2, 3]), "{seqs:?}");
        let latest = fs::read_link(dir.join(LATEST)).unwrap();
        assert_eq!(latest, PathBuf::from(&names.last().unwrap().0));
        assert_eq!(fs::read(dir.join(LATEST)).unwrap()[2], 3);
        // A restart continues the numbering.
        let s = Snapshotter::start(settings).unwrap();
        drop(s);
        assert_eq!(files::next_sequence(&dir, SNAPSHOT_EXT).unwrap(), 4);
        let _ = fs::remove_dir_all(&dir);
    }
}
