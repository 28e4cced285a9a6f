//! Worker-thread plumbing shared by the software encoders ([`super::jpeg`], [`super::software`]):
//! the CPU-heavy encoder runs on its own thread and the poll loop never waits for it.
//!
//! Invariants:
//! - Loop to worker: camera frames arrive through the worker's [`Mailbox`] (one frame, newest
//!   wins, fed by [`FrameTap`]s; see [`crate::pipeline::frames`]).
//! - Worker to loop: encoded units go through a queue of at most [`limits::ENCODED_QUEUE`] and
//!   an eventfd. A unit that finds the queue full, or is larger than [`limits::MAX_ACCESS_UNIT`],
//!   is dropped and counted, never queued.
//! - Nothing is dropped silently: skipped frames and dropped units are counted from the start
//!   ([`EncoderThread::frames_dropped`], which the loop's `stats:` line shows) and warned about
//!   at most every [`WARN_EVERY`].
//! - Buffers are recycled both ways (spare frame buffers in the mailbox, a bounded free pool for
//!   encoded units), so steady state allocates nothing.
//! - [`EncoderThread`] owns the worker. Dropping it stops the worker, closes the mailbox (later
//!   pushes through a tap are refused without copying and keep no buffer) and joins the thread.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::limits;
use crate::media::scale::{Input, PixelFormat, ScaleError, Scaler};
pub(super) use crate::pipeline::frames::Mailbox;
pub use crate::pipeline::frames::{FrameLayout, FramePool, FrameTap, PolledTap, RawFrame, SharedFrame, Thinning};
use crate::pipeline::{PollRequest, Sink};

/// Encoded-unit buffers kept for reuse: a full queue, the unit being encoded, the one being sent.
const FREE_BUFFERS: usize = limits::ENCODED_QUEUE + 2;
/// How often a worker waiting for a camera frame rechecks the stop flag.
/// At most one "fell behind" warning this often: a slow CPU behind a 30 fps camera is a steady
/// state, not news on every frame.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// How an encoder names itself in its thread name, errors and log lines.
pub(super) struct Labels {
    /// Thread name, e.g. `jpeg-encoder`.
    pub(super) thread: &'static str,
    /// Log target: the encoder's `module_path!()`, so log filters keep matching it.
    pub(super) log_target: &'static str,
    /// Error once the ready queue's lock is poisoned, e.g. "JPEG encoder thread panicked".
    pub(super) panicked: &'static str,
    /// Error once the thread has ended, e.g. "JPEG encoder thread stopped".
    pub(super) stopped: &'static str,
    /// Start of the warning, e.g. "JPEG encoder fell behind".
    pub(super) fell_behind: &'static str,
    /// What the dropped count counts, e.g. "encoded frames dropped".
    pub(super) dropped_what: &'static str,
}

struct Encoded {
    data: Vec<u8>,
    capture: Instant,
}

/// Worker-to-loop side: the ready queue, the free pool, the eventfd, the stop flag, the counters.
pub(super) struct Handoff {
    ready: Mutex<VecDeque<Encoded>>,
    free: Mutex<Vec<Vec<u8>>>,
    stop: AtomicBool,
    efd: EventFd,
    /// Frames never encoded (newest wins), since the start. Shared with frame taps, which count
    /// the frames they replace.
    skipped: Arc<AtomicU64>,
    /// Encoded units the loop never got, since the start.
    dropped: AtomicU64,
}

impl Handoff {
    fn new() -> io::Result<Handoff> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Handoff {
            ready: Mutex::new(VecDeque::with_capacity(limits::ENCODED_QUEUE)),
            free: Mutex::new(Vec::with_capacity(FREE_BUFFERS)),
            stop: AtomicBool::new(false),
            efd,
            skipped: Arc::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
        })
    }

    /// True once the pipeline is being dropped: the worker should return.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// An empty buffer for the next encoded unit, recycled when one is free.
    pub(super) fn take_buffer(&self) -> Vec<u8> {
        let mut buf = self.free.lock().map(|mut f| f.pop()).ok().flatten().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Returns a buffer to the free pool (kept only while the pool is not full).
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < FREE_BUFFERS {
                free.push(buf);
            }
        }
    }

    /// Hands an encoded unit to the loop; `false` when it was dropped (queue full or too big).
    pub(super) fn deliver(&self, buf: Vec<u8>, capture: Instant) -> bool {
        let Ok(mut queue) = self.ready.lock() else { return false };
        if queue.len() >= limits::ENCODED_QUEUE || buf.len() > limits::MAX_ACCESS_UNIT {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.recycle(buf);
            return false;
        }
        queue.push_back(Encoded { data: buf, capture });
        drop(queue);
        let _ = self.efd.write(1);
        true
    }

    /// Counts frames the worker skipped because it fell behind (or that its encoder skipped).
    pub(super) fn count_skipped(&self, frames: u64) {
        self.skipped.fetch_add(frames, Ordering::Relaxed);
    }
}

