//! The recorder: a writer thread behind a bounded queue, so the loop never waits for a disk.
//!
//! The loop calls [`Recorder::push`] with every access unit of the stream (one memcpy into a
//! recycled buffer, a `try_send`); it never blocks. When the queue is full (the disk is slower
//! than the stream, a long fsync), the unit is dropped and so is every unit up to the next
//! IDR, with a rate-limited log line; streaming is untouched.
//!
//! The thread runs the [`Segmenter`] and does its actions on files:
//! - opens `NNNNNNNNNN_<stamp>.mp4` ([`naming`]) after applying retention ([`retention`]);
//! - appends the init segment and each fragment with one `write`, then, by `record-fsync`:
//!   `fragment` (default) fdatasyncs after each fragment, `segment` only at close, `off` never;
//!   the directory is fsynced after a file is created and after `latest_video.mp4` changes
//!   (unless `off`);
//! - at close, fsyncs (unless `off`) and switches `latest_video.mp4`: a relative symlink
//!   created as `.latest_video.mp4.tmp` and renamed over the old one, so readers always see a
//!   closed, complete segment;
//! - on ENOSPC (or free space under `record-min-free` that retention cannot restore), cuts
//!   the file back to its last complete fragment, closes it, and pauses with a log line; it
//!   checks free space every second and resumes at the next IDR once there is room.
//!
//! At start the newest segment in the directory (the one being written when the daemon
//! crashed or the power went) is cut back to its last complete fragment, so it plays.
//!
//! Fault injection for tests: `UAVSTREAM_RECORD_FSYNC_DELAY_MS=N` sleeps N ms before each
//! fsync (a slow SD card).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::files::{self, free_bytes, read_clocks, sync_dir};
use super::naming;
use super::repair::{repair, Repair};
use super::retention::RetentionPolicy;
use super::segmenter::{Action, Segmenter, SegmenterConfig};
use crate::limits::RECORD_QUEUE_UNITS;

/// Name of the link to the newest closed segment, in the recording directory.
pub const LATEST: &str = "latest_video.mp4";
const LATEST_TMP: &str = ".latest_video.mp4.tmp";
/// How often a paused recorder looks at free space again.
const PAUSED_CHECK: Duration = Duration::from_secs(1);
/// How often a recorder paused by a write error other than ENOSPC tries again.
const PAUSED_ERROR_RETRY: Duration = Duration::from_secs(10);
/// Free space needed above `record-min-free` to resume after a pause: twice the largest write
/// so far (a fragment, or an init segment), and at least this.
const RESUME_MARGIN_MIN: u64 = 64 * 1024;
/// How long dropping the [`Recorder`] waits for the thread to close its segment before it
/// leaves it behind (a hung SD card must not hang the daemon's exit).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// At most one "dropping to the next IDR" warning per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When the writer makes written data durable (`record-fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fdatasync after every fragment: a power cut costs at most the fragment being written.
    #[default]
    Fragment,
    /// fsync when a segment is closed: a power cut can cost the whole open segment.
    Segment,
    /// Never: the page cache decides (like MediaMTX). Closed segments can be lost too.
    Off,
}

impl FsyncPolicy {
    pub fn parse(s: &str) -> Option<FsyncPolicy> {
        match s {
            "fragment" => Some(FsyncPolicy::Fragment),
            "segment" => Some(FsyncPolicy::Segment),
            "off" => Some(FsyncPolicy::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Fragment => "fragment",
            FsyncPolicy::Segment => "segment",
            FsyncPolicy::Off => "off",
        }
    }
}

/// Recorder configuration. Keys (one per field, for the config table):
///
/// | key               | default    | meaning                                                  |
/// |-------------------|------------|----------------------------------------------------------|
/// | `record-dir`      | (off)      | directory of the segments; recording is off without it   |
/// | `record-segment`  | `60` s     | segment length: a new file at the first IDR after it     |
/// | `record-fragment` | `1` s      | longest fragment (also ends at each IDR): the most a power cut loses |
/// | `record-fsync`    | `fragment` | `fragment` \| `segment` \| `off` (see [`FsyncPolicy`])   |
/// | `record-max-size` | `0` (off)  | bytes of segments kept; oldest deleted first             |
/// | `record-max-age`  | `0` (off)  | seconds a segment is kept                                |
/// | `record-min-free` | `256 MiB`  | free space kept on the file system; oldest deleted first, pause when none left |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderSettings {
    pub dir: PathBuf,
    pub segment: Duration,
    pub fragment: Duration,
    pub fsync: FsyncPolicy,
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    pub min_free: Option<u64>,
}

