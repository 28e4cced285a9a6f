//! Session slots: each one a session's UDP sockets (bound at start) or its interleaved
//! connection, and its position in its stream's ring; the fan-out from the ring, client RTCP,
//! and sender reports.
//!
//! Invariants:
//! - A slot reads only its own stream's ring; a reader that fell behind the ring skips to the
//!   next IDR; a UDP send the kernel refuses is a dropped packet, never a queue.

use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ring_reader::RingReader;
use super::{udp_tx, EventLoop};
use crate::rtp::rtcp::{self, SenderReport};
use crate::rtp::rtx::Retransmitter;
use crate::rtsp::session::SessionState;
use crate::sys;

/// A session slot's sockets and fan-out position.
#[derive(Debug)]
pub(super) struct Slot {
    /// Shared with the fan-out threads (see `fanout`), which only send on it.
    pub(super) rtp: Arc<UdpSocket>,
    pub(super) rtcp: UdpSocket,
    /// The stream its session plays (index into the loop's streams).
    pub(super) stream: usize,
    /// DSCP set on `rtp` and `rtcp` now (the stream's, since its last SETUP).
    pub(super) dscp: u8,
    pub(super) playing: bool,
    /// Its position in its stream's ring and what it sent.
    pub(super) reader: RingReader,
    pub(super) conn: Option<usize>,
    pub(super) rtp_dest: Option<SocketAddr>,
    pub(super) rtcp_dest: Option<SocketAddr>,
    pub(super) channels: (u8, u8),
    pub(super) play_at: Option<Instant>,
    pub(super) peer: Option<SocketAddr>,
    /// GSO state and counters of `rtp` (kept across sessions).
    pub(super) tx: udp_tx::UdpTx,
    /// Retransmission state of an `RTP/AVPF` UDP session (see `feedback`); `None` otherwise.
    pub(super) rtx: Option<Retransmitter>,
}

impl Slot {
    pub(super) fn reset(&mut self) {
        self.playing = false;
        self.reader = RingReader::starting_at(0);
        self.conn = None;
        self.rtp_dest = None;
        self.rtcp_dest = None;
        self.play_at = None;
        self.peer = None;
        self.tx.new_destination();
        self.rtx = None;
    }
}