/// Converts (and scales down, by area averaging) camera frames of any layout to tightly packed
/// I420 at one output size, rebuilding its [`Scaler`] when the input layout changes.
pub(super) struct ToI420 {
    out: (u32, u32),
    scaler: Option<(FrameLayout, Box<Scaler>)>,
}

impl ToI420 {
    pub(super) fn new(out: (u32, u32)) -> ToI420 {
        ToI420 { out, scaler: None }
    }

    /// Bytes of one output frame.
    pub(super) fn output_bytes(&self) -> usize {
        (self.out.0 * self.out.1 * 3 / 2) as usize
    }

    /// Writes `frame` as I420 at the output size into `dst` (exactly [`ToI420::output_bytes`]).
    pub(super) fn convert(&mut self, frame: &RawFrame, dst: &mut [u8]) -> Result<(), ScaleError> {
        let l = frame.layout;
        if self.scaler.as_ref().is_none_or(|(have, _)| *have != l) {
            let format = PixelFormat::from_fourcc(l.fourcc).ok_or(ScaleError::OutputSize)?;
            let input = Input { format, width: l.width, height: l.height, stride: l.stride };
            self.scaler = Some((l, Box::new(Scaler::new(input, self.out.0, self.out.1)?)));
        }
        match self.scaler.as_mut() {
            Some((_, scaler)) => scaler.scale(&frame.data, dst),
            None => Err(ScaleError::OutputSize),
        }
    }
}

/// Paces a thread that makes its own frames (the test-pattern camera) at a frame rate, like a camera's
/// sensor clock: frame `n` is captured at `start + n * period`, so capture times (and RTP
/// timestamps) are exactly one period apart unless a frame is missing. When the worker falls
/// behind by a whole period or more it skips the frames already overdue (newest frame wins,
/// each one counted) rather than catching up.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Instant,
    frame_no: u64,
}

impl Pacer {
    pub fn new(fps: u32) -> Pacer {
        let period = Duration::from_nanos(1_000_000_000 / u64::from(fps.max(1)));
        Pacer { period, next: Instant::now(), frame_no: 0 }
    }

    /// Sleeps until the next frame is due; returns its capture time (when it was due), its
    /// number, and how many frames before it were skipped because their time passed a whole
    /// period ago.
    pub fn wait_next(&mut self) -> (Instant, u64, u64) {
        let now = Instant::now();
        let mut skipped = 0;
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else {
            let behind = ((now - self.next).as_nanos() / self.period.as_nanos()) as u64;
            if behind > 0 {
                skipped = behind;
                self.frame_no += behind;
                self.next += Duration::from_nanos((self.period.as_nanos() as u64).saturating_mul(behind));
            }
        }
        let (capture, frame_no) = (self.next, self.frame_no);
        self.next += self.period;
        self.frame_no += 1;
        (capture, frame_no, skipped)
    }
}

/// The loop's side of an encoder worker: owns the thread, drains encoded units into the sink,
/// warns when the worker falls behind, and stops and joins the thread when dropped.
pub(super) struct EncoderThread {
    handoff: Arc<Handoff>,
    tap: Option<FrameTap>,
    thread: Option<JoinHandle<()>>,
    labels: &'static Labels,
    last_warn: Option<Instant>,
    /// The (skipped, dropped) totals the last warning covered.
    warned: (u64, u64),
}

