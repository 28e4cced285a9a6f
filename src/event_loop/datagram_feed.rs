//! A reader of the packet ring that sends every packet once to one fixed UDP destination: push
//! mode (`--rtp-dest`) and the multicast group stream.
//!
//! Invariants: it starts at a keyframe (and goes back to waiting for one when the ring overran
//! it); a batch the kernel refuses (full socket buffer) is counted as dropped, never queued; no
//! allocation.

use std::net::{SocketAddr, UdpSocket};

use super::udp_tx::UdpTx;
use crate::hub::Ring;
use crate::sys;

#[derive(Debug)]
pub(super) struct DatagramFeed {
    /// Next ring index to send.
    pub(super) next: u64,
    pub(super) waiting_keyframe: bool,
    pub(super) sent: u64,
    pub(super) dropped: u64,
}

impl DatagramFeed {
    /// A feed that begins at the next keyframe from ring index `at`.
    pub(super) fn starting_at(at: u64) -> DatagramFeed {
        DatagramFeed { next: at, waiting_keyframe: true, sent: 0, dropped: 0 }
    }

    /// Sends everything from its position to the ring head to `dest`, in `sendmmsg` batches
    /// (with GSO where `tx` allows).
    pub(super) fn pump(&mut self, ring: &Ring, sock: &UdpSocket, dest: &SocketAddr, tx: &mut UdpTx) {
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
                    return;
                }
            }
        }
        let mut batch: [&[u8]; sys::BATCH] = [&[]; sys::BATCH];
        while self.next < ring.head() {
            let mut n = 0;
            while n < sys::BATCH && self.next + (n as u64) < ring.head() {
                let Some(pkt) = ring.get(self.next + n as u64) else { break };
                batch[n] = pkt.bytes;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let sent = tx.send(sock, dest, &batch[..n]);
            self.sent += sent as u64;
            self.dropped += (n - sent) as u64;
            self.next += n as u64;
        }
    }
}
