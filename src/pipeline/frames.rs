//! Raw frames between cameras and encoders: one copy (or rendering) per camera frame, shared by
//! reference with every consumer, newest frame wins.
//!
//! Invariants:
//! - A camera copies (or renders) a frame once into a [`SharedFrame`] from its [`FramePool`];
//!   every consumer (an encoder's mailbox, the raw-frame socket, a snapshot encoder) gets a
//!   reference through its [`FrameTap`] ([`FrameTap::push_shared`]); [`FrameTap::push`] copies
//!   once into the mailbox's own pool.
//! - A [`Mailbox`] holds one frame: a frame that arrives while one is still waiting replaces it
//!   and counts as skipped. A tap can take frames at most every interval ([`Thinning`]).
//! - Pools are bounded and recycle their frames, so steady state allocates nothing; a closed
//!   mailbox (its consumer gone) refuses pushes without copying and keeps no buffer.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// How long a waiting consumer sleeps before it checks whether it should stop.
const MAILBOX_RECHECK: Duration = Duration::from_millis(100);

/// Layout of raw camera frames handed to an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// `YU12` (I420), `NV12` or `YUYV` (a camera's own buffers may also be packed RGB: `BG24`, `RG24`).
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per line of the first plane (chroma planes follow the format's rules).
    pub stride: u32,
}

impl FrameLayout {
    /// Bytes a frame of this layout occupies.
    pub fn frame_bytes(&self) -> usize {
        let (s, h) = (self.stride as usize, self.height as usize);
        match &self.fourcc {
            b"YUYV" | b"BG24" | b"RG24" => s * h,
            _ => s * h + s * h / 2,
        }
    }
}

/// A raw camera frame shared by reference: a camera copies (or renders) each frame once into
/// one of these, and every stream's encoder gets the same one (an `Arc` clone, no copy).
#[derive(Debug)]
pub struct RawFrame {
    pub layout: FrameLayout,
    pub capture: Instant,
    pub data: Vec<u8>,
}

/// A [`RawFrame`] several encoders may hold at once.
pub type SharedFrame = Arc<RawFrame>;

/// Frames for one producer, reused once nobody holds them any more: steady state allocates
/// nothing. Bounded: when every frame is still held (each consumer holds at most the one it
/// encodes and the one waiting in its mailbox), the new frame is dropped, newest-wins style.
#[derive(Debug, Default)]
pub struct FramePool {
    frames: Vec<SharedFrame>,
}

/// Frames a pool keeps at most.
const POOL_FRAMES: usize = 2 + 2 * crate::limits::MAX_STREAMS;

impl FramePool {
    /// A frame filled by `fill` (which gets an empty buffer to extend), or `None` when every
    /// frame of the pool is still in use.
    pub fn fill(
        &mut self,
        layout: FrameLayout,
        capture: Instant,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Option<SharedFrame> {
        let free = self.frames.iter_mut().position(|f| Arc::strong_count(f) == 1);
        let slot = match free {
            Some(i) => i,
            None if self.frames.len() < POOL_FRAMES => {
                self.frames.push(Arc::new(RawFrame { layout, capture, data: Vec::new() }));
                self.frames.len() - 1
            }
            None => return None,
        };
        let frame = Arc::get_mut(&mut self.frames[slot])?;
        frame.layout = layout;
        frame.capture = capture;
        frame.data.clear();
        fill(&mut frame.data);
        Some(Arc::clone(&self.frames[slot]))
    }
}

/// Single-slot mailbox between the loop and a frame worker: newest frame wins. A worker that
/// waits in `poll(2)` instead ([`PolledTap`]) is woken through an eventfd as well.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailState>,
    wake: Condvar,
    efd: Option<Arc<EventFd>>,
}

#[derive(Default)]
struct MailState {
    frame: Option<SharedFrame>,
    /// Frames copied in by [`FrameTap::push`].
    pool: FramePool,
    /// Rate reduction: frames are taken at most every interval.
    thinning: Option<Thinning>,
    /// Set when the pipeline is dropped: pushes are refused and buffers freed, not kept.
    closed: bool,
}

