//! Publishing a stream to an upstream RTSP server (`publish=rtsp://…`): the loop's side of the
//! sans-IO client in [`crate::rtsp::client`]. One TCP connection per publishing stream, RTP
//! interleaved on channel 0 from the stream's packet ring (one more ring reader).
//!
//! ```text
//!  Waiting ─retry_at─▶ Resolving (a name: getaddrinfo on a helper thread) ─▶ Connecting (non-blocking)
//!     ▲                                                                         │ POLLOUT, SO_ERROR 0
//!     └── backoff 0.5 s … 30 s ◀── any error, EOF, timeout ◀── Handshake (OPTIONS/ANNOUNCE/SETUP/RECORD)
//!                                                               ─▶ Recording: ring packets as `$ 0 len RTP`
//! ```
//!
//! Invariants:
//! - Nothing here blocks the loop: connect is non-blocking, a host name is resolved on a helper
//!   thread, every write is non-blocking, and a handshake step that takes longer than
//!   [`STEP_TIMEOUT`] ends the attempt.
//! - A slow or dead upstream never holds local clients back: at most one partly written packet
//!   is kept (TCP framing needs its end); a packet the socket does not take whole is dropped and
//!   the reader skips to the next IDR. Nothing is queued.
//! - Recording starts at an IDR (the reader waits for a keyframe start, and the stream's encoder
//!   is asked for one through its `IdrLimiter`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};

use super::ring_reader::RingReader;
use super::EventLoop;
use crate::hub::Hub;
use crate::limits;
use crate::rtsp::client::{self, Parsed, Progress, PublishUrl, Publisher, Step};
use crate::rtsp::sdp::{write_sdp, SdpParams};
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::wbuf::WBuf;

/// A handshake step (or the connect) that takes longer ends the attempt.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// OPTIONS keep-alive while recording (servers time sessions out after 60 s by default).
const KEEPALIVE: Duration = Duration::from_secs(20);
const INBUF: usize = client::MAX_RESPONSE_HEAD + client::MAX_RESPONSE_BODY + 4 + 65536;

enum State {
    Waiting { retry_at: Instant },
    Resolving { rx: mpsc::Receiver<io::Result<Vec<SocketAddr>>>, since: Instant },
    Connecting { sock: TcpStream, since: Instant },
    Handshake { sock: TcpStream, since: Instant, sent: bool },
    Recording { sock: TcpStream, keepalive_at: Instant },
}

/// One stream's publisher.
pub(super) struct Publish {
    url: PublishUrl,
    state: State,
    client: Publisher,
    backoff: Duration,
    inbuf: Box<[u8]>,
    inlen: usize,
    /// Output not yet taken by the socket: one request, or the tail of one packet.
    out: Vec<u8>,
    out_pos: usize,
    reader: RingReader,
    pub(super) connects: u64,
    pub(super) recording_since: Option<Instant>,
    pub(super) last_error: String,
    dscp: u8,
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish").field("url", &format_args!("{}", self.url)).finish_non_exhaustive()
    }
}

/// A non-blocking TCP connect to `addr` that is under way (or done).
fn connect_nonblocking(addr: SocketAddr, dscp: u8) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd: OwnedFd = socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .map_err(io::Error::from)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let sock = TcpStream::from(fd);
    let _ = sock.set_nodelay(true);
    let _ = socket::setsockopt(&sock, socket::sockopt::SndBuf, &limits::TCP_SEND_BUFFER);
    let _ = super::set_dscp(&sock, addr.is_ipv6(), dscp);
    Ok(sock)
}

impl Publish {
    pub(super) fn new(url: PublishUrl, dscp: u8, now: Instant) -> Publish {
        Publish {
            url,
            state: State::Waiting { retry_at: now },
            client: Publisher::new(),
            backoff: BACKOFF_MIN,
            inbuf: vec![0; INBUF].into_boxed_slice(),
            inlen: 0,
            out: Vec::with_capacity(limits::MAX_RTP_PACKET + 4096),
            out_pos: 0,
            reader: RingReader::starting_at(0),
            connects: 0,
            recording_since: None,
            last_error: String::new(),
            dscp,
        }
    }

    pub(super) fn url(&self) -> &PublishUrl {
        &self.url
    }