impl EncoderThread {
    /// Starts a worker that makes its own frames; it should return once `stopping()`.
    #[cfg(test)]
    pub(super) fn spawn(
        labels: &'static Labels,
        body: impl FnOnce(&Handoff) + Send + 'static,
    ) -> io::Result<EncoderThread> {
        let handoff = Arc::new(Handoff::new()?);
        let worker_handoff = Arc::clone(&handoff);
        let thread = std::thread::Builder::new().name(labels.thread.into()).spawn(move || body(&worker_handoff))?;
        Ok(EncoderThread { handoff, tap: None, thread: Some(thread), labels, last_warn: None, warned: (0, 0) })
    }

    /// Starts a worker that encodes frames pushed into its mailbox (see [`Mailbox::next_frame`]).
    pub(super) fn spawn_frames(
        labels: &'static Labels,
        layout: FrameLayout,
        output: (u32, u32),
        body: impl FnOnce(&Handoff, &Mailbox) + Send + 'static,
    ) -> io::Result<EncoderThread> {
        let handoff = Arc::new(Handoff::new()?);
        let mailbox = Arc::new(Mailbox::default());
        let (worker_handoff, worker_mailbox) = (Arc::clone(&handoff), Arc::clone(&mailbox));
        let thread = std::thread::Builder::new()
            .name(labels.thread.into())
            .spawn(move || body(&worker_handoff, &worker_mailbox))?;
        let tap = FrameTap::new_for(mailbox, layout, output, Arc::clone(&handoff.skipped));
        Ok(EncoderThread { handoff, tap: Some(tap), thread: Some(thread), labels, last_warn: None, warned: (0, 0) })
    }

    /// The mailbox handle in frame mode; `None` for a worker that makes its own frames.
    pub(super) fn frame_tap(&self) -> Option<&FrameTap> {
        self.tap.as_ref()
    }

    /// [`FrameTap::push`] in frame mode; otherwise ignores the frame and returns `true`.
    pub(super) fn push_frame(&self, data: &[u8], capture: Instant) -> bool {
        self.tap.as_ref().is_none_or(|tap| tap.push(data, capture))
    }

    /// Frames that never reached the loop since the worker started: skipped because the worker
    /// fell behind (newest wins) plus encoded units the loop had no room for.
    pub(super) fn frames_dropped(&self) -> u64 {
        self.handoff.skipped.load(Ordering::Relaxed) + self.handoff.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.handoff.efd.as_fd().as_raw_fd(), events: libc::POLLIN });
    }

    /// Passes every encoded unit waiting to `sink` and recycles its buffer; warns (at most every
    /// [`WARN_EVERY`]) about skipped and dropped frames. Fails once the worker has ended.
    pub(super) fn on_ready(&mut self, now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        let handoff = &*self.handoff;
        let _ = handoff.efd.read();
        loop {
            let item = handoff.ready.lock().map_err(|_| io::Error::other(self.labels.panicked))?.pop_front();
            let Some(unit) = item else { break };
            sink(&unit.data, unit.capture);
            handoff.recycle(unit.data);
        }
        if self.last_warn.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY) {
            let totals = (handoff.skipped.load(Ordering::Relaxed), handoff.dropped.load(Ordering::Relaxed));
            let (skipped, dropped) = (totals.0 - self.warned.0, totals.1 - self.warned.1);
            if skipped > 0 || dropped > 0 {
                self.last_warn = Some(now);
                self.warned = totals;
                let labels = self.labels;
                log::warn!(
                    target: labels.log_target,
                    "{}: {skipped} frames skipped, {dropped} {} ({} frames dropped since start)",
                    labels.fell_behind,
                    labels.dropped_what,
                    totals.0 + totals.1
                );
            }
        }
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Err(io::Error::other(self.labels.stopped));
        }
        Ok(())
    }
}