impl MailState {
    /// Whether a frame captured at `capture` is wanted by the rate reducer (and books it).
    fn wanted(&mut self, capture: Instant) -> bool {
        self.thinning.as_mut().is_none_or(|t| t.due(capture))
    }
}

/// Takes one frame per interval by capture time: a frame is due when its capture time reaches
/// the next due time, less a little slack for capture jitter (a quarter interval, at most
/// [`THINNING_SLACK_MAX`]). The due times step by exactly one interval, so the long-run rate is
/// exact; a frame far past the due time (a pause, a camera restart) starts over at that frame.
#[derive(Debug, Clone, Copy)]
pub struct Thinning {
    interval: Duration,
    next_due: Option<Instant>,
}

/// Most slack a [`Thinning`] gives a frame captured early.
pub const THINNING_SLACK_MAX: Duration = Duration::from_millis(10);

impl Thinning {
    pub fn new(interval: Duration) -> Thinning {
        Thinning { interval, next_due: None }
    }

    /// Books and returns `true` when the frame captured at `capture` is due.
    pub fn due(&mut self, capture: Instant) -> bool {
        let slack = (self.interval / 4).min(THINNING_SLACK_MAX);
        match self.next_due {
            Some(due) if capture + slack < due => false,
            Some(due) if capture < due + self.interval => {
                self.next_due = Some(due + self.interval);
                true
            }
            _ => {
                self.next_due = Some(capture + self.interval);
                true
            }
        }
    }
}

impl Mailbox {
    /// Waits for the next frame; `None` once the pipeline stops.
    pub(crate) fn next_frame(&self, stopping: &dyn Fn() -> bool) -> Option<SharedFrame> {
        if stopping() {
            return None;
        }
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(frame) = state.frame.take() {
                return Some(frame);
            }
            if state.closed || stopping() {
                return None;
            }
            state = self.wake.wait_timeout(state, MAILBOX_RECHECK).ok()?.0;
        }
    }

    /// Refuses further pushes, frees the waiting frame and the pool, wakes the worker.
    pub(crate) fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = MailState { closed: true, ..MailState::default() };
        }
        self.wake.notify_all();
    }

    /// Wakes the worker: a frame waits.
    fn notify(&self) {
        self.wake.notify_one();
        if let Some(efd) = &self.efd {
            let _ = efd.write(1);
        }
    }
}

/// The receiving end of a [`FrameTap`] for a thread that waits in `poll(2)` (the raw-frame
/// socket): its fd is readable while a frame waits, [`PolledTap::take`] takes the newest one.
/// Dropping it closes the mailbox: the camera's pushes are refused from then on.
pub struct PolledTap {
    mailbox: Arc<Mailbox>,
    efd: Arc<EventFd>,
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for PolledTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledTap").finish_non_exhaustive()
    }
}

impl PolledTap {
    /// A polled mailbox and the tap that feeds it (`layout` is what [`FrameTap::push`] copies).
    pub fn new(layout: FrameLayout) -> io::Result<(PolledTap, FrameTap)> {
        let efd = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(io::Error::from)?,
        );
        let mailbox = Arc::new(Mailbox { efd: Some(Arc::clone(&efd)), ..Mailbox::default() });
        let skipped = Arc::new(AtomicU64::new(0));
        let tap = FrameTap {
            mailbox: Arc::clone(&mailbox),
            layout,
            output: (layout.width, layout.height),
            skipped: Arc::clone(&skipped),
        };
        Ok((PolledTap { mailbox, efd, skipped }, tap))
    }

    /// Readable while a frame waits.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.efd.as_fd()
    }

    /// The waiting frame, if any (clears the fd's readiness first, so a frame pushed meanwhile
    /// wakes the next poll).
    pub fn take(&self) -> Option<SharedFrame> {
        let _ = self.efd.read();
        self.mailbox.state.lock().ok()?.frame.take()
    }

    /// Frames replaced in the mailbox before they were taken (newest wins), since the start.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Drop for PolledTap {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// A clonable handle to a frame-mode pipeline's mailbox, so another pipeline (a camera) can