/// Default of `record-segment`.
pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(60);
/// Default of `record-fragment`.
pub const DEFAULT_FRAGMENT: Duration = Duration::from_secs(1);
/// Default of `record-min-free` (bytes).
pub const DEFAULT_MIN_FREE: u64 = 256 * 1024 * 1024;

impl RecorderSettings {
    /// The defaults, recording into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RecorderSettings {
        RecorderSettings {
            dir: dir.into(),
            segment: DEFAULT_SEGMENT,
            fragment: DEFAULT_FRAGMENT,
            fsync: FsyncPolicy::Fragment,
            max_size: None,
            max_age: None,
            min_free: Some(DEFAULT_MIN_FREE),
        }
    }

    /// The checks the configuration should make, with the key at fault.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.segment < Duration::from_secs(1) {
            return Err("record-segment must be at least 1 s");
        }
        if self.fragment < Duration::from_millis(100) || self.fragment > self.segment {
            return Err("record-fragment must be between 100 ms and record-segment");
        }
        if self.dir.as_os_str().is_empty() {
            return Err("record-dir must name a directory");
        }
        Ok(())
    }

    fn retention(&self) -> RetentionPolicy {
        RetentionPolicy { max_total_bytes: self.max_size, max_age: self.max_age, min_free_bytes: self.min_free }
    }
}

/// What the recorder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecorderState {
    /// Not recording (stopped at run time, or never started).
    #[default]
    Stopped,
    /// Recording, or waiting for the IDR that starts the next segment.
    Recording,
    /// Recording is wanted but paused: no room on the disk (ENOSPC or under `record-min-free`).
    PausedDiskFull,
    /// Recording is wanted but paused after a write error other than ENOSPC; retried every 10 s.
    PausedError,
}

impl RecorderState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecorderState::Stopped => "stopped",
            RecorderState::Recording => "recording",
            RecorderState::PausedDiskFull => "paused (disk full)",
            RecorderState::PausedError => "paused (write error)",
        }
    }
}

/// Counters and state for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderStatus {
    pub state: RecorderState,
    /// Segments closed (complete) since start.
    pub segments: u64,
    pub fragments: u64,
    pub bytes: u64,
    /// Units dropped by a full queue (up to the next IDR each time).
    pub dropped_units: u64,
    /// Units the segmenter skipped (before the first IDR, oversized, no SPS/PPS).
    pub skipped_units: u64,
    /// Segments deleted by retention.
    pub deleted_segments: u64,
    pub fsyncs: u64,
    pub fsync_total_us: u64,
    pub fsync_max_us: u64,
    /// The segment being written.
    pub current: Option<String>,
    pub last_error: Option<String>,
}

struct Shared {
    wanted: AtomicBool,
    dropped: AtomicU64,
    status: Mutex<RecorderStatus>,
}

enum Msg {
    Unit { data: Vec<u8>, capture: Instant, idr: bool },
    Wake,
}

/// The recorder of one stream. Dropping it stops the thread after it closes the segment.
pub struct Recorder {
    tx: Option<SyncSender<Msg>>,
    free: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    dropping: bool,
    drop_logged: Option<Instant>,
    dropped_since_log: u64,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("dropping", &self.dropping).finish()
    }
}

