//! The raw-frame socket's decisions, without I/O: consumer slots, newest-wins delivery, skip
//! accounting and each consumer's header.
//!
//! `handle_*` in, `poll_*` out: the I/O side reports connections ([`Fanout::handle_connect`],
//! [`Fanout::handle_disconnect`]) and each camera frame ([`Fanout::handle_frame`], with which
//! consumers have read their previous message); then it drains [`Fanout::poll_send`] until
//! `None`, sending each consumer its header with the frame's fd, and reports each outcome
//! ([`Fanout::handle_sent`]).
//!
//! Invariants:
//! - Slots are fixed at start (at most [`limits::MAX_RAW_CLIENTS`]); a consumer beyond them
//!   is refused, counted, and never disturbs those connected.
//! - Newest wins, per consumer: a consumer that has not read its previous message gets no new
//!   one (so at most one message waits per consumer), and the frame counts as skipped for it;
//!   so does a send the kernel refused. Nothing is queued here.
//! - A frame nobody can take is reported as such (`handle_frame` returns `false`): the caller
//!   makes no copy of it.
//! - The sequence number goes up by one for every frame offered, so each consumer sees a
//!   strictly increasing sequence whose gaps are its skipped frames.

use crate::limits::MAX_RAW_CLIENTS;

use super::header::{planes_of, FrameHeader};

/// What the I/O side knows of a camera frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    /// Bytes the camera delivered.
    pub len: usize,
    pub capture_ns: u64,
}

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// The kernel would have blocked (or refused the fd for now): skipped this time.
    Busy,
    /// The consumer is gone: its slot is freed.
    Closed,
}

/// Every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    connected: bool,
    /// Chosen for the current frame, not sent yet.
    chosen: bool,
    skipped: u64,
}

/// Totals since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames offered by the camera.
    pub frames: u64,
    /// Frames copied for at least one consumer (one copy each).
    pub copied: u64,
    /// Messages (frame + header) delivered.
    pub sent: u64,
    /// Frames consumers were skipped for (not ready, or the send was refused).
    pub skipped: u64,
    /// Consumers refused because every slot was taken.
    pub refused: u64,
    /// Frames of a layout this socket cannot describe, or shorter than their layout.
    pub malformed: u64,
}

/// Consumer slots and delivery state of one camera's raw-frame socket.
#[derive(Debug)]
pub struct Fanout {
    slots: heapless::Vec<Slot, MAX_RAW_CLIENTS>,
    sequence: u64,
    /// The header of the frame being sent (its `skipped` is each consumer's own).
    current: Option<FrameHeader>,
    counters: Counters,
}

impl Fanout {
    /// `capacity` consumer slots (clamped to 1..=[`MAX_RAW_CLIENTS`]).
    pub fn new(capacity: usize) -> Fanout {
        let mut slots = heapless::Vec::new();
        for _ in 0..capacity.clamp(1, MAX_RAW_CLIENTS) {
            let _ = slots.push(Slot::default());
        }
        Fanout { slots, sequence: 0, current: None, counters: Counters::default() }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Consumers connected now.
    pub fn consumers(&self) -> usize {
        self.slots.iter().filter(|s| s.connected).count()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A new consumer: its slot, or [`Full`] (counted as refused).
    pub fn handle_connect(&mut self) -> Result<usize, Full> {
        match self.slots.iter().position(|s| !s.connected) {
            Some(i) => {
                self.slots[i] = Slot { connected: true, ..Slot::default() };
                Ok(i)
            }
            None => {
                self.counters.refused += 1;
                Err(Full)
            }
        }
    }

    /// The consumer in `slot` is gone: the slot is free.
    pub fn handle_disconnect(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot::default();
        }
    }

    /// Offers a camera frame. `ready(slot)` says whether that consumer has read its previous
    /// message; one that has not is skipped. Returns whether anyone takes the frame (then the
    /// caller copies it once and drains [`Fanout::poll_send`]). A previous frame whose sends
    /// were not drained is abandoned, and counts as skipped for those left.
    pub fn handle_frame(&mut self, f: FrameInfo, mut ready: impl FnMut(usize) -> bool) -> bool {
        self.abandon_frame();
        self.counters.frames += 1;
        self.sequence += 1;
        let layout = planes_of(f.fourcc, f.height, f.stride)
            .filter(|&(_, _, _, size)| size <= f.len as u64 && f.stride >= f.width && f.width > 0);
        let Some((planes, stride, offset, size)) = layout else {
            self.counters.malformed += 1;
            return false;
        };
        let mut any = false;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !s.connected {
                continue;
            }
            if ready(i) {
                s.chosen = true;
                any = true;
            } else {
                s.skipped += 1;
                self.counters.skipped += 1;
            }
        }
        if any {
            self.counters.copied += 1;
            let header = FrameHeader {
                fourcc: f.fourcc,
                width: f.width,
                height: f.height,
                planes,
                stride,
                offset,
                size,
                capture_ns: f.capture_ns,
                sequence: self.sequence,
                skipped: 0,
            };
            self.current = Some(header);
        }
        any
    }

