//! WebRTC viewers (WHEP) on str0m: one `Rtc` per session, driven by the loop like every other
//! core (`handle_input` with the loop's `now`, then `poll_output` until it says `Timeout`).
//!
//! ```text
//!  POST /PATH/whep ─▶ offer() ─▶ Rtc (ICE lite, host candidates, H.264 42e01f pm=1 only) ─▶ 201 + answer
//!  UDP socket(s)  ─▶ on_socket() ─▶ the Rtc that accepts the datagram ─▶ drain
//!  access unit    ─▶ push_unit() ─▶ Writer::write on every connected session of its stream ─▶ drain
//!  deadline       ─▶ on_timers() ─▶ Input::Timeout ─▶ drain; reap ended sessions
//!  drain: Transmit → send_to (a refused send is a dropped packet), Event → state, Timeout → deadline
//! ```
//!
//! Invariants:
//! - Fixed slots (`max-webrtc-sessions`): an offer when every slot is taken is `503`; a session
//!   that has not connected within [`CONNECT_TIMEOUT`] or whose ICE disconnected is reaped.
//! - Every mutation of an `Rtc` is followed by a complete drain (str0m's one rule), inside
//!   the same call; nothing here reads the clock.
//! - No re-encode: the stream's access units go to str0m's H.264 packetizer as they are
//!   (packetization-mode 1, sized to str0m's MTU, SRTP per session). An IDR that lacks SPS/PPS
//!   gets the hub's prepended, so every keyframe decodes alone.
//! - Fast join: a session sends nothing until an IDR; when it connects (and on every PLI/FIR
//!   from the browser) its stream is asked for an IDR through the stream's `IdrLimiter`.
//! - Latency first: no pacer (no bandwidth estimation), so str0m queues nothing beyond the access
//!   unit being written; a send the kernel refuses is dropped and repaired by NACK (str0m keeps
//!   a resend buffer) or by the next IDR (PLI).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

pub(super) use super::webrtc_api::{PeerStatus, Refusal, Unit};
use crate::media::h264::{annex_b, nal_type, nal_unit_type};

/// A session that has not connected (ICE + DTLS) this long after its offer is ended.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest datagram read (ICE, DTLS and SRTCP from browsers are well below it).
const RECV_BUFFER: usize = 2048;
/// Payload types of our one codec in str0m's table (an answer uses the offer's numbers).
const H264_PT: u8 = 102;
const H264_RTX_PT: u8 = 103;
/// Constrained baseline, level 3.1: what every browser decodes (see README, "In a browser").
const PROFILE_LEVEL_ID: u32 = 0x42e01f;

#[derive(Debug)]
struct Peer {
    id: u64,
    stream: usize,
    rtc: Rtc,
    mid: Option<Mid>,
    pt: Option<Pt>,
    connected: bool,
    /// The first IDR was written: from here on every access unit is.
    started: bool,
    dead: bool,
    created: Instant,
    deadline: Instant,
    peer: Option<SocketAddr>,
    frames: u64,
    bytes: u64,
    keyframe_requests: u64,
}

/// The WebRTC sessions, their sockets and what the loop must do for them.
#[derive(Debug)]
pub(super) struct WebRtc {
    socks: Vec<(UdpSocket, SocketAddr)>,
    peers: Vec<Option<Peer>>,
    buf: Box<[u8]>,
    /// Per stream: a session connected or asked for a keyframe; the loop asks the stream's
    /// `IdrLimiter` ([`WebRtc::take_idr_requests`]).
    idr_wanted: Vec<bool>,
    /// Sessions created and ended since start.
    pub(super) created: u64,
    pub(super) ended: u64,
    /// The AU scratch when an IDR needs SPS/PPS prepended.
    unit: Vec<u8>,
}