impl Recorder {
    /// Creates the directory if needed, repairs the segment a crash may have left open, and
    /// starts the writer thread. `recording`: start recording at once (else wait for
    /// [`Recorder::set_recording`]).
    pub fn start(settings: RecorderSettings, recording: bool) -> io::Result<Recorder> {
        fs::create_dir_all(&settings.dir)?;
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(recording),
            dropped: AtomicU64::new(0),
            status: Mutex::new(RecorderStatus::default()),
        });
        let (tx, rx) = mpsc::sync_channel(RECORD_QUEUE_UNITS);
        let (free_tx, free) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let mut worker = Worker::new(settings, Arc::clone(&shared), free_tx);
        let thread = std::thread::Builder::new().name("recorder".into()).spawn(move || {
            if let Err(e) = worker.recover() {
                log::warn!(target: "record", "cannot read {}: {e}", worker.settings.dir.display());
            }
            worker.run(rx);
            let _ = done_tx.send(());
        })?;
        Ok(Recorder {
            tx: Some(tx),
            free,
            shared,
            dropping: false,
            drop_logged: None,
            dropped_since_log: 0,
            thread: Some(thread),
            done,
        })
    }

    /// Hands one Annex B access unit to the writer thread. Never blocks; when the queue is full
    /// the unit is dropped, and so is every later unit up to the next IDR.
    pub fn push(&mut self, au: &[u8], capture: Instant, is_idr: bool) {
        if !self.shared.wanted.load(Ordering::Relaxed) {
            self.dropping = false;
            return;
        }
        if self.dropping && !is_idr {
            self.count_drop(capture);
            return;
        }
        let Some(tx) = &self.tx else { return };
        let mut data = self.free.try_recv().unwrap_or_default();
        data.clear();
        data.extend_from_slice(au);
        match tx.try_send(Msg::Unit { data, capture, idr: is_idr }) {
            Ok(()) => {
                if self.dropping {
                    self.dropping = false;
                    log::info!(target: "record", "recorder queue has room again: recording resumes at this IDR");
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropping = true;
                self.count_drop(capture);
            }
        }
    }

    fn count_drop(&mut self, at: Instant) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_since_log += 1;
        if self.drop_logged.is_none_or(|t| at.saturating_duration_since(t) >= DROP_LOG_INTERVAL) {
            log::warn!(
                target: "record",
                "recorder queue full (disk slower than the stream): dropped {} unit(s), recording skips to the next IDR",
                self.dropped_since_log
            );
            self.drop_logged = Some(at);
            self.dropped_since_log = 0;
        }
    }

    /// Starts or stops recording at run time. Stopping closes the open segment.
    pub fn set_recording(&self, on: bool) {
        self.shared.wanted.store(on, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Wake);
        }
    }

    pub fn is_recording_wanted(&self) -> bool {
        self.shared.wanted.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters and state.
    pub fn status(&self) -> RecorderStatus {
        let mut s = self.shared.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.dropped_units = self.shared.dropped.load(Ordering::Relaxed);
        s
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The thread writes what is queued, closes the segment, and ends when the queue is
        // empty and closed. A disk that hangs is left behind after SHUTDOWN_WAIT.
        self.tx = None;
        match self.done.recv_timeout(SHUTDOWN_WAIT) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                log::warn!(target: "record", "recorder thread still writing after {SHUTDOWN_WAIT:?}: left behind");
            }
        }
    }
}

struct OpenFile {
    file: File,
    name: String,
    sequence: u64,
    /// Bytes known complete (init + whole fragments).
    good: u64,
    /// At least one whole fragment is in the file (else it would not play: removed on error).
    has_fragment: bool,
}

struct Worker {
    settings: RecorderSettings,
    shared: Arc<Shared>,
    free: mpsc::Sender<Vec<u8>>,
    segmenter: Segmenter,
    epoch: Instant,
    boot: [u8; 8],
    next_sequence: u64,
    file: Option<OpenFile>,
    state: RecorderState,
    fsync_delay: Duration,
    /// Paused: when free space was last looked at.
    paused_check: Option<Instant>,
    largest_write: u64,
}

fn io_error_text(e: &io::Error) -> String {
    e.to_string()
}