impl EventLoop<'_> {
    /// Sends a slot everything from its position to the ring head, as far as its transport
    /// takes it now.
    pub(super) fn pump(&mut self, slot: usize, now: Instant) {
        let s = &mut self.slots[slot];
        if !s.playing {
            return;
        }
        let ring = &self.streams[s.stream].hub.ring;
        let waited = s.reader.waiting_keyframe;
        if !s.reader.catch_up(ring) {
            return;
        }
        if let Some(t) = s.play_at.take().filter(|_| waited) {
            log::debug!(
                "slot {slot}: first IDR {:.1} ms after PLAY",
                now.saturating_duration_since(t).as_secs_f64() * 1e3
            );
        }
        match s.conn {
            None => {
                let Some(dest) = s.rtp_dest else { return };
                // The same ring bytes for every client, up to BATCH packets per sendmmsg(2).
                // Refused (full socket buffer, ICMP-reported unreachable port): dropped, never
                // queued.
                let from = s.reader.next;
                s.reader.pump_udp(ring, &s.rtp, &dest, &mut s.tx);
                if let Some(rtx) = s.rtx.as_mut() {
                    let core_now =
                        crate::time::Instant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as u64);
                    rtx.on_sent(from, s.reader.next, core_now);
                }
            }
            Some(c) => {
                let Some(conn) = self.conns[c].as_mut() else {
                    return;
                };
                if conn.dead {
                    return;
                }
                if !conn.pending.is_empty() {
                    if conn.flush(now).is_err() {
                        conn.dead = true;
                        return;
                    }
                    if !conn.pending.is_empty() {
                        return;
                    }
                }
                // `$ channel length` + packet, up to BATCH packets per writev(2), from the ring.
                let mut hdrs = [[0u8; 4]; sys::BATCH];
                while s.reader.next < ring.head() {
                    let mut n = 0;
                    let mut total = 0;
                    for (k, h) in hdrs.iter_mut().enumerate() {
                        let Some(pkt) = ring.get(s.reader.next + k as u64) else { break };
                        let len = pkt.bytes.len() as u16;
                        *h = [b'$', s.channels.0, (len >> 8) as u8, len as u8];
                        total += 4 + pkt.bytes.len();
                        n += 1;
                    }
                    let mut iov = [IoSlice::new(&[]); 2 * sys::BATCH];
                    for k in 0..n {
                        iov[2 * k] = IoSlice::new(&hdrs[k]);
                        iov[2 * k + 1] = IoSlice::new(ring.get(s.reader.next + k as u64).map_or(&[][..], |p| p.bytes));
                    }
                    match (&conn.stream).write_vectored(&iov[..2 * n]) {
                        Ok(written) if written >= total => {
                            conn.last_progress = now;
                            s.reader.sent += n as u64;
                            s.reader.bytes += (total - 4 * n) as u64;
                            s.reader.next += n as u64;
                        }
                        Ok(written) => {
                            conn.last_progress = now;
                            // Partial write: whole packets are done; keep the rest of the one cut
                            // in the middle, then wait for POLLOUT.
                            let mut left = written;
                            for k in 0..n {
                                let pkt = iov[2 * k + 1];
                                let size = 4 + pkt.len();
                                s.reader.sent += 1;
                                s.reader.bytes += pkt.len() as u64;
                                s.reader.next += 1;
                                if left >= size {
                                    left -= size;
                                    continue;
                                }
                                if left < 4 {
                                    conn.pending.extend_from_slice(&hdrs[k][left..]);
                                    conn.pending.extend_from_slice(&pkt);
                                } else {
                                    conn.pending.extend_from_slice(&pkt[left - 4..]);
                                }
                                break;
                            }
                            conn.want_write = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            conn.want_write = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            conn.dead = true;
                            break;
                        }
                    }
                }
            }
        }
        if now.saturating_duration_since(self.udp_drops_logged) > Duration::from_secs(5)
            && s.reader.dropped > 0
            && s.conn.is_none()
        {
            self.udp_drops_logged = now;
            log::warn!("slot {slot}: {} packets dropped so far (kernel send buffer full)", s.reader.dropped);
        }
    }

    pub(super) fn on_udp(&mut self, slot: usize, is_rtcp: bool, now: Instant) {
        let expected_ip = self.slots[slot].peer.map(|p| p.ip().to_canonical());
        loop {
            let sock = if is_rtcp { &self.slots[slot].rtcp } else { &self.slots[slot].rtp };
            match sock.recv_from(&mut self.rtcp_buf) {
                Ok((n, from)) => {
                    // Only the session's own client may refresh it.
                    if is_rtcp && Some(from.ip().to_canonical()) == expected_ip {
                        let core_now = self.core_now(now);
                        let fb = self.server.handle_rtcp(slot, &self.rtcp_buf[..n], core_now);
                        if fb.keyframe {
                            self.on_keyframe_request(slot, now);
                        }
                        if fb.nacks {
                            self.retransmit(slot, n, now);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or an ICMP error queued on the socket: nothing more to read.
                Err(_) => break,
            }
        }
    }

    /// Sends every stream's sender report (or, with `bye`, SR+SDES+BYE) to its playing
    /// sessions, push destination and multicast group.
    pub(super) fn send_rtcp(&mut self, now: Instant, bye: bool) {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        for si in 0..self.streams.len() {
            let st = &self.streams[si];
            let sr = SenderReport {
                ssrc: st.hub.ssrc(),
                ntp: rtcp::ntp_from_unix(wall.as_secs(), wall.subsec_nanos()),
                rtp_timestamp: st.hub.rtp_time(now),
                packet_count: st.hub.packets as u32,
                octet_count: st.hub.octets as u32,
            };
            let mut pkt = [0u8; 256];
            let written = if bye {
                rtcp::write_bye(&sr, &self.cname, &mut pkt[4..])
            } else {
                rtcp::write_sender_report(&sr, &self.cname, &mut pkt[4..])
            };
            let Ok(n) = written else { continue };
            let core_now = self.core_now(now);
            self.server.note_sender_report(si, sr.ntp, core_now);
            let st = &self.streams[si];
            if let Some(p) = st.push.as_ref().filter(|p| !p.feed.waiting_keyframe) {
                let _ = p.sock.send_to(&pkt[4..4 + n], SocketAddr::new(p.dest.ip(), p.dest.port().wrapping_add(1)));
            }
            if let Some(g) = st.group.as_ref() {
                g.send_rtcp(&pkt[4..4 + n]);
            }
            for (i, s) in self.slots.iter().enumerate() {
                if s.stream != si || !s.playing || self.server.sessions()[i].state != SessionState::Playing {
                    continue;
                }
                match (s.conn, s.rtcp_dest) {
                    (Some(c), _) => {
                        if let Some(conn) = self.conns[c].as_mut() {
                            pkt[..4].copy_from_slice(&[b'$', s.channels.1, (n >> 8) as u8, n as u8]);
                            // Only at a packet boundary: when output is pending, skip this report.
                            if conn.pending.is_empty() && conn.queue(&pkt[..4 + n]) && conn.flush(now).is_err() {
                                conn.dead = true;
                            }
                        }
                    }
                    (None, Some(dest)) => {
                        let _ = s.rtcp.send_to(&pkt[4..4 + n], dest);
                    }
                    (None, None) => {}
                }
            }
        }
    }
}
