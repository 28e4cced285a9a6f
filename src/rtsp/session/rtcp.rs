//! A session's RTCP from its client: reception reports (loss, jitter, RTT) and feedback (NACK,
//! PLI, FIR).
//!
//! RTT (RFC 3550 §6.4.1): a report block's LSR is the middle 32 bits of the NTP timestamp of the
//! last sender report the client got, and DLSR how long it held the report (1/65536 s). The
//! core keeps, per stream, the last [`SR_HISTORY`] reports the loop sent (NTP middle bits and
//! the core's `now` when sent), so `RTT = now − sent_at(LSR) − DLSR` is the RFC's
//! `now_ntp − LSR − DLSR` on the monotonic clock: a wall clock step between report and answer
//! cannot skew it, and an LSR we never sent gives no figure.
//!
//! Invariants: a malformed compound changes nothing of the session (not even `last_seen`);
//! report blocks and feedback about an SSRC other than the session's stream are ignored (a
//! receiver of retransmissions reports on the RTX SSRC too); figures saturate, never wrap or
//! panic.

use core::time::Duration;

use super::{Server, Session, SessionState};
use crate::rtp::rtcp::{parse_compound, RtcpPacket};
use crate::time::Instant;

/// Sender reports remembered per stream for RTT (one a second: reports up to this many seconds
/// old still give a figure).
pub const SR_HISTORY: usize = 8;

/// What a client's RTCP asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Feedback {
    /// A PLI or FIR about the session's stream: its encoder should send an IDR.
    pub keyframe: bool,
    /// Generic NACKs about the session's stream: the loop walks them with
    /// [`crate::rtp::feedback::nacked_seqs`].
    pub nacks: bool,
}

/// NTP short format (1/65536 s) to a duration.
fn from_ntp_short(v: u32) -> Duration {
    Duration::from_micros((u64::from(v) * 1_000_000) >> 16)
}

impl<S: AsRef<[Session]> + AsMut<[Session]>> Server<'_, S> {
    /// The loop sent stream `stream` a sender report with this NTP timestamp at `now`.
    pub fn note_sender_report(&mut self, stream: usize, ntp: u64, now: Instant) {
        let now = self.clamp_now(now);
        let (Some(ring), Some(next)) = (self.sr_sent.get_mut(stream), self.sr_next.get_mut(stream)) else {
            return;
        };
        ring[*next] = ((ntp >> 16) as u32, now);
        *next = (*next + 1) % SR_HISTORY;
    }

    /// A client's RTCP for `slot` (UDP from its RTCP port, or its interleaved RTCP channel).
    /// Receiver reports refresh the session and update its reception figures; feedback about
    /// its stream is counted and returned.
    pub fn handle_rtcp(&mut self, slot: usize, data: &[u8], now: Instant) -> Feedback {
        let now = self.clamp_now(now);
        let mut fb = Feedback::default();
        let Some(s) = self.sessions.as_ref().get(slot) else {
            return fb;
        };
        if s.state == SessionState::Free || parse_compound(data).any(|p| p.is_err()) {
            return fb;
        }
        let (stream, ssrc) = (s.stream, s.media_ssrc);
        let history = self.sr_sent.get(stream).copied();
        let s = &mut self.sessions.as_mut()[slot];
        let r = &mut s.reception;
        for pkt in parse_compound(data).flatten() {
            match pkt {
                RtcpPacket::ReceiverReport { blocks, .. } | RtcpPacket::SenderReport { blocks, .. } => {
                    // Only the block about the stream's own SSRC: a receiver that was sent
                    // retransmissions also reports on the RTX SSRC (GStreamer does), whose
                    // sequence numbers and loss say nothing about the stream.
                    for b in blocks.filter(|b| b.ssrc == ssrc) {
                        r.reports = r.reports.saturating_add(1);
                        r.fraction_lost = b.fraction_lost;
                        r.cumulative_lost = b.cumulative_lost;
                        r.jitter = b.jitter;
                        r.highest_sequence = b.highest_sequence;
                        let sent = history.as_ref().and_then(|h| {
                            h.iter().find(|&&(mid, at)| b.last_sr != 0 && mid == b.last_sr && at > Instant::ZERO)
                        });
                        if let Some(&(_, at)) = sent {
                            // Negative (the client's DLSR rounded up): zero.
                            let rtt = now.saturating_since(at).saturating_sub(from_ntp_short(b.delay_since_last_sr));
                            r.rtt_us = Some(rtt.as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                }
                RtcpPacket::Nack { media_ssrc, .. } if media_ssrc == ssrc => {
                    r.nacks = r.nacks.saturating_add(1);
                    fb.nacks = true;
                }
                RtcpPacket::Pli { media_ssrc, .. } if media_ssrc == ssrc => {
                    r.plis = r.plis.saturating_add(1);
                    fb.keyframe = true;
                }
                RtcpPacket::Fir { entries, .. } if entries.clone().any(|(e, _)| e == ssrc) => {
                    r.firs = r.firs.saturating_add(1);
                    fb.keyframe = true;
                }
                _ => {}
            }
        }
        s.last_seen = now;
        fb
    }
}