    /// The frame being sent: its size is what the caller copies.
    pub fn current(&self) -> Option<&FrameHeader> {
        self.current.as_ref()
    }

    /// Drops the current frame: every consumer still waiting for it counts it as skipped (the
    /// copy failed, or the caller moved on).
    pub fn abandon_frame(&mut self) {
        for s in self.slots.iter_mut().filter(|s| s.chosen) {
            s.chosen = false;
            s.skipped += 1;
            self.counters.skipped += 1;
        }
        self.current = None;
    }

    /// The next consumer to send the current frame to, with its header written into `buf`:
    /// (slot, header bytes). `None` when every chosen consumer has had it (or `buf` is too
    /// small: the frame is then abandoned).
    #[must_use]
    pub fn poll_send(&mut self, buf: &mut [u8]) -> Option<(usize, usize)> {
        let mut header = self.current?;
        let Some(slot) = self.slots.iter().position(|s| s.chosen) else {
            self.current = None;
            return None;
        };
        header.skipped = self.slots[slot].skipped;
        match header.write_to(buf) {
            Ok(n) => {
                self.slots[slot].chosen = false;
                Some((slot, n))
            }
            Err(_) => {
                self.abandon_frame();
                None
            }
        }
    }

    /// How the send of the current frame to `slot` went.
    pub fn handle_sent(&mut self, slot: usize, outcome: Sent) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        if !s.connected {
            return;
        }
        match outcome {
            Sent::Delivered => self.counters.sent += 1,
            Sent::Busy => {
                s.skipped += 1;
                self.counters.skipped += 1;
            }
            Sent::Closed => *s = Slot::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::header::HEADER_LEN;

    const FRAME: FrameInfo =
        FrameInfo { fourcc: *b"YU12", width: 64, height: 32, stride: 64, len: 64 * 32 * 3 / 2, capture_ns: 5 };

    /// Offers a frame with `busy` slots not ready; returns (slot, header) per send, all delivered.
    type Sends = heapless::Vec<(usize, FrameHeader), MAX_RAW_CLIENTS>;

    fn offer(f: &mut Fanout, busy: &[usize]) -> Sends {
        let mut out = Sends::new();
        if !f.handle_frame(FRAME, |s| !busy.contains(&s)) {
            return out;
        }
        let mut buf = [0xa5u8; HEADER_LEN];
        while let Some((slot, n)) = f.poll_send(&mut buf) {
            out.push((slot, FrameHeader::parse(&buf[..n]).unwrap())).unwrap();
            f.handle_sent(slot, Sent::Delivered);
        }
        out
    }

    #[test]
    fn fixed_slots_refuse_the_one_too_many_and_a_freed_slot_is_reused() {
        let mut f = Fanout::new(2);
        assert_eq!((f.handle_connect(), f.handle_connect()), (Ok(0), Ok(1)));
        assert_eq!(f.handle_connect(), Err(Full));
        assert_eq!((f.consumers(), f.counters().refused), (2, 1));
        f.handle_disconnect(0);
        assert_eq!(f.handle_connect(), Ok(0), "the freed slot");
        f.handle_disconnect(7);
        assert_eq!(Fanout::new(0).capacity(), 1);
        assert_eq!(Fanout::new(1000).capacity(), MAX_RAW_CLIENTS);
    }

    #[test]
    fn nobody_connected_or_ready_means_no_copy() {
        let mut f = Fanout::new(4);
        assert!(!f.handle_frame(FRAME, |_| true), "nobody connected");
        let _ = f.handle_connect();
        assert!(!f.handle_frame(FRAME, |_| false), "nobody ready");
        assert_eq!(f.poll_send(&mut [0; HEADER_LEN]), None);
        let c = f.counters();
        assert_eq!((c.frames, c.copied, c.skipped), (2, 0, 1));
    }

    #[test]
    fn a_busy_consumer_is_skipped_and_counts_it_while_the_others_get_every_frame() {
        let mut f = Fanout::new(4);
        let (a, b) = (f.handle_connect().unwrap(), f.handle_connect().unwrap());
        let first = offer(&mut f, &[]);
        assert_eq!((first.len(), first[0].0, first[1].0), (2, a, b));
        let h = first[0].1;
        assert_eq!((h.sequence, h.skipped, h.size, h.planes), (1, 0, 64 * 32 * 3 / 2, 3));
        assert_eq!((h.offset, h.stride, h.capture_ns), ([0, 2048, 2560], [64, 32, 32], 5));
        // b stops reading: two frames pass it by.
        for _ in 0..2 {
            let got = offer(&mut f, &[b]);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, a);
        }
        let got = offer(&mut f, &[]);
        let hb = got.iter().find(|(s, _)| *s == b).unwrap().1;
        assert_eq!((hb.sequence, hb.skipped), (4, 2), "b learns what it missed; the sequence shows the gap");
        let ha = got.iter().find(|(s, _)| *s == a).unwrap().1;
        assert_eq!((ha.sequence, ha.skipped), (4, 0));
        let c = f.counters();
        assert_eq!((c.frames, c.copied, c.sent, c.skipped), (4, 4, 6, 2));
    }

