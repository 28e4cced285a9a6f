//! One UDP sender's use of UDP GSO (generic segmentation offload): a session slot's RTP socket,
//! the push destination, or the multicast group.
//!
//! The fan-out sends the same ring packets to every client; most packets of an H.264 access
//! unit are FU-A fragments of one size, so [`sys::send_packets`] sends each run of them as one
//! GSO message (one pass through the stack, cut into the same datagrams on the way out) instead
//! of one message per packet.
//!
//! Invariants:
//! - GSO is asked for only when the kernel has it ([`kernel_gso`], probed once at start: a
//!   kernel before 4.18 would ignore the request and send a run as one oversized datagram).
//! - When the kernel refuses a GSO message for this sender (route MTU, no checksum offload,
//!   IPsec; see [`sys::Sent::gso_refused`]), this sender stops asking, logs one line, and sends
//!   the refused packets and everything after as plain datagrams at once: nothing is lost to the
//!   switch. A session slot asks again for its next session ([`UdpTx::new_destination`]): a new
//!   client may be on another route.
//! - [`UdpTx::send`] returns exactly how many of the packets the kernel took (a prefix): the
//!   caller counts the rest as dropped, never queues them. No allocation (but the one log line).

use std::net::{SocketAddr, UdpSocket};

use crate::sys;

/// Probes the kernel once for UDP GSO, with one log line.
pub(super) fn kernel_gso() -> bool {
    let probe = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .or_else(|_| UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)))
        .and_then(|s| sys::udp_gso_probe(&s));
    match probe {
        Ok(()) => {
            log::info!("UDP GSO: on (runs of equal-size RTP packets go as one UDP_SEGMENT send)");
            true
        }
        Err(e) => {
            log::info!("UDP GSO: off, the kernel does not have it ({e}); one datagram per send");
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct UdpTx {
    /// The kernel has GSO.
    kernel: bool,
    /// Ask for GSO on this sender now.
    gso: bool,
    /// Since start: GSO messages the kernel took, the packets in them, and packets sent as
    /// plain datagrams.
    pub(super) gso_messages: u64,
    pub(super) gso_packets: u64,
    pub(super) datagrams: u64,
}

impl UdpTx {
    pub(super) fn new(kernel_gso: bool) -> UdpTx {
        UdpTx { kernel: kernel_gso, gso: kernel_gso, gso_messages: 0, gso_packets: 0, datagrams: 0 }
    }

    /// The sender gets a new destination: try GSO again, when the kernel has it.
    pub(super) fn new_destination(&mut self) {
        self.gso = self.kernel;
    }

    /// The same sender's state with zero counts, for a fan-out thread (see `fanout`).
    pub(super) fn detached(&self) -> UdpTx {
        UdpTx { gso_messages: 0, gso_packets: 0, datagrams: 0, ..*self }
    }

    /// Takes back what a [`UdpTx::detached`] copy did: its counts and GSO state.
    pub(super) fn merge(&mut self, part: &UdpTx) {
        self.gso = part.gso;
        self.gso_messages += part.gso_messages;
        self.gso_packets += part.gso_packets;
        self.datagrams += part.datagrams;
    }

    /// Whether GSO is asked for on this sender now.
    #[cfg(test)]
    pub(super) fn gso(&self) -> bool {
        self.gso
    }

    /// Sends `packets` (at most [`sys::BATCH`]) to `dest`; returns how many the kernel took.
    pub(super) fn send(&mut self, sock: &UdpSocket, dest: &SocketAddr, packets: &[&[u8]]) -> usize {
        let s = sys::send_packets(sock, dest, packets, self.gso);
        self.count(&s);
        let mut taken = s.packets;
        if let Some(e) = s.gso_refused {
            self.gso = false;
            let hint = if e.raw_os_error() == Some(libc::EMSGSIZE) {
                " (packets larger than the route's MTU: set mtu to the link's to avoid IP fragments)"
            } else {
                ""
            };
            log::warn!(
                "udp {dest}: the kernel refused a GSO send ({e}){hint}; sending it single datagrams from now on"
            );
            let rest = sys::send_packets(sock, dest, packets.get(taken..).unwrap_or_default(), false);
            self.count(&rest);
            taken += rest.packets;
        }
        taken
    }

    fn count(&mut self, s: &sys::Sent) {
        self.gso_messages += s.gso_messages as u64;
        self.gso_packets += s.gso_packets as u64;
        self.datagrams += (s.packets - s.gso_packets) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let dest = rx.local_addr().unwrap();
        (rx, tx, dest)
    }

    fn packets() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for (i, len) in [30usize, 12, 1200, 1200, 1200, 1200, 777, 1200, 1200, 640].into_iter().enumerate() {
            v.push((0..len).map(|b| (b as u8).wrapping_mul(7) ^ i as u8).collect());
        }
        v
    }

    fn receive(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 65536];
        (0..n)
            .map(|_| {
                let len = rx.recv(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn runs_go_as_gso_and_arrive_as_the_same_datagrams() {
        let kernel = kernel_gso();
        assert!(kernel, "this kernel has no UDP GSO");
        let (rx, tx, dest) = pair();
        let mut out = UdpTx::new(kernel);
        let pkts = packets();
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        assert_eq!(out.send(&tx, &dest, &refs), refs.len());
        assert_eq!(receive(&rx, pkts.len()), pkts);
        // [30, 12] [1200 x4, 777] [1200, 1200, 640]: three GSO messages, nothing plain.
        assert_eq!((out.gso_messages, out.gso_packets, out.datagrams), (3, 10, 0));
        assert!(out.gso());
    }

    #[test]
    fn a_refused_gso_send_falls_back_to_datagrams_without_losing_packets() {
        let (rx, tx, dest) = pair();
        // Checksums off: the kernel refuses every GSO message on this socket (EINVAL).
        sys::test_disable_udp_checksum(&tx).unwrap();
        let mut out = UdpTx::new(true);
        let pkts = packets();
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        assert_eq!(out.send(&tx, &dest, &refs), refs.len());
        assert_eq!(receive(&rx, pkts.len()), pkts);
        assert!(!out.gso());
        assert_eq!((out.gso_messages, out.datagrams), (0, 10));
        // For good on this destination; a new destination tries again.
        assert_eq!(out.send(&tx, &dest, &refs), refs.len());
        assert_eq!((out.gso_messages, out.datagrams), (0, 20));
        out.new_destination();
        assert!(out.gso());
    }

    #[test]
    fn without_kernel_gso_nothing_asks_for_it() {
        let (rx, tx, dest) = pair();
        let mut out = UdpTx::new(false);
        out.new_destination();
        let pkts = packets();
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        assert_eq!(out.send(&tx, &dest, &refs), refs.len());
        assert_eq!(receive(&rx, pkts.len()), pkts);
        assert_eq!((out.gso_messages, out.datagrams), (0, 10));
    }
}
