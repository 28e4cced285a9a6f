//! RTSP UDP multicast: ONE group stream, whatever the number of multicast sessions.
//!
//! The RTSP core gives each `RTP/AVP;multicast` receiver a session (a slot, keepalives, expiry,
//! TEARDOWN) and counts the playing ones ([`Server::multicast_playing`]); this module is the
//! group's single reader of the packet ring. While at least one multicast session plays, every
//! packet goes once to `group:port` and a sender report to `group:port+1` every second; when the
//! last one stops, the group stream stops. A (re)started group stream begins at a keyframe
//! (SPS/PPS/IDR: the loop asks a live encoder for one when a receiver joins, as for unicast).
//!
//! The socket is bound at start to an ephemeral port (no receiver cares about the source port),
//! with `IP_MULTICAST_TTL`/`IPV6_MULTICAST_HOPS` = `multicast-ttl`, `IP_MULTICAST_LOOP` on (a
//! receiver on the camera itself, or a test, gets the stream too), the `dscp` marking and, with
//! `multicast-interface`, `IP_MULTICAST_IF`. Receivers' RTCP receiver reports go to the group's
//! RTCP port, which is not bound here: they are ignored, and multicast sessions stay alive with
//! RTSP keepalives (OPTIONS/GET_PARAMETER, which ffmpeg, GStreamer and VLC send) like any other.
//!
//! [`Server::multicast_playing`]: crate::rtsp::session::Server::multicast_playing

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use super::ring_reader::RingReader;
use super::udp_tx::UdpTx;
use crate::config::Multicast;
use crate::hub::Ring;
use crate::sys;

#[derive(Debug)]
pub(super) struct Group {
    sock: UdpSocket,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    /// At least one multicast session is playing.
    active: bool,
    feed: RingReader,
    /// GSO state and counters of `sock` (kept across group stream restarts).
    pub(super) tx: UdpTx,
}

/// What the RTSP core answers multicast SETUPs with.
impl Group {
    /// Binds and configures the group's socket.
    pub(super) fn open(m: &Multicast, dscp: u8, kernel_gso: bool) -> io::Result<Group> {
        use nix::sys::socket::{setsockopt, sockopt};
        let ipv6 = m.group.is_ipv6();
        let any: IpAddr = if ipv6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
        let sock = UdpSocket::bind((any, 0))?;
        sock.set_nonblocking(true)?;
        if ipv6 {
            setsockopt(&sock, sockopt::Ipv6MulticastHops, &i32::from(m.ttl)).map_err(io::Error::from)?;
            sock.set_multicast_loop_v6(true)?;
        } else {
            sock.set_multicast_ttl_v4(u32::from(m.ttl))?;
            sock.set_multicast_loop_v4(true)?;
        }
        let scope = match &m.interface {
            Some((_, index)) => {
                sys::set_multicast_interface(&sock, ipv6, *index)?;
                *index
            }
            None => 0,
        };
        super::set_dscp(&sock, ipv6, dscp)?;
        let at = |port: u16| match m.group {
            IpAddr::V6(g) => SocketAddr::V6(SocketAddrV6::new(g, port, 0, scope)),
            g => SocketAddr::new(g, port),
        };
        Ok(Group {
            sock,
            rtp: at(m.port),
            rtcp: at(m.port.wrapping_add(1)),
            active: false,
            feed: RingReader::starting_at(0),
            tx: UdpTx::new(kernel_gso),
        })
    }

    pub(super) fn rtp_dest(&self) -> SocketAddr {
        self.rtp
    }

    /// Starts or stops the group stream for `playing` multicast sessions. A start begins at the
    /// next keyframe from now.
    pub(super) fn set_playing(&mut self, playing: usize, ring: &Ring) {
        let on = playing > 0;
        if on == self.active {
            return;
        }
        self.active = on;
        if on {
            self.feed = RingReader::starting_at(ring.head());
            log::info!("multicast: group stream to {} started (multicast sessions playing: {playing})", self.rtp);
        } else {
            log::info!(
                "multicast: group stream to {} stopped (no multicast session plays); sent {} packets, dropped {}",
                self.rtp,
                self.feed.sent,
                self.feed.dropped
            );
        }
    }

    /// The source was rebuilt: its first IDR is where the group stream continues.
    pub(super) fn restart_at_keyframe(&mut self) {
        self.feed.waiting_keyframe = true;
    }

    /// Sends every packet from the group's position to the ring head, once. No allocation.
    pub(super) fn pump(&mut self, ring: &Ring) {
        if self.active {
            self.feed.pump_udp(ring, &self.sock, &self.rtp, &mut self.tx);
        }
    }

    /// Sends an RTCP packet (SR, or SR+SDES+BYE) to the group's RTCP port while the group stream
    /// runs and has begun.
    pub(super) fn send_rtcp(&self, pkt: &[u8]) {
        if self.active && !self.feed.waiting_keyframe {
            let _ = self.sock.send_to(pkt, self.rtcp);
        }
    }

    /// (packets sent, dropped) since the group stream started.
    pub(super) fn counters(&self) -> (u64, u64) {
        (self.feed.sent, self.feed.dropped)
    }
}
