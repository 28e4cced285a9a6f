//! One reader of a stream's packet ring: its position, and what it sent, sent in bytes and
//! dropped. Every output that reads a ring is one: session slots (UDP or interleaved TCP), push
//! mode (`rtp-dest`) and the multicast group stream.
//!
//! Invariants: a reader starts at a keyframe, and goes back to waiting for one when the ring
//! overran it (a stalled TCP reader); a batch the kernel refuses (full socket buffer) is counted
//! as dropped, never queued; no allocation.

use std::net::{SocketAddr, UdpSocket};

use super::udp_tx::UdpTx;
use crate::hub::Ring;
use crate::sys;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RingReader {
    /// Next ring index to send.
    pub(super) next: u64,
    pub(super) waiting_keyframe: bool,
    pub(super) sent: u64,
    /// RTP bytes (headers included) of the packets counted in `sent`.
    pub(super) bytes: u64,
    pub(super) dropped: u64,
}

impl RingReader {
    /// A reader that begins at the next keyframe from ring index `at`.
    pub(super) fn starting_at(at: u64) -> RingReader {
        RingReader { next: at, waiting_keyframe: true, ..RingReader::default() }
    }

    /// Moves to where sending goes on: after falling behind the ring, or while waiting for a
    /// keyframe, to the next keyframe. `false` while there is none yet (the position is then the
    /// head, so nothing older is ever sent).
    pub(super) fn catch_up(&mut self, ring: &Ring) -> bool {
        if self.next < ring.oldest() {
            self.dropped += ring.oldest() - self.next;
            self.waiting_keyframe = true;
        }
        if self.waiting_keyframe {
            match ring.next_keyframe(self.next) {
                Some(k) => {
                    self.next = k;
                    self.waiting_keyframe = false;
                }
                None => {
                    self.next = ring.head();
                    return false;
                }
            }
        }
        true
    }

    /// The same position with zero counts, for a fan-out thread (see `fanout`).
    pub(super) fn detached(&self) -> RingReader {
        RingReader { next: self.next, waiting_keyframe: self.waiting_keyframe, ..RingReader::default() }
    }

    /// Takes back what a [`RingReader::detached`] copy did: its position and counts.
    pub(super) fn merge(&mut self, part: &RingReader) {
        self.next = part.next;
        self.sent += part.sent;
        self.bytes += part.bytes;
        self.dropped += part.dropped;
    }

    /// The next packets to send, up to `batch.len()`; how many.
    pub(super) fn batch<'r>(&self, ring: &'r Ring, batch: &mut [&'r [u8]]) -> usize {
        let mut n = 0;
        while n < batch.len() && self.next + (n as u64) < ring.head() {
            let Some(pkt) = ring.get(self.next + n as u64) else { break };
            batch[n] = pkt.bytes;
            n += 1;
        }
        n
    }

    /// `batch` was handed over; the first `sent` of it went out, the rest was refused.
    pub(super) fn advance(&mut self, batch: &[&[u8]], sent: usize) {
        self.sent += sent as u64;
        self.bytes += batch[..sent].iter().map(|p| p.len() as u64).sum::<u64>();
        self.dropped += (batch.len() - sent) as u64;
        self.next += batch.len() as u64;
    }

    /// Sends everything from its position to the ring head to `dest`, in `sendmmsg` batches
    /// (runs of equal-size packets as one UDP GSO message each, where `tx` allows: see `udp_tx`).
    pub(super) fn pump_udp(&mut self, ring: &Ring, sock: &UdpSocket, dest: &SocketAddr, tx: &mut UdpTx) {
        if !self.catch_up(ring) {
            return;
        }
        let mut batch: [&[u8]; sys::BATCH] = [&[]; sys::BATCH];
        while self.next < ring.head() {
            let n = self.batch(ring, &mut batch);
            if n == 0 {
                break;
            }
            let sent = tx.send(sock, dest, &batch[..n]);
            self.advance(&batch[..n], sent);
        }
    }
}
