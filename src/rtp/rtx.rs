//! Retransmission (RFC 4588) of packets a receiver reported lost (generic NACK, RFC 4585): the
//! decision core of one session, and the RTX packet header. Sans-IO: every call takes `now`.
//!
//! ```text
//!  RTX packet (RFC 4588 §4), SSRC-multiplexed on the session's RTP port:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M| PT = rtx pt |   RTX sequence number         |
//! |          timestamp (the original packet's)                    |
//! |          SSRC = the stream's RTX SSRC                         |
//! |  OSN (original sequence number) |                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                             |
//! |          the original payload, as it is in the ring           |
//! ```
//!
//! # Rules
//! - `handle_*` in, `poll_*` out does not apply: one call, one [`Verdict`]. The loop records
//!   what it sent to the session with [`Retransmitter::on_sent`], asks
//!   [`Retransmitter::handle_nack`] for each reported sequence number, and sends only on
//!   [`Verdict::Send`].
//! - A packet is retransmitted only when it is still in the ring, was sent to this session, is
//!   younger than the window (how long ago it was sent to this session), and the session's
//!   token bucket (bytes) holds it. Anything else is counted and dropped: latency first, never
//!   a queue.
//! - Fixed-size state, no allocation; a `now` older than the latest seen is the latest.

use core::time::Duration;

use crate::time::Instant;

/// Sends remembered per session (one per fan-out of an access unit: ~2 s at 30 fps).
pub const SENT_HISTORY: usize = 64;
/// Extra time the `auto` window allows on top of a frame interval and the RTT: the receiver
/// waits for reordering before it reports a gap (GStreamer's rtpjitterbuffer does).
pub const AUTO_WINDOW_SLACK: Duration = Duration::from_millis(40);
/// The longest RTX header we write: 12 bytes, 15 CSRCs, OSN (extensions are not carried).
pub const RTX_HEADER_MAX: usize = 12 + 15 * 4 + 2;

/// How one session's retransmissions are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxPolicy {
    /// Retransmit packets sent at most this long ago; `None` = auto: one frame interval plus
    /// the session's RTT plus [`AUTO_WINDOW_SLACK`].
    pub window: Option<Duration>,
    pub frame_interval: Duration,
    /// Token bucket: bytes per second, and its depth in bytes.
    pub rate_bytes: u32,
    pub burst_bytes: u32,
}

impl RtxPolicy {
    /// The window for a session with this RTT (unknown: zero).
    pub fn window_for(&self, rtt: Option<Duration>) -> Duration {
        self.window.unwrap_or(self.frame_interval + rtt.unwrap_or_default() + AUTO_WINDOW_SLACK)
    }
}

/// What to do with one NACKed sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retransmit ring packet `index` (with [`write_rtx_header`]).
    Send { index: u64 },
    /// Sent longer ago than the window: the receiver cannot use it any more.
    TooOld,
    /// The session's budget is spent for now.
    OverBudget,
    /// Not in the ring any more, never sent to this session, or a sequence number we never sent.
    Unknown,
}

/// Counters of one session's NACK handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtxCounters {
    /// Sequence numbers reported lost.
    pub nacked: u64,
    pub retransmitted: u64,
    pub retransmitted_bytes: u64,
    pub too_old: u64,
    pub over_budget: u64,
    pub unknown: u64,
}

/// Where the ring is now: what [`Retransmitter::handle_nack`] maps sequence numbers against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPos {
    /// Index the next packet will get (the newest packet is `head - 1`).
    pub head: u64,
    /// Oldest index still held.
    pub oldest: u64,
    /// Sequence number of packet `head - 1`.
    pub newest_seq: u16,
}

impl RingPos {
    /// The ring index that carries `seq`, when it is held. Sequence numbers run one per ring
    /// index (the hub packetizes every packet into the ring in order), so the distance back from
    /// the newest packet is the distance in sequence numbers; a `seq` "after" the newest one is
    /// one we never sent.
    pub fn index_of(&self, seq: u16) -> Option<u64> {
        let newest = self.head.checked_sub(1)?;
        let back = self.newest_seq.wrapping_sub(seq);
        if back >= 0x8000 {
            return None;
        }
        let index = newest.checked_sub(u64::from(back))?;
        (index >= self.oldest).then_some(index)
    }
}

/// One session's retransmission state.
#[derive(Debug, Clone)]
pub struct Retransmitter {
    policy: RtxPolicy,
    /// `(first ring index, when)` of the last sends to this session, a ring of [`SENT_HISTORY`].
    sent: [(u64, Instant); SENT_HISTORY],
    sent_len: usize,
    sent_next: usize,
    /// Everything below this index was handed to the session's socket.
    sent_until: u64,
    /// Bucket content in thousandths of a byte, and when it was last refilled.
    tokens: u64,
    tokens_at: Instant,
    latest: Instant,
    next_seq: u16,
    pub counters: RtxCounters,
}