fn is_enospc(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl Worker {
    fn new(settings: RecorderSettings, shared: Arc<Shared>, free: mpsc::Sender<Vec<u8>>) -> Worker {
        let boot = files::boot();
        let fsync_delay = std::env::var("UAVSTREAM_RECORD_FSYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let segmenter = Segmenter::new(SegmenterConfig { segment: settings.segment, fragment: settings.fragment });
        let now = Instant::now();
        Worker {
            settings,
            shared,
            free,
            segmenter,
            epoch: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            boot,
            next_sequence: 0,
            file: None,
            state: RecorderState::Stopped,
            fsync_delay,
            paused_check: None,
            largest_write: 0,
        }
    }

    fn core_time(&self, t: Instant) -> crate::time::Instant {
        crate::time::Instant::from_micros(t.saturating_duration_since(self.epoch).as_micros() as u64)
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            self.apply_wanted(self.shared.wanted.load(Ordering::Relaxed));
            let timeout = match self.segmenter.poll_timeout() {
                Some(t) => match self.epoch.checked_add(Duration::from_micros(t.as_micros())) {
                    Some(due) => due.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
                    None => PAUSED_CHECK,
                },
                None => PAUSED_CHECK,
            };
            match rx.recv_timeout(timeout.min(PAUSED_CHECK)) {
                Ok(Msg::Unit { data, capture, idr }) => {
                    if self.state == RecorderState::Recording {
                        let capture = self.core_time(capture);
                        let now = self.core_time(Instant::now());
                        if self.segmenter.handle_access_unit(&data, capture, idr, now).is_err() {
                            self.with_status(|s| s.skipped_units += 1);
                        }
                        self.drain();
                    } else if self.state != RecorderState::Stopped {
                        self.check_paused(Instant::now());
                    }
                    let _ = self.free.send(data);
                }
                Ok(Msg::Wake) => {}
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    self.segmenter.handle_timeout(self.core_time(now));
                    self.drain();
                    self.check_paused(now);
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.apply_wanted(false);
    }

    fn apply_wanted(&mut self, wanted: bool) {
        match (wanted, self.state) {
            (true, RecorderState::Stopped) => {
                log::info!(target: "record", "recording into {} (segments of {:?}, fragments of at most {:?}, fsync per {:?})",
                    self.settings.dir.display(), self.settings.segment, self.settings.fragment, self.settings.fsync);
                self.set_state(RecorderState::Recording);
            }
            (false, RecorderState::Stopped) | (true, _) => {}
            (false, _) => {
                self.segmenter.handle_stop();
                self.drain();
                self.segmenter.handle_abort();
                log::info!(target: "record", "recording stopped");
                self.set_state(RecorderState::Stopped);
            }
        }
    }

    fn set_state(&mut self, state: RecorderState) {
        self.state = state;
        self.with_status(|s| s.state = state);
    }

    fn with_status(&self, f: impl FnOnce(&mut RecorderStatus)) {
        if let Ok(mut s) = self.shared.status.lock() {
            f(&mut s);
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.segmenter.poll_action() {
            let r = match action {
                Action::OpenSegment { .. } => {
                    Self::open_segment(&self.settings, &mut self.file, &mut self.next_sequence, self.boot, &self.shared)
                }
                Action::Write(bytes) => {
                    self.largest_write = self.largest_write.max(bytes.len() as u64);
                    Self::write(&mut self.file, bytes, &self.shared)
                }
                Action::FragmentDone => {
                    Self::fragment_done(&mut self.file, self.settings.fsync, self.fsync_delay, &self.shared)
                }
                Action::CloseSegment { .. } => {
                    Self::close_segment(&self.settings, &mut self.file, self.fsync_delay, &self.shared)
                }
            };
            if let Err(e) = r {
                self.fail(e);
                return;
            }
        }
        if self.file.is_some() && self.below_floor() {
            // Retention could not keep the free-space floor: stop before the disk is full.
            self.segmenter.handle_stop();
            self.drain_after_stop();
            self.pause(RecorderState::PausedDiskFull, "free space under record-min-free and nothing left to delete");
        }
    }

    /// Drains what `handle_stop` produced, without the floor check.
    fn drain_after_stop(&mut self) {
        while let Some(action) = self.segmenter.poll_action() {
            let r = match action {
                Action::OpenSegment { .. } => Ok(()),
                Action::Write(bytes) => Self::write(&mut self.file, bytes, &self.shared),
                Action::FragmentDone => {
                    Self::fragment_done(&mut self.file, self.settings.fsync, self.fsync_delay, &self.shared)
                }
                Action::CloseSegment { .. } => {
                    Self::close_segment(&self.settings, &mut self.file, self.fsync_delay, &self.shared)
                }
            };
            if r.is_err() {
                break;
            }
        }
        self.segmenter.handle_abort();
    }

    fn below_floor(&self) -> bool {
        let Some(floor) = self.settings.min_free else { return false };
        let Some(free) = free_bytes(&self.settings.dir) else { return false };
        if free >= floor {
            return false;
        }
        let open = self.file.as_ref().map(|f| f.sequence);
        apply_retention(&self.settings, open, &self.shared, self.boot);
        free_bytes(&self.settings.dir).is_some_and(|f| f < floor)
    }

    fn fail(&mut self, e: io::Error) {
        // Keep what is complete: cut the file back to its last whole fragment and close it; a
        // file without one would not play, so it goes.
        if let Some(f) = self.file.as_mut() {
            if f.has_fragment {
                let _ = f.file.set_len(f.good);
                let _ = Self::close_segment(&self.settings, &mut self.file, Duration::ZERO, &self.shared);
            } else {
                let _ = fs::remove_file(self.settings.dir.join(&f.name));
                self.with_status(|s| s.current = None);
            }
        }
        self.file = None;
        self.segmenter.handle_abort();
        if is_enospc(&e) {
            self.pause(RecorderState::PausedDiskFull, &format!("disk full ({e})"));
        } else {
            self.pause(RecorderState::PausedError, &io_error_text(&e));
        }
    }

    fn pause(&mut self, state: RecorderState, why: &str) {
        log::warn!(target: "record", "recording paused: {why} in {}; streaming continues, recording resumes when there is room", self.settings.dir.display());
        self.with_status(|s| {
            s.last_error = Some(why.to_string());
            s.current = None;
        });
        self.paused_check = Some(Instant::now());
        self.set_state(state);
    }

    fn check_paused(&mut self, now: Instant) {
        if !matches!(self.state, RecorderState::PausedDiskFull | RecorderState::PausedError) {
            return;
        }
        // Disk full clears when files go: look every second. Other errors (a card gone
        // read-only, EIO) rarely clear: retry every PAUSED_ERROR_RETRY, one log line each.
        let interval = if self.state == RecorderState::PausedError { PAUSED_ERROR_RETRY } else { PAUSED_CHECK };
        if self.paused_check.is_some_and(|t| now.saturating_duration_since(t) < interval) {
            return;
        }
        self.paused_check = Some(now);
        apply_retention(&self.settings, None, &self.shared, self.boot);
        let margin = self.largest_write.saturating_mul(2).max(RESUME_MARGIN_MIN);
        let need = self.settings.min_free.unwrap_or(0).saturating_add(margin);
        if free_bytes(&self.settings.dir).is_none_or(|free| free >= need) {
            log::info!(target: "record", "recording resumes in {} (there is room again); next segment starts at the next IDR", self.settings.dir.display());
            self.set_state(RecorderState::Recording);
        }
    }

    fn open_segment(
        settings: &RecorderSettings,
        slot: &mut Option<OpenFile>,
        next_sequence: &mut u64,
        boot: [u8; 8],
        shared: &Shared,
    ) -> io::Result<()> {
        apply_retention(settings, None, shared, boot);
        if settings.min_free.is_some_and(|floor| free_bytes(&settings.dir).is_some_and(|f| f < floor)) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let clocks = read_clocks(boot);
        loop {
            let name = naming::segment_name(*next_sequence, &clocks.stamp());
            let path = settings.dir.join(&name);
            let sequence = *next_sequence;
            *next_sequence += 1;
            match OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path) {
                Ok(file) => {
                    if settings.fsync != FsyncPolicy::Off {
                        sync_dir(&settings.dir)?;
                    }
                    log::debug!(target: "record", "segment {name} opened");
                    if let Ok(mut s) = shared.status.lock() {
                        s.current = Some(name.clone());
                    }
                    *slot = Some(OpenFile { file, name, sequence, good: 0, has_fragment: false });
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn write(slot: &mut Option<OpenFile>, bytes: &[u8], shared: &Shared) -> io::Result<()> {
        let Some(f) = slot.as_mut() else { return Ok(()) };
        f.file.write_all(bytes)?;
        f.good += bytes.len() as u64;
        f.has_fragment |= bytes.get(4..8) == Some(b"moof");
        if let Ok(mut s) = shared.status.lock() {
            s.bytes += bytes.len() as u64;
        }
        Ok(())
    }

    fn fragment_done(
        slot: &mut Option<OpenFile>,
        policy: FsyncPolicy,
        delay: Duration,
        shared: &Shared,
    ) -> io::Result<()> {
        let Some(f) = slot.as_mut() else { return Ok(()) };
        if policy == FsyncPolicy::Fragment {
            timed_sync(&f.file, delay, shared, false)?;
        }
        if let Ok(mut s) = shared.status.lock() {
            s.fragments += 1;
        }
        Ok(())
    }

    fn close_segment(
        settings: &RecorderSettings,
        slot: &mut Option<OpenFile>,
        delay: Duration,
        shared: &Shared,
    ) -> io::Result<()> {
        let Some(f) = slot.take() else { return Ok(()) };
        if settings.fsync != FsyncPolicy::Off {
            timed_sync(&f.file, delay, shared, true)?;
        }
        drop(f.file);
        switch_latest(&settings.dir, &f.name, settings.fsync != FsyncPolicy::Off)?;
        log::debug!(target: "record", "segment {} closed ({} bytes)", f.name, f.good);
        if let Ok(mut s) = shared.status.lock() {
            s.segments += 1;
            s.current = None;
        }
        Ok(())
    }

    /// Start-up: continue the sequence after the highest number in the directory, and cut the
    /// newest segment (open when the last run ended) back to its last complete fragment.
    fn recover(&mut self) -> io::Result<()> {
        let names = files::list(&self.settings.dir, naming::SEGMENT_EXT)?;
        self.next_sequence = naming::next_sequence(names.iter().map(|(n, _)| n.as_str()));
        if let Some((name, _)) = names.last() {
            let path = self.settings.dir.join(name);
            match repair(&path) {
                Ok(Repair::Intact) => {}
                Ok(Repair::Truncated { from, to }) => {
                    log::warn!(target: "record", "{name}: cut from {from} to {to} bytes (last complete fragment; the recorder was interrupted)");
                    switch_latest(&self.settings.dir, name, self.settings.fsync != FsyncPolicy::Off)?;
                }
                Ok(Repair::Unplayable) => {
                    log::warn!(target: "record", "{name}: no complete fragment (the recorder was interrupted): removed");
                    fs::remove_file(&path)?;
                }
                Err(e) => log::warn!(target: "record", "{name}: cannot check it: {e}"),
            }
        }
        Ok(())
    }
}

fn timed_sync(file: &File, delay: Duration, shared: &Shared, all: bool) -> io::Result<()> {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let t0 = Instant::now();
    if all {
        file.sync_all()?;
    } else {
        file.sync_data()?;
    }
    let us = t0.elapsed().as_micros() as u64;
    if let Ok(mut s) = shared.status.lock() {
        s.fsyncs += 1;
        s.fsync_total_us += us;
        s.fsync_max_us = s.fsync_max_us.max(us);
    }
    Ok(())
}

/// Points `latest_video.mp4` at `name` atomically.
fn switch_latest(dir: &Path, name: &str, durable: bool) -> io::Result<()> {
    files::switch_link(dir, LATEST, LATEST_TMP, name, durable)
}

fn apply_retention(settings: &RecorderSettings, open: Option<u64>, shared: &Shared, boot: [u8; 8]) {
    let deleted =
        files::apply_retention(&settings.dir, naming::SEGMENT_EXT, &settings.retention(), open, boot, "record").deleted;
    if deleted > 0 {
        if let Ok(mut s) = shared.status.lock() {
            s.deleted_segments += deleted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_odd_settings_are_refused() {
        let s = RecorderSettings::new("/var/lib/uavstream/rec");
        assert_eq!(s.validate(), Ok(()));
        assert!(RecorderSettings { fragment: Duration::from_millis(50), ..s.clone() }.validate().is_err());
        assert!(RecorderSettings { fragment: Duration::from_secs(61), ..s.clone() }.validate().is_err());
        assert!(RecorderSettings { segment: Duration::ZERO, ..s.clone() }.validate().is_err());
        assert!(RecorderSettings::new("").validate().is_err());
        assert_eq!(FsyncPolicy::parse("segment"), Some(FsyncPolicy::Segment));
        assert_eq!(FsyncPolicy::parse("always"), None);
    }
}