impl WebRtc {
    /// Binds one UDP socket per address at `port`; `slots` sessions at most. Fails when no
    /// address could be bound.
    pub(super) fn new(addrs: &[IpAddr], port: u16, slots: usize, streams: usize, dscp: u8) -> io::Result<WebRtc> {
        let mut socks = Vec::new();
        let mut last_err = None;
        for ip in addrs {
            match UdpSocket::bind((*ip, port)) {
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    let _ = super::set_dscp(&s, ip.is_ipv6(), dscp);
                    let local = s.local_addr()?;
                    socks.push((s, local));
                }
                Err(e) => {
                    log::warn!("webrtc: cannot bind UDP {ip}:{port}: {e}; no candidate on it");
                    last_err = Some(e);
                }
            }
        }
        if socks.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to bind")));
        }
        Ok(WebRtc {
            socks,
            peers: (0..slots).map(|_| None).collect(),
            buf: vec![0; RECV_BUFFER].into_boxed_slice(),
            idr_wanted: vec![false; streams],
            created: 0,
            ended: 0,
            unit: Vec::new(),
        })
    }

    /// The host candidates offered to browsers.
    pub(super) fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.socks.iter().map(|(_, a)| *a)
    }

    /// `(socket index, fd)` for the poll set.
    pub(super) fn fds(&self) -> impl Iterator<Item = (usize, RawFd)> + '_ {
        self.socks.iter().enumerate().map(|(i, (s, _))| (i, s.as_raw_fd()))
    }

    /// Sessions of `stream` (connected or not).
    pub(super) fn sessions(&self, stream: usize) -> usize {
        self.peers.iter().flatten().filter(|p| p.stream == stream && !p.dead).count()
    }

    pub(super) fn slots(&self) -> usize {
        self.peers.len()
    }

    pub(super) fn status(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.peers.iter().flatten().filter(|p| !p.dead).map(|p| PeerStatus {
            id: p.id,
            stream: p.stream,
            peer: p.peer,
            connected: p.connected,
            frames: p.frames,
            bytes: p.bytes,
            keyframe_requests: p.keyframe_requests,
        })
    }

    /// Accepts a WHEP offer for `stream`: the session's id and the answer SDP, or why not.
    pub(super) fn offer(&mut self, stream: usize, sdp: &[u8], id: u64, now: Instant) -> Result<(u64, String), Refusal> {
        let Some(slot) = self.peers.iter().position(Option::is_none) else {
            return Err((503, "every WebRTC slot is taken (max-webrtc-sessions)".into()));
        };
        let text = std::str::from_utf8(sdp).map_err(|_| (400, "the offer is not UTF-8".to_owned()))?;
        let offer = SdpOffer::from_sdp_string(text).map_err(|e| (400, format!("not an SDP offer: {e}")))?;
        let mut config = RtcConfig::new().set_ice_lite(true).clear_codecs();
        config.codec_config().add_h264(H264_PT.into(), Some(H264_RTX_PT.into()), true, PROFILE_LEVEL_ID);
        let mut rtc = config.build(now);
        for &(_, addr) in &self.socks {
            match Candidate::host(addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => log::warn!("webrtc: {addr} is not a usable candidate: {e}"),
            }
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| (400, format!("offer not acceptable: {e}")))?;
        let answer = answer.to_sdp_string();
        let sending = sending_h264(&answer).filter(|(mid, _)| rtc.media(Mid::from(*mid)).is_some());
        let Some((mid, pt)) = sending else {
            return Err((
                400,
                "the offer has no receiving video that takes H.264 constrained baseline (42e01f, packetization-mode=1)"
                    .into(),
            ));
        };
        let mut peer = Peer {
            id,
            stream,
            mid: Some(Mid::from(mid)),
            pt: Some(Pt::from(pt)),
            rtc,
            connected: false,
            started: false,
            dead: false,
            created: now,
            deadline: now,
            peer: None,
            frames: 0,
            bytes: 0,
            keyframe_requests: 0,
        };
        drain(&mut peer, &self.socks, &mut self.idr_wanted, now);
        self.peers[slot] = Some(peer);
        self.created += 1;
        Ok((id, answer))
    }

    /// Ends session `id` of `stream`; `false` when there is none.
    pub(super) fn end(&mut self, stream: usize, id: u64) -> bool {
        let Some(slot) = self.peers.iter().position(|p| p.as_ref().is_some_and(|p| p.id == id && p.stream == stream))
        else {
            return false;
        };
        if let Some(mut p) = self.peers[slot].take() {
            p.rtc.disconnect();
            self.ended += 1;
            log::info!("webrtc {id:016x}: ended by DELETE after {} frames", p.frames);
        }
        true
    }

    /// Reads every datagram waiting on socket `i` and hands each to the session it belongs to.
    pub(super) fn on_socket(&mut self, i: usize, now: Instant) {
        let Some((sock, local)) = self.socks.get(i) else { return };
        loop {
            let (n, source) = match sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let Ok(receive) = Receive::new(Protocol::Udp, source, *local, &self.buf[..n]) else { continue };
            let input = Input::Receive(now, receive);
            let Some(p) = self.peers.iter_mut().flatten().find(|p| !p.dead && p.rtc.accepts(&input)) else {
                continue;
            };
            if let Err(e) = p.rtc.handle_input(input) {
                log::info!("webrtc {:016x}: {e}; ending the session", p.id);
                p.dead = true;
                continue;
            }
            p.peer.get_or_insert(source);
            drain(p, &self.socks, &mut self.idr_wanted, now);
        }
    }

    /// Writes one access unit of `stream` to each of its connected sessions (from its first IDR
    /// on). The unit's SPS/PPS are prepended to an IDR that lacks them.
    pub(super) fn push_unit(&mut self, stream: usize, u: &Unit<'_>, now: Instant) {
        let Unit { data, idr, media_time: rtp_time, capture, sps, pps } = *u;
        if !self.peers.iter().flatten().any(|p| p.stream == stream && p.connected && !p.dead) {
            return;
        }
        let mut has = (false, false);
        for nal in annex_b(data) {
            match nal_unit_type(nal) {
                Some(nal_type::SPS) => has.0 = true,
                Some(nal_type::PPS) => has.1 = true,
                _ => {}
            }
        }
        self.unit.clear();
        if idr {
            for (present, ps) in [(has.0, sps), (has.1, pps)] {
                if !present && !ps.is_empty() {
                    self.unit.extend_from_slice(&[0, 0, 0, 1]);
                    self.unit.extend_from_slice(ps);
                }
            }
        }
        self.unit.extend_from_slice(data);
        let unit: Arc<[u8]> = Arc::from(&self.unit[..]);
        let time = MediaTime::new(rtp_time, Frequency::NINETY_KHZ);
        for p in self.peers.iter_mut().flatten() {
            if p.stream != stream || !p.connected || p.dead || !(p.started || idr) {
                continue;
            }
            let (Some(mid), Some(pt)) = (p.mid, p.pt) else { continue };
            let Some(writer) = p.rtc.writer(mid) else { continue };
            if let Err(e) = writer.write(pt, capture, time, unit.clone()) {
                log::info!("webrtc {:016x}: write: {e}; ending the session", p.id);
                p.dead = true;
                continue;
            }
            if !p.started {
                log::info!(
                    "webrtc {:016x}: first frame (an IDR) {} ms after the offer",
                    p.id,
                    capture.saturating_duration_since(p.created).as_millis()
                );
            }
            p.started = true;
            p.frames += 1;
            p.bytes += unit.len() as u64;
            drain(p, &self.socks, &mut self.idr_wanted, now);
        }
    }

    /// The streams a session asked an IDR of since the last call.
    pub(super) fn take_idr_requests(&mut self) -> impl Iterator<Item = usize> + '_ {
        self.idr_wanted.iter_mut().enumerate().filter_map(|(s, w)| std::mem::take(w).then_some(s))
    }

    /// The earliest time a session needs [`WebRtc::on_timers`].
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .map(|p| if p.connected { p.deadline } else { p.deadline.min(p.created + CONNECT_TIMEOUT) })
            .min()
    }

    /// Feeds due timeouts to their sessions and reaps the ended ones.
    pub(super) fn on_timers(&mut self, now: Instant) {
        for p in self.peers.iter_mut().flatten() {
            if !p.dead && now >= p.deadline {
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    log::info!("webrtc {:016x}: {e}; ending the session", p.id);
                    p.dead = true;
                }
                drain(p, &self.socks, &mut self.idr_wanted, now);
            }
            if !p.connected && now.saturating_duration_since(p.created) >= CONNECT_TIMEOUT {
                log::info!("webrtc {:016x}: not connected within {CONNECT_TIMEOUT:?}; ending the session", p.id);
                p.dead = true;
            }
        }
        for slot in &mut self.peers {
            if slot.as_ref().is_some_and(|p| p.dead || !p.rtc.is_alive()) {
                if let Some(p) = slot.take() {
                    log::info!("webrtc {:016x}: ended after {} frames", p.id, p.frames);
                }
                self.ended += 1;
            }
        }
    }
}