impl Retransmitter {
    /// A session's state; `first_seq` is its RTX sequence number base (random, RFC 3550 §5.1).
    pub fn new(policy: RtxPolicy, first_seq: u16, now: Instant) -> Retransmitter {
        Retransmitter {
            policy,
            sent: [(0, Instant::ZERO); SENT_HISTORY],
            sent_len: 0,
            sent_next: 0,
            sent_until: 0,
            tokens: u64::from(policy.burst_bytes) * 1000,
            tokens_at: now,
            latest: now,
            next_seq: first_seq,
            counters: RtxCounters::default(),
        }
    }

    pub fn policy(&self) -> &RtxPolicy {
        &self.policy
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// Ring packets `first..until` went to the session's socket at `now`.
    pub fn on_sent(&mut self, first: u64, until: u64, now: Instant) {
        let now = self.clamp(now);
        if until <= first || until <= self.sent_until {
            return;
        }
        let first = first.max(self.sent_until);
        self.sent[self.sent_next] = (first, now);
        self.sent_next = (self.sent_next + 1) % SENT_HISTORY;
        self.sent_len = (self.sent_len + 1).min(SENT_HISTORY);
        self.sent_until = until;
    }

    /// When ring packet `index` was sent to this session, if it was and is still remembered.
    fn sent_at(&self, index: u64) -> Option<Instant> {
        if index >= self.sent_until {
            return None;
        }
        // Entries are in index order: the newest one that starts at or before `index`.
        (0..self.sent_len)
            .map(|k| self.sent[(self.sent_next + SENT_HISTORY - 1 - k) % SENT_HISTORY])
            .find(|&(first, _)| first <= index)
            .map(|(_, at)| at)
    }

    fn refill(&mut self, now: Instant) {
        let us = now.saturating_since(self.tokens_at).as_micros().min(u128::from(u32::MAX)) as u64;
        // bytes/s × µs / 1000 = thousandths of a byte.
        let add = u64::from(self.policy.rate_bytes) * us / 1000;
        self.tokens = (self.tokens + add).min(u64::from(self.policy.burst_bytes) * 1000);
        self.tokens_at = now;
    }

    /// Decides about one NACKed sequence number. `packet(index)` gives the ring packet at an
    /// index (its sequence number and length) when it is held.
    pub fn handle_nack(
        &mut self,
        seq: u16,
        ring: RingPos,
        packet: impl Fn(u64) -> Option<(u16, usize)>,
        rtt: Option<Duration>,
        now: Instant,
    ) -> Verdict {
        let now = self.clamp(now);
        self.counters.nacked += 1;
        let verdict = self.decide(seq, ring, packet, rtt, now);
        match verdict {
            Verdict::Send { .. } => self.counters.retransmitted += 1,
            Verdict::TooOld => self.counters.too_old += 1,
            Verdict::OverBudget => self.counters.over_budget += 1,
            Verdict::Unknown => self.counters.unknown += 1,
        }
        verdict
    }

    fn decide(
        &mut self,
        seq: u16,
        ring: RingPos,
        packet: impl Fn(u64) -> Option<(u16, usize)>,
        rtt: Option<Duration>,
        now: Instant,
    ) -> Verdict {
        let Some(index) = ring.index_of(seq) else { return Verdict::Unknown };
        let Some((_, len)) = packet(index).filter(|&(s, _)| s == seq) else { return Verdict::Unknown };
        let Some(sent_at) = self.sent_at(index) else { return Verdict::Unknown };
        if now.saturating_since(sent_at) > self.policy.window_for(rtt) {
            return Verdict::TooOld;
        }
        self.refill(now);
        let cost = len as u64 * 1000;
        if self.tokens < cost {
            return Verdict::OverBudget;
        }
        self.tokens -= cost;
        self.counters.retransmitted_bytes += len as u64;
        Verdict::Send { index }
    }

    /// The RTX sequence number of the next retransmission.
    pub fn next_seq(&mut self) -> u16 {
        let s = self.next_seq;
        self.next_seq = s.wrapping_add(1);
        s
    }
}

/// The RTX header for `original` (a whole RTP packet from the ring): returns the header length
/// written to `out` and the offset in `original` where the payload that follows it starts, or
/// `None` for a packet too short to be RTP. The packet to send is `out[..len]` followed by
/// `original[offset..]`. The marker bit and timestamp are kept; a header extension is dropped
/// (ours have none).
pub fn write_rtx_header(
    original: &[u8],
    rtx_pt: u8,
    rtx_ssrc: u32,
    rtx_seq: u16,
    out: &mut [u8; RTX_HEADER_MAX],
) -> Option<(usize, usize)> {
    if original.len() < 12 || original[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(original[0] & 0x0f) * 4;
    let mut offset = 12 + csrc;
    let fixed = original.get(..offset)?;
    if original[0] & 0x10 != 0 {
        let ext = original.get(offset..offset + 4)?;
        offset += 4 + usize::from(u16::from_be_bytes([ext[2], ext[3]])) * 4;
        if offset > original.len() {
            return None;
        }
    }
    out[..fixed.len()].copy_from_slice(fixed);
    out[0] &= !0x10;
    out[1] = (original[1] & 0x80) | (rtx_pt & 0x7f);
    out[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
    out[8..12].copy_from_slice(&rtx_ssrc.to_be_bytes());
    out[fixed.len()..fixed.len() + 2].copy_from_slice(&original[2..4]);
    Some((fixed.len() + 2, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * MS)
    }

    fn policy() -> RtxPolicy {
        RtxPolicy {
            window: None,
            frame_interval: Duration::from_micros(33_333),
            rate_bytes: 100_000,
            burst_bytes: 10_000,
        }
    }

    /// A ring of 100 packets, indices 1000..1100, sequence numbers from 65500 (wrapping), 1000
    /// bytes each.
    fn ring() -> (RingPos, impl Fn(u64) -> Option<(u16, usize)>) {
        let pos = RingPos { head: 1100, oldest: 1000, newest_seq: 65500u16.wrapping_add(99) };
        let packet = |i: u64| (1000..1100).contains(&i).then(|| (65500u16.wrapping_add((i - 1000) as u16), 1000));
        (pos, packet)
    }

    #[test]
    fn sequence_numbers_map_to_ring_indices_across_the_wrap() {
        let (pos, _) = ring();
        assert_eq!(pos.index_of(65500), Some(1000));
        assert_eq!(pos.index_of(65535), Some(1035));
        assert_eq!(pos.index_of(0), Some(1036));
        assert_eq!(pos.index_of(63), Some(1099));
        // After the newest one: never sent. Before the oldest: gone.
        assert_eq!(pos.index_of(64), None);
        assert_eq!(pos.index_of(65499), None);
        assert_eq!(pos.index_of(30_000), None);
        assert_eq!(RingPos { head: 0, oldest: 0, newest_seq: 0 }.index_of(0), None);
    }

    #[test]
    fn only_packets_sent_to_the_session_within_the_window_are_retransmitted() {
        let (pos, packet) = ring();
        let mut r = Retransmitter::new(policy(), 7, at(0));
        // The session joined at index 1050: frames at 1050 (t=0) and 1080 (t=33 ms).
        r.on_sent(1050, 1080, at(0));
        r.on_sent(1080, 1100, at(33));
        let seq = |i: u64| 65500u16.wrapping_add((i - 1000) as u16);
        // Before its join: never sent to it.
        assert_eq!(r.handle_nack(seq(1049), pos, &packet, None, at(40)), Verdict::Unknown);
        assert_eq!(r.handle_nack(seq(1060), pos, &packet, None, at(40)), Verdict::Send { index: 1060 });
        // Auto window with no RTT known: 33.3 + 40 ms after the send.
        assert_eq!(r.handle_nack(seq(1060), pos, &packet, None, at(74)), Verdict::TooOld);
        assert_eq!(r.handle_nack(seq(1090), pos, &packet, None, at(74)), Verdict::Send { index: 1090 });
        // An RTT of 100 ms widens it.
        assert_eq!(
            r.handle_nack(seq(1060), pos, &packet, Some(Duration::from_millis(100)), at(150)),
            Verdict::Send { index: 1060 }
        );
        // A fixed window ignores the RTT.
        let mut fixed =
            Retransmitter::new(RtxPolicy { window: Some(Duration::from_millis(500)), ..policy() }, 0, at(0));
        fixed.on_sent(1000, 1100, at(0));
        assert_eq!(fixed.handle_nack(seq(1000), pos, &packet, None, at(500)), Verdict::Send { index: 1000 });
        assert_eq!(fixed.handle_nack(seq(1000), pos, &packet, None, at(501)), Verdict::TooOld);
        assert_eq!(r.counters.nacked, 5);
        assert_eq!((r.counters.retransmitted, r.counters.too_old, r.counters.unknown), (3, 1, 1));
        assert_eq!(r.counters.retransmitted_bytes, 3000);
    }

    #[test]
    fn the_token_bucket_bounds_a_flood_of_nacks_on_a_virtual_clock() {
        let (pos, packet) = ring();
        let mut r = Retransmitter::new(RtxPolicy { window: Some(Duration::from_secs(3600)), ..policy() }, 0, at(0));
        r.on_sent(1000, 1100, at(0));
        // Burst: 10 packets of 1000 bytes, then nothing until the bucket refills.
        let mut sent = 0;
        for k in 0..50u16 {
            if let Verdict::Send { .. } = r.handle_nack(65500u16.wrapping_add(k), pos, &packet, None, at(0)) {
                sent += 1;
            }
        }
        assert_eq!((sent, r.counters.over_budget), (10, 40));
        // 100 kB/s: one packet per 10 ms.
        assert_eq!(r.handle_nack(65500, pos, &packet, None, at(9)), Verdict::OverBudget);
        assert_eq!(r.handle_nack(65500, pos, &packet, None, at(10)), Verdict::Send { index: 1000 });
        // A NACK every millisecond for 10 s: at most burst + rate.
        let mut sent = 0u64;
        for ms in 11..10_011 {
            if let Verdict::Send { .. } = r.handle_nack(65510, pos, &packet, None, at(ms)) {
                sent += 1;
            }
        }
        assert!((999..=1001).contains(&sent), "{sent}");
        // Time running backwards refills nothing.
        let before = r.counters.over_budget;
        assert_eq!(r.handle_nack(65510, pos, &packet, None, at(5)), Verdict::OverBudget);
        assert_eq!(r.counters.over_budget, before + 1);
    }

    #[test]
    fn a_packet_whose_sequence_number_does_not_match_the_ring_is_unknown() {
        let (pos, _) = ring();
        let mut r = Retransmitter::new(policy(), 0, at(0));
        r.on_sent(1000, 1100, at(0));
        assert_eq!(r.handle_nack(65500, pos, |_| Some((1, 1000)), None, at(1)), Verdict::Unknown);
        assert_eq!(r.handle_nack(65500, pos, |_| None, None, at(1)), Verdict::Unknown);
    }

    #[test]
    fn history_forgets_old_sends() {
        let (pos, packet) = ring();
        let mut r = Retransmitter::new(RtxPolicy { window: Some(Duration::from_secs(3600)), ..policy() }, 0, at(0));
        for k in 0..(SENT_HISTORY as u64 + 10) {
            r.on_sent(1000 + k, 1001 + k, at(k));
        }
        // The first ten sends are forgotten.
        assert_eq!(r.handle_nack(65500 + 9, pos, &packet, None, at(100)), Verdict::Unknown);
        assert_eq!(r.handle_nack(65500 + 10, pos, &packet, None, at(100)), Verdict::Send { index: 1010 });
        // Sends that go back in the ring (a reader restarted) do not rewrite history.
        r.on_sent(1005, 1006, at(200));
        assert_eq!(r.handle_nack(65500 + 11, pos, &packet, None, at(200)), Verdict::Send { index: 1011 });
    }

    #[test]
    fn rtx_header_follows_rfc_4588() {
        let mut orig = [0u8; 20];
        orig[..12].copy_from_slice(&[0x80, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
        orig[12..].copy_from_slice(b"payload!");
        let mut hdr = [0xa5u8; RTX_HEADER_MAX];
        let (n, off) = write_rtx_header(&orig, 97, 0x0102_0304, 0x0506, &mut hdr).unwrap();
        assert_eq!((n, off), (14, 12));
        assert_eq!(&hdr[..14], &[0x80, 0xe1, 0x05, 0x06, 0, 0, 0x10, 0, 1, 2, 3, 4, 0x12, 0x34]);
        assert_eq!(&orig[off..], b"payload!");
        // Marker off stays off; CSRCs are kept; an extension is dropped.
        let mut ext = [0u8; 28];
        ext[..4].copy_from_slice(&[0x91, 0x60, 0, 9]);
        ext[16..20].copy_from_slice(&[0xbe, 0xde, 0, 1]);
        let (n, off) = write_rtx_header(&ext, 97, 1, 2, &mut hdr).unwrap();
        assert_eq!((n, off), (18, 24));
        assert_eq!((hdr[0], hdr[1]), (0x81, 97));
        assert!(write_rtx_header(&ext[..21], 97, 1, 2, &mut hdr).is_none());
        assert!(write_rtx_header(&orig[..11], 97, 1, 2, &mut hdr).is_none());
        assert!(write_rtx_header(&[0u8; 12], 97, 1, 2, &mut hdr).is_none());
    }
}