    #[test]
    fn a_refused_send_is_a_skip_a_closed_one_frees_the_slot() {
        let mut f = Fanout::new(2);
        let (a, b) = (f.handle_connect().unwrap(), f.handle_connect().unwrap());
        assert!(f.handle_frame(FRAME, |_| true));
        let mut buf = [0; HEADER_LEN];
        let (s1, _) = f.poll_send(&mut buf).unwrap();
        f.handle_sent(s1, Sent::Busy);
        let (s2, _) = f.poll_send(&mut buf).unwrap();
        f.handle_sent(s2, Sent::Closed);
        assert_eq!(f.poll_send(&mut buf), None);
        assert_eq!((s1, s2), (a, b));
        assert_eq!((f.consumers(), f.counters().skipped, f.counters().sent), (1, 1, 0));
        assert_eq!(offer(&mut f, &[])[0].1.skipped, 1);
    }

    #[test]
    fn an_undrained_frame_is_abandoned_as_skipped_and_a_short_buffer_never_panics() {
        let mut f = Fanout::new(2);
        let _ = (f.handle_connect(), f.handle_connect());
        assert!(f.handle_frame(FRAME, |_| true));
        assert!(f.handle_frame(FRAME, |_| true), "the next frame comes before the sends");
        assert_eq!(f.counters().skipped, 2);
        assert_eq!(f.poll_send(&mut [0; 10]), None, "no room for a header");
        assert_eq!(f.counters().skipped, 4);
        assert_eq!(offer(&mut f, &[]).len(), 2);
    }

    #[test]
    fn a_frame_this_socket_cannot_describe_is_not_sent() {
        let mut f = Fanout::new(1);
        let _ = f.handle_connect();
        for bad in [
            FrameInfo { fourcc: *b"MJPG", ..FRAME },
            FrameInfo { len: FRAME.len - 1, ..FRAME },
            FrameInfo { stride: 32, ..FRAME },
            FrameInfo { width: 0, stride: 0, ..FRAME },
        ] {
            assert!(!f.handle_frame(bad, |_| true), "{bad:?}");
        }
        assert_eq!(f.counters().malformed, 4);
        assert_eq!(offer(&mut f, &[])[0].1.sequence, 5, "every offered frame has a number");
    }
}