/// The first video section of an answer that sends H.264: its `a=mid` and the payload type.
fn sending_h264(answer: &str) -> Option<(&str, u8)> {
    for section in answer.split("\r\nm=").skip(1) {
        let mut lines = section.split("\r\n");
        let m = lines.next().unwrap_or("");
        // `video PORT ...`: port 0 is a rejected section.
        if !m.starts_with("video ") || m.split(' ').nth(1) == Some("0") {
            continue;
        }
        let (mut mid, mut sends, mut pt) = (None, false, None);
        for l in lines {
            if let Some(v) = l.strip_prefix("a=mid:") {
                mid = Some(v.trim());
            } else if l == "a=sendonly" || l == "a=sendrecv" {
                sends = true;
            } else if let Some((n, codec)) = l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' ')) {
                if pt.is_none() && codec.to_ascii_uppercase().starts_with("H264/") {
                    pt = n.parse::<u8>().ok();
                }
            }
        }
        if let (Some(mid), true, Some(pt)) = (mid, sends, pt) {
            return Some((mid, pt));
        }
    }
    None
}

/// Drains a session's output: datagrams go out at once (from the socket of their source
/// address; a refused send is a dropped packet), events update its state, the timeout is kept.
fn drain(p: &mut Peer, socks: &[(UdpSocket, SocketAddr)], idr_wanted: &mut [bool], now: Instant) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.deadline = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                if let Some((s, _)) = socks.iter().find(|(_, a)| *a == t.source).or(socks.first()) {
                    let _ = s.send_to(&t.contents, t.destination);
                }
            }
            Ok(Output::Event(e)) => on_event(p, e, idr_wanted, now),
            Err(e) => {
                log::info!("webrtc {:016x}: {e}; ending the session", p.id);
                p.dead = true;
                return;
            }
        }
    }
}