impl Drop for EncoderThread {
    fn drop(&mut self) {
        self.handoff.stop.store(true, Ordering::Relaxed);
        if let Some(tap) = &self.tap {
            tap.mailbox().close();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST_LABELS: Labels = Labels {
        thread: "test-encoder",
        log_target: module_path!(),
        panicked: "test encoder thread panicked",
        stopped: "test encoder thread stopped",
        fell_behind: "test encoder fell behind",
        dropped_what: "encoded units dropped",
    };

    /// YUYV 4x2 with a stride of 8: 16 bytes a frame.
    const LAYOUT: FrameLayout = FrameLayout { fourcc: *b"YUYV", width: 4, height: 2, stride: 8 };

    fn tap_for(handoff: &Handoff) -> FrameTap {
        FrameTap::new_for(
            Arc::new(Mailbox::default()),
            LAYOUT,
            (LAYOUT.width, LAYOUT.height),
            Arc::clone(&handoff.skipped),
        )
    }

    /// Frames of the tap's own pool nobody holds (ready for reuse).
    fn free_frames(tap: &FrameTap) -> usize {
        tap.pool_counts().1
    }

    #[test]
    fn frame_tap_is_a_clonable_send_handle() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<FrameTap>();
    }

    #[test]
    fn newest_frame_wins_and_frame_buffers_are_recycled() {
        let handoff = Handoff::new().unwrap();
        let tap = tap_for(&handoff);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(33);
        assert!(tap.push(&[1; 20], t0), "an empty slot takes the frame");
        assert!(!tap.push(&[2; 16], t1), "a waiting frame is replaced");
        assert_eq!(handoff.skipped.load(Ordering::Relaxed), 1);
        let pool_len = |tap: &FrameTap| tap.pool_counts().0;
        assert_eq!((pool_len(&tap), free_frames(&tap)), (1, 0), "the replaced frame's buffer took the new one");

        let frame = tap.mailbox().next_frame(&|| handoff.stopping()).unwrap();
        assert_eq!((&frame.data[..], frame.capture), (&[2u8; 16][..], t1), "the newest frame, cut to the layout");
        let used = frame.data.as_ptr();
        drop(frame);
        assert_eq!(free_frames(&tap), 1, "a taken frame's buffer comes back when it is dropped");

        assert!(tap.push(&[3; 4], t1), "a short frame is copied as it is");
        assert_eq!(
            (pool_len(&tap), free_frames(&tap)),
            (1, 0),
            "the push reused the free buffer instead of allocating"
        );
        let frame = tap.mailbox().next_frame(&|| handoff.stopping()).unwrap();
        assert_eq!(&frame.data[..], &[3; 4]);
        assert_eq!(frame.data.as_ptr(), used, "the same buffer");
    }

    #[test]
    fn a_shared_frame_reaches_every_tap_without_a_copy_and_a_slow_tap_thins_it() {
        let handoff = Handoff::new().unwrap();
        let (a, b) = (tap_for(&handoff), tap_for(&handoff));
        b.set_interval(Some(Duration::from_millis(66)));
        let mut pool = FramePool::default();
        let t0 = Instant::now();
        let mut b_got = 0;
        for n in 0..9u64 {
            let at = t0 + Duration::from_millis(33 * n);
            let frame = pool.fill(LAYOUT, at, |buf| buf.extend_from_slice(&[n as u8; 16])).unwrap();
            assert!(a.push_shared(&frame));
            b.push_shared(&frame);
            let got = a.mailbox().next_frame(&|| handoff.stopping()).unwrap();
            assert!(Arc::ptr_eq(&got, &frame), "the same frame, not a copy");
            b_got += usize::from(b.take_waiting().is_some());
        }
        assert_eq!(b_got, 5, "every other frame of 9 at half the rate");
        assert!(pool.len() <= 3, "the pool reuses frames once nobody holds them: {}", pool.len());
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_loop_drains_in_order() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        let mut thread = EncoderThread::spawn(&TEST_LABELS, move |handoff| {
            for n in 0..=limits::ENCODED_QUEUE {
                let mut buf = handoff.take_buffer();
                buf.push(n as u8);
                let queued = handoff.deliver(buf, t0 + Duration::from_millis(n as u64));
                assert_eq!(queued, n < limits::ENCODED_QUEUE, "unit {n}");
            }
            assert!(!handoff.deliver(vec![0; limits::MAX_ACCESS_UNIT + 1], t0), "an oversized unit is dropped");
            handoff.count_skipped(3);
            let _ = done_tx.send(());
        })
        .unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(thread.handoff.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(thread.handoff.free.lock().unwrap().len(), 2, "dropped units' buffers are recycled");

        let mut got = Vec::new();
        let mut sink = |data: &[u8], at: Instant| got.push((data.to_vec(), at));
        let result = thread.on_ready(Instant::now(), &mut sink);
        assert!(result.is_ok() || result.is_err_and(|e| e.to_string() == TEST_LABELS.stopped));
        let want: Vec<_> =
            (0..limits::ENCODED_QUEUE).map(|n| (vec![n as u8], t0 + Duration::from_millis(n as u64))).collect();
        assert_eq!(got, want, "queued units reach the sink in order");
        assert_eq!(thread.handoff.free.lock().unwrap().len(), FREE_BUFFERS, "the pool is full, not larger");
        assert_eq!(thread.frames_dropped(), 3 + 2, "skipped frames and dropped units, since the start");
        assert_eq!(thread.warned, (3, 2), "the warning covered them");
        assert!(thread.last_warn.is_some());

        // The worker has returned: the loop is told so.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match thread.on_ready(Instant::now(), &mut |_: &[u8], _| {}) {
                Err(e) => break assert_eq!(e.to_string(), TEST_LABELS.stopped),
                Ok(()) => assert!(Instant::now() < deadline, "the finished worker was never reported"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_tap_outliving_its_pipeline_is_refused_without_keeping_buffers() {
        let thread =
            EncoderThread::spawn_frames(&TEST_LABELS, LAYOUT, (LAYOUT.width, LAYOUT.height), |handoff, mailbox| {
                while let Some(frame) = mailbox.next_frame(&|| handoff.stopping()) {
                    let mut buf = handoff.take_buffer();
                    buf.extend_from_slice(&frame.data);
                    handoff.deliver(buf, frame.capture);
                }
            })
            .unwrap();
        let tap = thread.frame_tap().unwrap().clone();
        assert_eq!(tap.layout(), LAYOUT);
        let other_thread = std::thread::spawn({
            let tap = tap.clone();
            move || tap.push(&[7; 16], Instant::now())
        });
        let _ = other_thread.join().unwrap();
        drop(thread);

        for _ in 0..3 {
            assert!(!tap.push(&[8; 16], Instant::now()), "nobody encodes it: refused");
        }
        assert!(tap.is_closed() && tap.take_waiting().is_none() && tap.pool_counts().0 == 0, "no buffer is kept");
        assert_eq!(Arc::strong_count(tap.mailbox()), 1, "only the last tap holds the mailbox");
    }

    #[test]
    fn a_polled_tap_wakes_its_fd_keeps_the_newest_frame_and_closes_when_dropped() {
        let (polled, tap) = PolledTap::new(LAYOUT).unwrap();
        let readable = |p: &PolledTap| {
            let mut fds = [crate::sys::poll_entry(p.fd().as_raw_fd(), libc::POLLIN)];
            crate::sys::poll(&mut fds, 0).unwrap() == 1
        };
        assert!(!readable(&polled) && polled.take().is_none());
        let mut pool = FramePool::default();
        let t0 = Instant::now();
        for n in 0..3u8 {
            let frame = pool.fill(LAYOUT, t0, |buf| buf.extend_from_slice(&[n; 16])).unwrap();
            tap.push_shared(&frame);
        }
        assert!(readable(&polled), "a waiting frame makes the fd readable");
        assert_eq!(polled.take().unwrap().data, [2; 16], "the newest of three");
        assert_eq!(polled.skipped(), 2);
        assert!(!readable(&polled) && polled.take().is_none(), "taken: nothing waits");
        drop(polled);
        assert!(tap.is_closed(), "the camera's pushes are refused once the reader is gone");
    }

    #[test]
    fn pattern_mode_ignores_pushed_frames() {
        let thread = EncoderThread::spawn(&TEST_LABELS, |_| {}).unwrap();
        assert!(thread.frame_tap().is_none());
        assert!(thread.push_frame(&[0; 16], Instant::now()));
    }

    #[test]
    fn a_pacer_that_falls_behind_skips_the_backlog() {
        let mut pacer = Pacer::new(1000);
        let (first_at, first, _) = pacer.wait_next();
        assert_eq!(first, 0);
        std::thread::sleep(Duration::from_millis(20));
        let before = Instant::now();
        let (capture, next, skipped) = pacer.wait_next();
        assert!(skipped >= 15, "{skipped} frames skipped");
        assert_eq!(next, 1 + skipped, "frame numbers jump over the skipped frames");
        assert_eq!(capture, first_at + Duration::from_millis(next), "capture times stay on the frame grid");
        assert!(capture + pacer.period > before, "the newest overdue frame is the one made");
        assert_eq!(pacer.next, capture + pacer.period);
    }
}
