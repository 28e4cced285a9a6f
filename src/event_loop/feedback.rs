//! What the loop does with a client's RTCP feedback: a PLI or FIR asks the stream's encoder for
//! an IDR through its [`super::IdrLimiter`] (the same budget as joins); a generic NACK
//! retransmits the reported packets from the ring as RTX (RFC 4588), decided by the session's
//! [`Retransmitter`] (window, budget) and sent straight from the ring slot behind a small
//! header on the stack (`sendmsg(2)` with two iovecs: no copy of the payload).
//!
//! Invariants:
//! - Only sessions that set up `RTP/AVPF` over unicast UDP while `nack` is `on` or `all` get
//!   retransmissions (they have a [`Retransmitter`]); TCP-interleaved and multicast sessions,
//!   `RTP/AVP` clients (which would not know the RTX payload type), and `RTP/AVPF` sessions of
//!   `nack=off` (offered PLI/FIR only, no RTX payload type) never do.
//! - A retransmission the kernel refuses is dropped, never queued; nothing here allocates.
//! - A passthrough stream cannot make IDRs: a PLI is logged at debug level and ignored.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, MsgFlags, SockaddrStorage};

use super::EventLoop;
use crate::config::StreamConfig;
use crate::limits;
use crate::rtp::feedback::nacked_seqs;
use crate::rtp::rtx::{write_rtx_header, Retransmitter, RingPos, RtxPolicy, Verdict, RTX_HEADER_MAX};
use crate::rtp::RTX_PAYLOAD_TYPE;
use crate::source::IdrControl;

/// The RTX SSRC of a stream: derived from its media SSRC, so it is fixed for the stream's life
/// and differs from it.
pub(super) fn rtx_ssrc(media_ssrc: u32) -> u32 {
    media_ssrc.rotate_left(16) ^ 0x5254_5821
}