fn on_event(p: &mut Peer, e: Event, idr_wanted: &mut [bool], now: Instant) {
    log::trace!("webrtc {:016x}: {e:?}", p.id);
    match e {
        Event::Connected => {
            p.connected = true;
            log::info!(
                "webrtc {:016x}: connected (ICE + DTLS) in {} ms{}",
                p.id,
                now.saturating_duration_since(p.created).as_millis(),
                p.peer.map_or_else(String::new, |a| format!(" with {a}"))
            );
            if let Some(w) = idr_wanted.get_mut(p.stream) {
                *w = true;
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            log::info!("webrtc {:016x}: ICE disconnected", p.id);
            p.dead = true;
        }
        Event::KeyframeRequest(_) => {
            p.keyframe_requests += 1;
            if let Some(w) = idr_wanted.get_mut(p.stream) {
                *w = true;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium 156's WHEP offer (a recvonly video transceiver), verbatim.
    const CHROMIUM_OFFER: &str = include_str!("../../tests/data/chromium-whep-offer.sdp");

    fn server(slots: usize) -> WebRtc {
        WebRtc::new(&["127.0.0.1".parse().unwrap()], 0, slots, 1, 0).unwrap()
    }

    #[test]
    fn chromium_offer_gets_an_h264_sendonly_answer() {
        let mut w = server(1);
        let now = Instant::now();
        let (id, answer) = w.offer(0, CHROMIUM_OFFER.as_bytes(), 7, now).unwrap();
        assert_eq!(id, 7);
        eprintln!("{answer}");
        assert!(answer.contains("a=sendonly"), "{answer}");
        assert!(answer.contains("H264/90000") && answer.contains("profile-level-id=42e01f"), "{answer}");
        assert!(answer.contains("packetization-mode=1") && answer.contains("a=candidate:"), "{answer}");
    }
}