/// feed it raw frames from any thread. Outliving the pipeline is harmless: pushes are then
/// refused.
#[derive(Clone)]
pub struct FrameTap {
    mailbox: Arc<Mailbox>,
    layout: FrameLayout,
    /// The size the worker encodes at: a camera with a second output of that size (libcamera's
    /// Viewfinder stream) feeds it those frames instead of the full-size ones.
    output: (u32, u32),
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for FrameTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameTap").field("layout", &self.layout).finish()
    }
}

impl FrameTap {
    /// The tap of `mailbox` for a consumer of `layout` frames that works at `output` size,
    /// counting the frames it replaces in `skipped`.
    pub(crate) fn new_for(
        mailbox: Arc<Mailbox>,
        layout: FrameLayout,
        output: (u32, u32),
        skipped: Arc<AtomicU64>,
    ) -> FrameTap {
        FrameTap { mailbox, layout, output, skipped }
    }

    /// The mailbox this tap feeds.
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Hands a frame to the worker (one copy of at most [`FrameLayout::frame_bytes`], into the
    /// mailbox's own pool); a frame still waiting is replaced and counted as skipped (newest
    /// wins). Returns `false` when it replaced one, or when the pipeline is gone (nothing is
    /// copied then).
    pub fn push(&self, data: &[u8], capture: Instant) -> bool {
        let len = self.layout.frame_bytes().min(data.len());
        let Ok(mut state) = self.mailbox.state.lock() else { return false };
        if state.closed || !state.wanted(capture) {
            return !state.closed;
        }
        let layout = self.layout;
        // The waiting frame goes back to the pool first, so it can be reused at once.
        if state.frame.take().is_some() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            let Some(frame) = state.pool.fill(layout, capture, |buf| buf.extend_from_slice(&data[..len])) else {
                return false;
            };
            state.frame = Some(frame);
            drop(state);
            self.mailbox.notify();
            return false;
        }
        let Some(frame) = state.pool.fill(layout, capture, |buf| buf.extend_from_slice(&data[..len])) else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        state.frame = Some(frame);
        drop(state);
        self.mailbox.notify();
        true
    }

    /// Hands a shared frame to the worker without copying it (the frame carries its layout);
    /// the same newest-wins rule as [`FrameTap::push`], and the tap's rate reduction.
    pub fn push_shared(&self, frame: &SharedFrame) -> bool {
        let Ok(mut state) = self.mailbox.state.lock() else { return false };
        if state.closed || !state.wanted(frame.capture) {
            return !state.closed;
        }
        let replaced = state.frame.replace(Arc::clone(frame)).is_some();
        if replaced {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        drop(state);
        self.mailbox.notify();
        !replaced
    }

    /// Takes frames at most every `interval` (a stream slower than its camera): the others are
    /// not handed over at all (not counted as skipped: they were never wanted).
    pub fn set_interval(&self, interval: Option<Duration>) {
        if let Ok(mut state) = self.mailbox.state.lock() {
            state.thinning = interval.map(Thinning::new);
        }
    }

    /// The layout the pipeline expects frames in.
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// The size the pipeline encodes at.
    pub fn output(&self) -> (u32, u32) {
        self.output
    }

    /// Whether the pipeline behind it is gone.
    pub fn is_closed(&self) -> bool {
        self.mailbox.state.lock().map_or(true, |s| s.closed)
    }
}

#[cfg(test)]
impl FrameTap {
    /// Frames of the tap's own pool, and how many of them nobody holds (ready for reuse).
    pub(crate) fn pool_counts(&self) -> (usize, usize) {
        let state = self.mailbox.state.lock().unwrap();
        (state.pool.frames.len(), state.pool.frames.iter().filter(|f| Arc::strong_count(f) == 1).count())
    }

    /// Takes the waiting frame without waiting.
    pub(crate) fn take_waiting(&self) -> Option<SharedFrame> {
        self.mailbox.state.lock().ok()?.frame.take()
    }
}

#[cfg(test)]
impl FramePool {
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}