/// Sequence number of an RTP packet from the ring.
fn seq_of(packet: &[u8]) -> u16 {
    packet.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// The retransmission policy of a session of `st`: a quarter of the stream's bitrate at most,
/// in bursts of [`limits::RTX_BURST`] (see `limits`).
pub(super) fn rtx_policy(st: &StreamConfig, window: Option<Duration>) -> RtxPolicy {
    let rate_bytes = (st.bitrate / 8 * limits::RTX_BUDGET_PERCENT / 100).max(limits::RTX_MIN_RATE_BYTES);
    RtxPolicy {
        window,
        frame_interval: Duration::from_micros(1_000_000 / u64::from(st.fps.max(1))),
        rate_bytes,
        burst_bytes: (rate_bytes / 10).max(limits::RTX_BURST_BYTES),
    }
}

impl EventLoop<'_> {
    /// A client of `slot` sent a PLI or FIR.
    pub(super) fn on_keyframe_request(&mut self, slot: usize, now: Instant) {
        let si = self.slots[slot].stream;
        self.keyframe_requests[si] += 1;
        let st = &mut self.streams[si];
        match st.pipeline.as_ref().map(|p| p.idr_control()) {
            Some(IdrControl::OnRequest) => {
                log::debug!("{}: slot {slot} asked for a keyframe (PLI/FIR)", st.cfg.path);
                st.request_idr(now);
            }
            Some(_) => log::debug!(
                "{}: slot {slot} asked for a keyframe (PLI/FIR); ignored: a passthrough stream's IDRs come from the camera",
                st.cfg.path
            ),
            None => {}
        }
    }

    /// Sets up (or drops) a session's retransmission state when it starts playing.
    pub(super) fn arm_retransmission(&mut self, slot: usize, now: Instant) {
        let sess = self.server.sessions()[slot];
        let udp_avpf = matches!(sess.delivery, crate::rtsp::session::Delivery::Udp { .. })
            && sess.profile == crate::rtsp::transport::Profile::Avpf
            && self.cfg.nack != crate::rtsp::session::FeedbackPolicy::Off;
        let core_now = self.core_now(now);
        let s = &mut self.slots[slot];
        s.rtx = udp_avpf.then(|| {
            let policy = rtx_policy(self.streams[s.stream].cfg, self.cfg.nack_window);
            Retransmitter::new(policy, crate::sys::random_u64() as u16, core_now)
        });
    }

    /// Retransmissions of stream `si` since start: ended sessions' and live ones'.
    pub(super) fn retransmitted(&self, si: usize) -> u64 {
        let live: u64 = self
            .slots
            .iter()
            .filter(|s| s.stream == si)
            .filter_map(|s| s.rtx.as_ref())
            .map(|r| r.counters.retransmitted)
            .sum();
        self.retransmitted_ended[si] + live
    }

    /// A session of `slot` ends: its retransmissions go to its stream's total.
    pub(super) fn retire_retransmission(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(r) = s.rtx.take() {
            self.retransmitted_ended[s.stream] += r.counters.retransmitted;
        }
    }

    /// The `stats:` line of stream `si`'s feedback, when any session plays it over UDP: RTT,
    /// loss and NACK handling of its sessions now, PLI/FIR and retransmissions since start.
    pub(super) fn log_feedback_stats(&self, si: usize) {
        let mut udp = 0;
        let (mut rtt_max, mut loss_max) = (None::<u32>, 0u8);
        let mut c = crate::rtp::rtx::RtxCounters::default();
        for (i, sess) in self.server.sessions().iter().enumerate() {
            let s = &self.slots[i];
            if s.stream != si || !s.playing || s.conn.is_some() {
                continue;
            }
            udp += 1;
            let r = sess.reception;
            rtt_max = rtt_max.max(r.rtt_us);
            loss_max = loss_max.max(r.fraction_lost);
            if let Some(x) = s.rtx.as_ref() {
                c.nacked += x.counters.nacked;
                c.too_old += x.counters.too_old;
                c.over_budget += x.counters.over_budget;
            }
        }
        if udp == 0 {
            return;
        }
        log::info!(
            "stats: feedback {} udp sessions {udp}: rtt max {} loss max {:.1} % | NACKed {} (now) retransmitted {} (since start), not: too old {} over budget {} (now) | PLI/FIR {} (since start)",
            self.streams[si].cfg.path,
            rtt_max.map_or_else(|| "?".to_owned(), |us| format!("{:.1} ms", f64::from(us) / 1e3)),
            f64::from(loss_max) * 100.0 / 256.0,
            c.nacked,
            self.retransmitted(si),
            c.too_old,
            c.over_budget,
            self.keyframe_requests[si],
        );
    }

    /// The client of `slot` sent generic NACKs (in `self.rtcp_buf[..len]`): retransmits what
    /// its [`Retransmitter`] allows.
    pub(super) fn retransmit(&mut self, slot: usize, len: usize, now: Instant) {
        let core_now = self.core_now(now);
        let sess = &self.server.sessions()[slot];
        let s = &mut self.slots[slot];
        let (Some(rtx), Some(dest)) = (s.rtx.as_mut(), s.rtp_dest) else { return };
        let rtt = sess.reception.rtt_us.map(|us| Duration::from_micros(u64::from(us)));
        let hub = &self.streams[s.stream].hub;
        let ring = &hub.ring;
        let Some(newest) = ring.head().checked_sub(1).and_then(|i| ring.get(i)) else { return };
        let pos = RingPos { head: ring.head(), oldest: ring.oldest(), newest_seq: seq_of(newest.bytes) };
        let ssrc = rtx_ssrc(hub.ssrc());
        let dest = SockaddrStorage::from(dest);
        let mut hdr = [0u8; RTX_HEADER_MAX];
        for seq in nacked_seqs(&self.rtcp_buf[..len], sess.media_ssrc, limits::MAX_NACKED_PER_RTCP) {
            let packet = |i| ring.get(i).map(|p| (seq_of(p.bytes), p.bytes.len()));
            let Verdict::Send { index } = rtx.handle_nack(seq, pos, packet, rtt, core_now) else { continue };
            let Some(p) = ring.get(index) else { continue };
            let Some((n, offset)) = write_rtx_header(p.bytes, RTX_PAYLOAD_TYPE, ssrc, rtx.next_seq(), &mut hdr) else {
                continue;
            };
            let iov = [IoSlice::new(&hdr[..n]), IoSlice::new(&p.bytes[offset..])];
            // Non-blocking socket: a full send buffer refuses it, and it is dropped.
            if sendmsg(s.rtp.as_raw_fd(), &iov, &[], MsgFlags::MSG_DONTWAIT, Some(&dest)).is_err() {
                rtx.counters.retransmitted = rtx.counters.retransmitted.saturating_sub(1);
                s.reader.dropped += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtx_ssrc_differs_from_the_media_ssrc() {
        for ssrc in [0u32, 1, 0x1234_5678, u32::MAX, 0x5821_5254] {
            assert_ne!(rtx_ssrc(ssrc), ssrc);
        }
    }
}