    pub(super) fn counters(&self) -> (u64, u64) {
        (self.reader.sent, self.reader.dropped)
    }

    pub(super) fn state_name(&self) -> &'static str {
        match self.state {
            State::Waiting { .. } => "waiting",
            State::Resolving { .. } => "resolving",
            State::Connecting { .. } => "connecting",
            State::Handshake { .. } => "handshake",
            State::Recording { .. } => "recording",
        }
    }

    /// `(fd, events)` for the poll set.
    pub(super) fn interest(&self) -> Option<(RawFd, i16)> {
        let pending = if self.out_pos < self.out.len() { POLLOUT } else { 0 };
        match &self.state {
            State::Waiting { .. } | State::Resolving { .. } => None,
            State::Connecting { sock, .. } => Some((sock.as_raw_fd(), POLLOUT)),
            State::Handshake { sock, .. } | State::Recording { sock, .. } => Some((sock.as_raw_fd(), POLLIN | pending)),
        }
    }

    pub(super) fn deadline(&self) -> Instant {
        match &self.state {
            State::Waiting { retry_at } => *retry_at,
            // Polled: the helper thread has no fd.
            State::Resolving { since, .. } => (*since + STEP_TIMEOUT).min(Instant::now() + Duration::from_millis(20)),
            State::Connecting { since, .. } | State::Handshake { since, .. } => *since + STEP_TIMEOUT,
            State::Recording { keepalive_at, .. } => *keepalive_at,
        }
    }

    fn fail(&mut self, why: String, now: Instant) {
        if self.last_error != why || matches!(self.state, State::Recording { .. }) {
            log::warn!("publish {}: {why}; retrying in {:?}", self.url, self.backoff);
        }
        self.last_error = why;
        self.state = State::Waiting { retry_at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.recording_since = None;
        self.out.clear();
        self.out_pos = 0;
        self.inlen = 0;
    }

    fn start_connect(&mut self, addr: SocketAddr, now: Instant) {
        match connect_nonblocking(addr, self.dscp) {
            Ok(sock) => self.state = State::Connecting { sock, since: now },
            Err(e) => self.fail(format!("connect to {addr}: {e}"), now),
        }
    }

    /// Writes what is pending; `false` when the connection is gone.
    fn flush(&mut self) -> bool {
        let (State::Handshake { sock, .. } | State::Recording { sock, .. }) = &mut self.state else { return true };
        while self.out_pos < self.out.len() {
            match sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return false,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        true
    }

    /// Queues the next handshake request (the ANNOUNCE carries the stream's SDP).
    fn send_request(&mut self, hub: &Hub, fps: u32, now: Instant) -> Result<(), String> {
        let mut sdp = [0u8; limits::MAX_SDP_BYTES];
        let n = match hub.stream_info(now) {
            Some(info) => write_sdp(
                &SdpParams {
                    session_id: u64::from(info.ssrc),
                    session_version: 1,
                    origin_addr: "0.0.0.0",
                    codec: info.codec,
                    payload_type: info.codec.payload_type(),
                    destination: None,
                    sps: info.sps,
                    pps: info.pps,
                    framerate: fps,
                    bandwidth_kbps: info.bitrate_kbps,
                },
                &mut sdp,
            )
            .map_err(|_| "the SDP does not fit".to_owned())?,
            None => return Err("the stream has no SPS/PPS yet".into()),
        };
        let mut buf = [0u8; 4096 + limits::MAX_SDP_BYTES];
        let mut w = WBuf::new(&mut buf);
        self.client.write_request(&self.url, &sdp[..n], &mut w).map_err(|_| "request too large".to_owned())?;
        self.out.clear();
        self.out_pos = 0;
        self.out.extend_from_slice(w.written());
        Ok(())
    }

    /// Reads and handles what the server sent. `Ok(true)` when recording has just begun.
    fn read_responses(&mut self, now: Instant) -> Result<bool, String> {
        let (State::Handshake { sock, .. } | State::Recording { sock, .. }) = &mut self.state else { return Ok(false) };
        loop {
            if self.inlen == self.inbuf.len() {
                return Err("the server sent more than a response".into());
            }
            match sock.read(&mut self.inbuf[self.inlen..]) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.inlen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let mut started = false;
        let mut pos = 0;
        while pos < self.inlen {
            match client::parse_response(&self.inbuf[pos..self.inlen]) {
                Ok(Parsed::Incomplete) => break,
                Ok(Parsed::Interleaved { consumed }) => pos += consumed,
                Ok(Parsed::Complete { response, consumed }) => {
                    pos += consumed;
                    match self.client.handle_response(&self.url, &response) {
                        Ok(Progress::Send) => {
                            if let State::Handshake { sent, since, .. } = &mut self.state {
                                *sent = false;
                                *since = now;
                            }
                        }
                        Ok(Progress::Recording) => started = true,
                        Ok(Progress::Idle) => {}
                        Err(e) => return Err(format!("{e:?}")),
                    }
                }
                Err(e) => return Err(format!("unreadable response ({e:?})")),
            }
        }
        self.inbuf.copy_within(pos..self.inlen, 0);
        self.inlen -= pos;
        Ok(started)
    }

    /// Sends the ring's packets from the reader's position, framed `$ 0 len`. A packet is kept
    /// only while its tail is unwritten (the framing needs it); when the socket is full, what
    /// comes meanwhile is dropped and sending goes on at the next IDR.
    fn pump_ring(&mut self, hub: &Hub) {
        let State::Recording { .. } = self.state else { return };
        if !self.flush() {
            return;
        }
        if self.out_pos < self.out.len() {
            // Still a tail to write: what came meanwhile is dropped, not kept for later.
            self.skip_to_next_idr(hub);
            return;
        }
        if !self.reader.catch_up(&hub.ring) {
            return;
        }
        while self.reader.next < hub.ring.head() {
            let Some(pkt) = hub.ring.get(self.reader.next) else { break };
            self.out.clear();
            self.out_pos = 0;
            self.out.extend_from_slice(&[b'$', 0]);
            self.out.extend_from_slice(&(pkt.bytes.len() as u16).to_be_bytes());
            self.out.extend_from_slice(pkt.bytes);
            let batch = [pkt.bytes];
            let _ = self.flush();
            if self.out_pos == 0 && !self.out.is_empty() {
                // Not a byte went out: this packet and the rest are dropped.
                self.out.clear();
                self.reader.advance(&batch, 0);
                self.skip_to_next_idr(hub);
                return;
            }
            self.reader.advance(&batch, 1);
            if self.out_pos < self.out.len() {
                return;
            }
        }
    }

    fn skip_to_next_idr(&mut self, hub: &Hub) {
        let head = hub.ring.head();
        self.reader.dropped += head.saturating_sub(self.reader.next);
        self.reader.next = head;
        self.reader.waiting_keyframe = true;
    }
}

impl EventLoop<'_> {
    pub(super) fn on_publish(&mut self, si: usize, revents: i16, now: Instant) {
        let Some(p) = self.publishers.get_mut(si).and_then(Option::as_mut) else { return };
        let st = &self.streams[si];
        match &p.state {
            State::Connecting { sock, .. } => {
                match sock.take_error() {
                    Ok(None) if revents & (POLLERR | POLLHUP) == 0 => {}
                    Ok(Some(e)) | Err(e) => return p.fail(format!("connect: {e}"), now),
                    Ok(None) => return p.fail("connect: refused".into(), now),
                }
                let State::Connecting { sock, .. } = std::mem::replace(&mut p.state, State::Waiting { retry_at: now })
                else {
                    return;
                };
                p.connects += 1;
                p.client = Publisher::new();
                p.inlen = 0;
                p.state = State::Handshake { sock, since: now, sent: false };
            }
            State::Handshake { .. } | State::Recording { .. } => {
                if revents & POLLERR != 0 {
                    return p.fail("connection error".into(), now);
                }
                match p.read_responses(now) {
                    Err(why) => return p.fail(why, now),
                    Ok(true) => {
                        let State::Handshake { sock, .. } =
                            std::mem::replace(&mut p.state, State::Waiting { retry_at: now })
                        else {
                            return;
                        };
                        log::info!("publish {}: recording (RTP over TCP, from the next IDR)", p.url);
                        p.state = State::Recording { sock, keepalive_at: now + KEEPALIVE };
                        p.backoff = BACKOFF_MIN;
                        p.recording_since = Some(now);
                        p.last_error.clear();
                        p.reader = RingReader::starting_at(st.hub.ring.head());
                        self.streams[si].request_idr(now);
                    }
                    Ok(false) => {}
                }
                if !p.flush() {
                    return p.fail("the connection broke".into(), now);
                }
            }
            State::Waiting { .. } | State::Resolving { .. } => {}
        }
        self.advance_publish(si, now);
    }

    /// Moves a publisher on: sends its next handshake request, or the ring's new packets.
    pub(super) fn advance_publish(&mut self, si: usize, now: Instant) {
        let Some(p) = self.publishers.get_mut(si).and_then(Option::as_mut) else { return };
        let st = &self.streams[si];
        match &mut p.state {
            State::Handshake { sent: false, .. } if p.out_pos >= p.out.len() && p.client.step() != Step::Recording => {
                if let Err(why) = p.send_request(&st.hub, st.cfg.fps, now) {
                    return p.fail(why, now);
                }
                if let State::Handshake { sent, .. } = &mut p.state {
                    *sent = true;
                }
                if !p.flush() {
                    p.fail("the connection broke".into(), now);
                }
            }
            State::Recording { .. } => p.pump_ring(&st.hub),
            _ => {}
        }
    }

    /// Retries, resolutions, timeouts and keep-alives of every publisher.
    pub(super) fn publish_timers(&mut self, now: Instant) {
        for si in 0..self.publishers.len() {
            let Some(p) = self.publishers[si].as_mut() else { continue };
            match &mut p.state {
                State::Waiting { retry_at } if now >= *retry_at => {
                    let (host, port) = (p.url.host.to_string(), p.url.port);
                    match host.parse::<IpAddr>() {
                        Ok(ip) => p.start_connect(SocketAddr::new(ip, port), now),
                        Err(_) => {
                            let (tx, rx) = mpsc::channel();
                            let spawned = std::thread::Builder::new().name("publish-dns".into()).spawn(move || {
                                let _ = tx.send((host.as_str(), port).to_socket_addrs().map(|a| a.collect()));
                            });
                            match spawned {
                                Ok(_) => p.state = State::Resolving { rx, since: now },
                                Err(e) => p.fail(format!("resolver thread: {e}"), now),
                            }
                        }
                    }
                }
                State::Resolving { rx, since } => match rx.try_recv() {
                    Ok(Ok(addrs)) => match addrs.first() {
                        Some(&a) => p.start_connect(a, now),
                        None => p.fail(format!("{} has no address", p.url.host), now),
                    },
                    Ok(Err(e)) => p.fail(format!("resolve {}: {e}", p.url.host), now),
                    Err(mpsc::TryRecvError::Empty) if now.saturating_duration_since(*since) < STEP_TIMEOUT => {}
                    Err(_) => p.fail(format!("resolve {}: no answer", p.url.host), now),
                },
                State::Connecting { since, .. } | State::Handshake { since, .. }
                    if now.saturating_duration_since(*since) >= STEP_TIMEOUT =>
                {
                    let what = if matches!(p.state, State::Connecting { .. }) { "connect" } else { "no answer" };
                    p.fail(format!("{what} within {STEP_TIMEOUT:?} (step {:?})", p.client.step()), now);
                }
                State::Recording { keepalive_at, .. } if now >= *keepalive_at => {
                    *keepalive_at = now + KEEPALIVE;
                    // An OPTIONS between packets (only when no packet is half written).
                    if p.out_pos >= p.out.len() {
                        let st = &self.streams[si];
                        if p.send_request(&st.hub, st.cfg.fps, now).is_ok() && !p.flush() {
                            p.fail("the connection broke".into(), now);
                        }
                    }
                }
                _ => {}
            }
            self.advance_publish(si, now);
        }
    }

    /// The earliest deadline of any publisher.
    pub(super) fn publish_deadline(&self) -> Option<Instant> {
        self.publishers.iter().flatten().map(Publish::deadline).min()
    }
}

/// The publishers of `cfg`'s streams (by stream index), each starting at once.
pub(super) fn open(cfg: &crate::config::Config, now: Instant) -> Vec<Option<Publish>> {
    cfg.streams
        .iter()
        .map(|st| {
            st.publish.as_ref().map(|url| {
                log::info!("{}: publishing to {url} (RTSP ANNOUNCE/RECORD, RTP over TCP)", st.path);
                Publish::new(url.clone(), st.dscp, now)
            })
        })
        .collect()
}
