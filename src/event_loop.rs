//! The one `poll(2)` loop: the only owner of file descriptors and of the clock.
//!
//! ```text
//!            ┌──────────── poll(2) ────────────┐
//!  signalfd ─┤ SIGINT/SIGTERM → BYE, exit 0    │
//!  pipeline ─┤ stream i's access unit → its hub.push (packetize once into its ring) → pump its readers
//!            │ error or --stall-timeout without a unit → rebuild that stream with backoff, sessions kept
//!  listener ─┤ accept → connection slot (or close when none is free)
//!  TCP conn ─┤ read → parse_input → Server::handle_request (routed by path) → pending → write
//!            │ POLLOUT → flush pending → pump its interleaved session
//!  UDP RTCP ─┤ receiver reports → Server::handle_rtcp; PLI/FIR → IDR; NACK → RTX from the ring
//!  HTTP     ─┤ accept → HTTP slot (or 503); GET /PATH.mjpeg, /PATH.jpg, /, /status, /metrics,
//!            │ POST /PATH/whep (body read, then answered in the same turn), DELETE /PATH/whep/ID
//!  WebRTC   ─┤ UDP datagram → the str0m session that accepts it (see `webrtc`, `whep`)
//!  publish  ─┤ a stream's RTSP RECORD connection upstream: handshake, then its ring (see `publish`)
//!  side JPEG┤ an H.264 stream's on-demand JPEG encoder → HTTP only (see `side_jpeg`)
//!  snapshot ┤ a camera's snapshot encoder → its snapshot writer thread (see `snapshots`)
//!  timeout  ─┤ session expiry, sender reports, deferred IDR requests, watchdog
//!            └─────────────────────────────────┘
//! ```
//!
//! Jobs, one sub-module each: `streams` (a stream's pipeline, hub, IDR control, supervision,
//! push and multicast), `abr` (adaptive bitrate: receivers' loss → the encoder's bitrate),
//! `rtsp_conns` (RTSP connections), `slots` (session fan-out, client RTCP,
//! sender reports), `feedback` (PLI/FIR → IDR, NACK → retransmission), `http` (HTTP
//! connections), `status` (`/status`, `/metrics`), `multicast`, `side_jpeg`, `snapshots` (a
//! camera's JPEG every interval), `udp_tx`, `fanout` (an access unit's UDP sends spread over
//! threads), `cameras`, `latency_ring`, `ring_reader`. This file holds the fds, the tokens, the
//! deadlines and the dispatch.
//!
//! Invariants:
//! - Nothing here blocks: every socket is non-blocking; encoders are worker threads behind
//!   eventfds; a file source is paced by a timerfd.
//! - Capacities are fixed at start: connection slots, session slots (each with its UDP port
//!   pair bound at start), one packet ring per stream, per-connection buffers.
//! - Streams are independent: a stream's pipeline failing or stalling is rebuilt with its own
//!   backoff while every other stream, and every session, carries on.
//! - UDP fan-out: every UDP reader (session slots, push, multicast) sends the ring bytes with
//!   `sendmmsg(2)`, runs of equal-size packets as one UDP GSO message each, where the kernel and
//!   the route allow it (see `udp_tx`); receivers get the same datagrams either way. With
//!   `fanout-threads` > 1, sender threads send an access unit to shares of the UDP slots while
//!   the loop waits (fork-join); they only send, and never see session state (see `fanout`).
//! - Latency first: a UDP send the kernel refuses is a dropped packet, never a queue; a TCP
//!   client that falls behind the ring skips to the next IDR; per-connection output holds at
//!   most one response and one partial packet.
//! - A client starts at an IDR (fast join): new players wait for the next keyframe in their
//!   stream's ring (or on the newest unit when it is an IDR), and a live encoder is asked for one
//!   at once, within a per-stream budget (see `idr`). With MJPEG every frame is a keyframe.
//! - HTTP clients hold at most one frame each: the newest frame wins (see `http`).

mod abr;
mod cameras;
mod fanout;
mod feedback;
mod http;
mod idr;
mod latency_ring;
mod multicast;
mod publish;
mod ring_reader;
mod rtsp_conns;
mod side_jpeg;
mod slots;
mod snapshots;
mod status;
mod streams;
mod udp_tx;
#[cfg(feature = "webrtc")]
mod webrtc;
#[cfg(not(feature = "webrtc"))]
#[path = "event_loop/webrtc_off.rs"]
mod webrtc;
mod webrtc_api;
mod whep;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::limits;
use crate::rtsp::auth::{Auth, Credential};
use crate::rtsp::session::{Delivery, Server, ServerConfig, Session, SessionState, StreamRoute};
use crate::source::Pipeline;
use crate::sys::{self, sd_notify::Notifier, PollFd, POLLIN, POLLOUT};
use crate::time;

use idr::IdrLimiter;
use rtsp_conns::Conn;
use slots::Slot;
pub use streams::PipelineFactory;
use streams::Stream;

/// Output buffered per connection: one response, one partial packet, one sender report.
const PENDING_CAP: usize = limits::MAX_RESPONSE_BYTES + limits::MAX_RTP_PACKET + 4 + 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Listener,
    Signal,
    /// Stream, and the position in its pipeline's poll requests.
    Pipeline(usize, usize),
    Conn(usize),
    Rtp(usize),
    Rtcp(usize),
    HttpListener,
    Http(usize),
    /// A stream's on-demand JPEG encoder for HTTP (see `side_jpeg`).
    SideJpeg(usize, usize),
    /// A camera's snapshot encoder (see `snapshots`).
    Snapshot(usize, usize),
    /// A WebRTC UDP socket (see `webrtc`).
    WebRtc(usize),
    /// Stream `n`'s connection to the server it publishes to (see `publish`).
    Publish(usize),
}

pub struct EventLoop<'c> {
    listener: TcpListener,
    signals: nix::sys::signalfd::SignalFd,
    streams: Vec<Stream<'c>>,
    cameras: Vec<cameras::CameraRt>,
    factory: PipelineFactory<'c>,
    stall_timeout: Duration,
    cfg: &'c Config,
    server: Server<'c, Vec<Session>>,
    conns: Vec<Option<Conn>>,
    slots: Vec<Slot>,
    epoch: Instant,
    next_conn_id: u64,
    next_sr: Instant,
    next_watchdog: Option<Instant>,
    notifier: Notifier,
    pollfds: Vec<PollFd>,
    tokens: Vec<Token>,
    response: Box<[u8]>,
    rtcp_buf: Box<[u8]>,
    cname: String,
    udp_drops_logged: Instant,
    /// Buffers of closed connections, reused by the next ones (no allocation per accept).
    buffer_pool: Vec<(Box<[u8]>, Vec<u8>)>,
    policy: Policy,
    /// Server-added latency per access unit (µs), since the last stats line.
    latency_us: Vec<u32>,
    latency_scratch: Vec<u32>,
    next_stats: Option<Instant>,
    http: Option<http::Http<'c>>,
    /// WebRTC viewers (WHEP), when `webrtc-port` is set and HTTP is on.
    webrtc: Option<webrtc::WebRtc>,
    /// Per stream: its publisher, when `publish` is set.
    publishers: Vec<Option<publish::Publish>>,
    /// `/status` and `/metrics` are rendered here (kept, so rendering allocates rarely).
    report_buf: String,
    /// PLI/FIR received per stream since start (see `feedback`).
    keyframe_requests: Vec<u64>,
    /// Retransmissions per stream of sessions that ended (live sessions count their own).
    retransmitted_ended: Vec<u64>,
    /// The fan-out threads, when `fanout-threads` > 1 (`None` while one access unit's fan-out
    /// runs, and with one thread: the loop sends alone).
    fanout: Option<fanout::Fanout>,
}

/// The configurable limits, as durations.
#[derive(Debug, Clone, Copy)]
struct Policy {
    max_pending_connections: usize,
    idle_timeout: Duration,
    request_timeout: Duration,
    max_request_rate: u32,
    client_stall_timeout: Duration,
    stats_interval: Option<Duration>,
}

impl std::fmt::Debug for EventLoop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("listener", &self.listener).finish_non_exhaustive()
    }
}

/// Binds `max_clients` even/odd UDP port pairs inside the configured range.
/// An RTP socket, its RTCP socket and their ports.
type UdpPair = (UdpSocket, UdpSocket, (u16, u16));

fn bind_udp_pairs(ip: IpAddr, range: (u16, u16), count: usize) -> io::Result<Vec<UdpPair>> {
    let mut pairs = Vec::with_capacity(count);
    let mut port = u32::from(range.0 + (range.0 % 2));
    while pairs.len() < count && port < u32::from(range.1) {
        let (a, b) = (port as u16, port as u16 + 1);
        port += 2;
        let Ok(rtp) = UdpSocket::bind((ip, a)) else {
            continue;
        };
        let Ok(rtcp) = UdpSocket::bind((ip, b)) else {
            continue;
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        pairs.push((rtp, rtcp, (a, b)));
    }
    if pairs.len() < count {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "rtp-ports {}-{}: only {} free even/odd port pairs on {ip}, max-clients needs {count}",
                range.0,
                range.1,
                pairs.len()
            ),
        ));
    }
    Ok(pairs)
}

/// Marks a socket's packets with `dscp` (IP_TOS / IPV6_TCLASS = dscp << 2); 0 leaves them
/// unmarked. An IPv6 socket gets both, so IPv4-mapped peers of a dual-stack socket are marked too.
pub(crate) fn set_dscp<S: std::os::fd::AsFd>(sock: &S, ipv6: bool, dscp: u8) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if dscp == 0 {
        return Ok(());
    }
    let tos = i32::from(dscp) << 2;
    if ipv6 {
        setsockopt(sock, sockopt::Ipv6TClass, &tos).map_err(io::Error::from)?;
        let _ = setsockopt(sock, sockopt::IpTos, &tos);
        Ok(())
    } else {
        setsockopt(sock, sockopt::IpTos, &tos).map_err(io::Error::from)
    }
}

/// The next pending connection on `listener`, ready for the loop: non-blocking, no Nagle delay, the
/// fixed send buffer (no hidden queue) and the DSCP of media (interleaved RTP and MJPEG ride on
/// it). `None` when nothing is pending, or accept failed (EMFILE and friends: logged, and the
/// loop keeps serving those it has).
pub(crate) fn accept_media_conn(listener: &TcpListener, dscp: u8, what: &str) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("{what} accept: {e}");
                return None;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &limits::TCP_SEND_BUFFER);
        let _ = set_dscp(&stream, peer.is_ipv6(), dscp);
        return Some((stream, peer));
    }
}

impl<'c> EventLoop<'c> {
    /// Binds every socket and allocates every slot, around one first pipeline per stream (in
    /// `cfg.streams` order). `routes` are the streams as RTSP serves them (same order). Call
    /// before anything else spawns threads: it blocks SIGINT/SIGTERM for the signalfd.
    pub fn new(
        cfg: &'c Config,
        routes: &'c [StreamRoute<'c>],
        signals: nix::sys::signalfd::SignalFd,
        pipelines: Vec<Box<dyn Pipeline>>,
        factory: PipelineFactory<'c>,
        credentials: &'c [Credential<'c>],
        notifier: Notifier,
    ) -> io::Result<Self> {
        assert_eq!(pipelines.len(), cfg.streams.len(), "one first pipeline per stream");
        let listener = TcpListener::bind((cfg.listen, cfg.port))
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {}:{}: {e}", cfg.listen, cfg.port)))?;
        listener.set_nonblocking(true)?;
        let pairs = bind_udp_pairs(cfg.listen, cfg.rtp_ports, cfg.max_clients)?;
        for (rtp, rtcp, _) in &pairs {
            set_dscp(rtp, cfg.listen.is_ipv6(), cfg.dscp)?;
            set_dscp(rtcp, cfg.listen.is_ipv6(), cfg.dscp)?;
        }
        let kernel_gso = udp_tx::kernel_gso();
        let mut sessions = vec![Session::FREE; cfg.max_clients];
        let mut slots = Vec::with_capacity(cfg.max_clients);
        for (s, (rtp, rtcp, ports)) in sessions.iter_mut().zip(pairs) {
            s.server_ports = ports;
            slots.push(Slot {
                rtp: std::sync::Arc::new(rtp),
                rtcp,
                stream: 0,
                dscp: cfg.dscp,
                playing: false,
                reader: ring_reader::RingReader::starting_at(0),
                conn: None,
                rtp_dest: None,
                rtcp_dest: None,
                channels: (0, 1),
                play_at: None,
                peer: None,
                tx: udp_tx::UdpTx::new(kernel_gso),
                rtx: None,
            });
        }
        let epoch = Instant::now();
        // One set of users for RTSP and HTTP: the pictures are guarded like the stream.
        let auth = (!credentials.is_empty()).then(|| Auth { users: credentials, secret: sys::random_secret() });
        let server = Server::new(
            ServerConfig {
                streams: routes,
                session_timeout: Duration::from_secs(u64::from(cfg.session_timeout)),
                auth,
                feedback: cfg.nack,
                nack_window: cfg.nack_window,
            },
            sessions,
            sys::random_u64(),
        );
        let fanout = match cfg.fanout_threads {
            0 | 1 => None,
            t => Some(fanout::Fanout::start(
                t,
                slots.iter().map(|s: &Slot| std::sync::Arc::clone(&s.rtp)).collect(),
                limits::RING_PACKETS,
                cfg.max_rtp_packet().max(crate::rtp::jpeg::MIN_PACKET),
            )?),
        };
        let mut streams = Vec::with_capacity(pipelines.len());
        for (i, p) in pipelines.into_iter().enumerate() {
            streams.push(Stream::new(cfg, i, p, epoch, kernel_gso)?);
        }
        let webrtc = whep::open(cfg, cfg.http_port != 0);
        let webrtc_on = webrtc.is_some();
        // Video first: a taken HTTP port (HTTP is on by default, and 8080 is a popular port) is
        // logged and HTTP stays off; RTSP and push mode still start.
        let mut http = match cfg.http_port {
            0 => None,
            port => match TcpListener::bind((cfg.listen, port)) {
                Ok(l) => Some(http::Http::new(
                    l,
                    cfg.max_http_clients,
                    streams
                        .iter()
                        // The real supplies come once the cameras run (`start_cameras`).
                        .map(|st| http::HttpStream {
                            path: st.cfg.path.clone(),
                            supply: http::JpegSupply::OnDemand,
                            webrtc: webrtc_on && st.cfg.codec == crate::rtp::Codec::H264,
                        })
                        .collect(),
                    Duration::from_secs(u64::from(cfg.request_timeout)),
                    Duration::from_secs(u64::from(cfg.client_stall_timeout)),
                    Duration::from_secs(u64::from(cfg.idle_timeout)),
                )?),
                Err(e) => {
                    log::error!("http-port: listen on {}:{port}: {e}; HTTP is off (RTSP is not affected)", cfg.listen);
                    None
                }
            },
        };
        let n_conns = cfg.max_clients + cfg.max_pending_connections + limits::SPARE_CONNECTIONS;
        let policy = Policy {
            max_pending_connections: cfg.max_pending_connections,
            idle_timeout: Duration::from_secs(u64::from(cfg.idle_timeout)),
            request_timeout: Duration::from_secs(u64::from(cfg.request_timeout)),
            max_request_rate: cfg.max_request_rate,
            client_stall_timeout: Duration::from_secs(u64::from(cfg.client_stall_timeout)),
            stats_interval: (cfg.stats_interval > 0).then(|| Duration::from_secs(u64::from(cfg.stats_interval))),
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let next_watchdog = notifier.watchdog_interval.map(|_| epoch);
        if let Some(h) = http.as_mut() {
            h.set_dscp(cfg.dscp);
            if let Some(a) = auth {
                h.set_auth(a, epoch);
            }
        }
        let mut lp = EventLoop {
            listener,
            signals,
            streams,
            cameras: cfg.cameras.iter().map(|_| cameras::CameraRt::default()).collect(),
            factory,
            stall_timeout: Duration::from_secs(u64::from(cfg.stall_timeout)),
            cfg,
            server,
            conns: (0..n_conns).map(|_| None).collect(),
            slots,
            epoch,
            next_conn_id: 1,
            next_sr: epoch + Duration::from_millis(limits::RTCP_SR_INTERVAL_MS),
            next_watchdog,
            notifier,
            pollfds: Vec::with_capacity(16 + n_conns + 2 * cfg.max_clients),
            tokens: Vec::with_capacity(16 + n_conns + 2 * cfg.max_clients),
            response: vec![0; limits::MAX_RESPONSE_BYTES].into_boxed_slice(),
            rtcp_buf: vec![0; limits::MAX_RTCP_PACKET].into_boxed_slice(),
            cname: format!("uavstream@{}", host.trim()),
            udp_drops_logged: epoch,
            buffer_pool: (0..n_conns)
                .map(|_| (vec![0; limits::MAX_REQUEST_BYTES].into_boxed_slice(), Vec::with_capacity(PENDING_CAP)))
                .collect(),
            policy,
            latency_us: Vec::with_capacity(limits::LATENCY_SAMPLES),
            latency_scratch: Vec::with_capacity(limits::LATENCY_SAMPLES),
            next_stats: policy.stats_interval.map(|i| epoch + i),
            keyframe_requests: vec![0; cfg.streams.len()],
            retransmitted_ended: vec![0; cfg.streams.len()],
            http,
            webrtc,
            publishers: publish::open(cfg, epoch),
            report_buf: String::new(),
            fanout,
        };
        lp.start_cameras()?;
        Ok(lp)
    }

    /// The HTTP listener's address, when HTTP is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|h| h.local_addr().ok())
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn core_now(&self, now: Instant) -> time::Instant {
        time::Instant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as u64)
    }

    fn core_to_std(&self, t: time::Instant) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }

    /// Runs until SIGINT/SIGTERM (returns `Ok`) or a fatal error.
    pub fn run(&mut self) -> io::Result<()> {
        let now = Instant::now();
        for st in &mut self.streams {
            if let Some(p) = &st.pipeline {
                log::info!("{}: source: {}", st.cfg.path, p.describe());
            }
            if st.sdp_out.is_some() {
                st.write_sdp_out(now);
            }
        }
        self.notifier.notify("READY=1");
        loop {
            self.build_pollset();
            let timeout = self.timeout_ms(Instant::now());
            sys::poll(&mut self.pollfds, timeout)?;
            let now = Instant::now();
            for i in 0..self.pollfds.len() {
                let rev = self.pollfds[i].revents;
                if rev == 0 {
                    continue;
                }
                match self.tokens[i] {
                    Token::Signal => {
                        while let Ok(Some(sig)) = self.signals.read_signal() {
                            match sig.ssi_signo as i32 {
                                libc::SIGHUP => {
                                    log::info!("SIGHUP: reopening sources and encoders (sessions stay up)");
                                    self.rebuild_all(now);
                                }
                                libc::SIGUSR1 => {
                                    // The first camera only: a test can watch the others
                                    // stream on while it is rebuilt.
                                    log::warn!(
                                        "fault injection: the pipeline's output is discarded (camera1's streams) until it is rebuilt"
                                    );
                                    for st in self.streams.iter_mut().filter(|st| st.cfg.camera == 0) {
                                        st.fault_stalled = true;
                                    }
                                }
                                libc::SIGUSR2 => {
                                    log::warn!("fault injection: the loop hangs for 5 s");
                                    std::thread::sleep(Duration::from_secs(5));
                                }
                                signo => {
                                    log::info!("signal {signo}: stopping");
                                    self.shutdown();
                                    return Ok(());
                                }
                            }
                        }
                    }
                    Token::Pipeline(st, k) => self.on_pipeline(st, k, rev, now),
                    Token::Listener => self.accept(now),
                    Token::Conn(c) => self.on_conn(c, rev, now),
                    Token::Rtcp(s) => self.on_udp(s, true, now),
                    Token::Rtp(s) => self.on_udp(s, false, now),
                    Token::HttpListener => {
                        if let Some(h) = self.http.as_mut() {
                            h.accept(now);
                        }
                    }
                    Token::Http(i) => {
                        if let Some(h) = self.http.as_mut() {
                            h.on_conn(i, rev, now);
                        }
                    }
                    Token::SideJpeg(st, k) => self.on_side_jpeg(st, k, rev, now),
                    Token::Snapshot(c, k) => self.on_snapshot_encoder(c, k, rev, now),
                    Token::WebRtc(i) => self.on_webrtc_socket(i, now),
                    Token::Publish(si) => self.on_publish(si, rev, now),
                }
            }
            self.answer_reports(now);
            self.answer_whep(now);
            self.reap_dead_conns();
            if let Some(h) = self.http.as_mut() {
                h.reap();
            }
            self.on_timers(now);
        }
    }

    fn build_pollset(&mut self) {
        self.pollfds.clear();
        self.tokens.clear();
        let add = |fds: &mut Vec<PollFd>, toks: &mut Vec<Token>, fd, ev, t| {
            fds.push(sys::poll_entry(fd, ev));
            toks.push(t);
        };
        add(&mut self.pollfds, &mut self.tokens, self.signals.as_fd().as_raw_fd(), POLLIN, Token::Signal);
        for (si, st) in self.streams.iter_mut().enumerate() {
            st.pipe_reqs.clear();
            if let Some(p) = &st.pipeline {
                p.poll_requests(&mut st.pipe_reqs);
            }
            for (k, r) in st.pipe_reqs.iter().enumerate() {
                add(&mut self.pollfds, &mut self.tokens, r.fd, r.events, Token::Pipeline(si, k));
            }
            st.side_reqs.clear();
            if let Some(side) = &st.side_jpeg {
                side.pipeline.poll_requests(&mut st.side_reqs);
            }
            for (k, r) in st.side_reqs.iter().enumerate() {
                add(&mut self.pollfds, &mut self.tokens, r.fd, r.events, Token::SideJpeg(si, k));
            }
        }
        for (c, cam) in self.cameras.iter_mut().enumerate() {
            let Some(snap) = cam.snapshots.as_mut() else { continue };
            snap.poll_requests();
            for (k, r) in snap.reqs.iter().enumerate() {
                add(&mut self.pollfds, &mut self.tokens, r.fd, r.events, Token::Snapshot(c, k));
            }
        }
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut ev = 0;
            // Backpressure: stop reading while a response could not be queued.
            if c.wants_read() {
                ev |= POLLIN;
            }
            if c.want_write {
                ev |= POLLOUT;
            }
            add(&mut self.pollfds, &mut self.tokens, c.stream.as_raw_fd(), ev, Token::Conn(i));
        }
        // The listener comes after the connections: hang-ups are seen before new connections are
        // counted against the cap on sessionless connections.
        add(&mut self.pollfds, &mut self.tokens, self.listener.as_raw_fd(), POLLIN, Token::Listener);
        for (i, s) in self.slots.iter().enumerate() {
            if self.server.sessions()[i].state != SessionState::Free {
                add(&mut self.pollfds, &mut self.tokens, s.rtcp.as_raw_fd(), POLLIN, Token::Rtcp(i));
                add(&mut self.pollfds, &mut self.tokens, s.rtp.as_raw_fd(), POLLIN, Token::Rtp(i));
            }
        }
        if let Some(h) = &self.http {
            for (i, fd, ev) in h.interests() {
                add(&mut self.pollfds, &mut self.tokens, fd, ev, Token::Http(i));
            }
            add(&mut self.pollfds, &mut self.tokens, h.listener_fd(), POLLIN, Token::HttpListener);
        }
        if let Some(w) = &self.webrtc {
            for (i, fd) in w.fds() {
                add(&mut self.pollfds, &mut self.tokens, fd, POLLIN, Token::WebRtc(i));
            }
        }
        for (si, p) in self.publishers.iter().enumerate() {
            if let Some((fd, ev)) = p.as_ref().and_then(|p| p.interest()) {
                add(&mut self.pollfds, &mut self.tokens, fd, ev, Token::Publish(si));
            }
        }
    }

    fn timeout_ms(&self, now: Instant) -> i32 {
        let mut deadline = self.next_sr;
        if let Some(t) = self.server.poll_timeout() {
            deadline = deadline.min(self.core_to_std(t));
        }
        if let Some(t) = self.next_watchdog {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.webrtc.as_ref().and_then(|w| w.deadline()) {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.publish_deadline() {
            deadline = deadline.min(t);
        }
        for st in &self.streams {
            if let Some(t) = st.deadline(self.stall_timeout) {
                deadline = deadline.min(t);
            }
        }
        // Round up to whole milliseconds so the loop never spins.
        let us = deadline.saturating_duration_since(now).as_micros();
        us.div_ceil(1000).min(60_000) as i32
    }

    fn on_timers(&mut self, now: Instant) {
        let core_now = self.core_now(now);
        while let Some(slot) = self.server.poll_expired(core_now) {
            self.end_session(slot, "timed out");
        }
        self.webrtc_timers(now);
        self.publish_timers(now);
        for si in 0..self.streams.len() {
            self.supervise_pipeline(si, now);
            self.supervise_side_jpeg(si, now);
            self.tick_abr(si, now);
        }
        if now >= self.next_sr {
            // Once a second: sender reports, and the per-connection limits.
            self.next_sr = now + Duration::from_millis(limits::RTCP_SR_INTERVAL_MS);
            self.send_rtcp(now, false);
            for st in &mut self.streams {
                st.sample(now);
            }
            self.supervise_cameras(now);
            self.enforce_connection_limits(now);
            self.reap_dead_conns();
            if let Some(h) = self.http.as_mut() {
                h.enforce_limits(now);
                h.reap();
            }
        }
        if let (Some(t), Some(interval)) = (self.next_stats, self.policy.stats_interval) {
            if now >= t {
                self.next_stats = Some(now + interval);
                self.log_stats();
            }
        }
        if let (Some(t), Some(interval)) = (self.next_watchdog, self.notifier.watchdog_interval) {
            if now >= t {
                self.notifier.notify("WATCHDOG=1");
                self.next_watchdog = Some(now + interval);
            }
        }
    }

    /// One `stats:` line: slots, connections, server-added latency, traffic, memory; then one
    /// line per stream when there are several, and the multicast and HTTP lines.
    fn log_stats(&mut self) {
        self.latency_scratch.clear();
        self.latency_scratch.extend_from_slice(&self.latency_us);
        self.latency_us.clear();
        self.latency_scratch.sort_unstable();
        let pick = |q: f64| -> u32 {
            let v = &self.latency_scratch;
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        let sessions = self.server.active();
        let playing = self.slots.iter().filter(|s| s.playing).count();
        let conns = self.conns.iter().flatten().count();
        let (sent, dropped) = self.slots.iter().fold((0, 0), |(a, b), s| (a + s.reader.sent, b + s.reader.dropped));
        let txs = self.slots.iter().map(|s| &s.tx).chain(
            self.streams
                .iter()
                .flat_map(|st| st.push.as_ref().map(|p| &p.tx).into_iter().chain(st.group.as_ref().map(|g| &g.tx))),
        );
        let (gso_msgs, gso_pkts, datagrams) =
            txs.fold((0, 0, 0), |(a, b, c), t| (a + t.gso_messages, b + t.gso_packets, c + t.datagrams));
        let packets: u64 = self.streams.iter().map(|st| st.hub.packets).sum();
        log::info!(
            "stats: sessions {sessions}/{} playing {playing} connections {conns} | server latency per access unit over {} units: p50 {} us p99 {} us max {} us | packets {packets} sent {sent} dropped {dropped} (current sessions) | udp gso messages {gso_msgs} carrying {gso_pkts} packets, single datagrams {datagrams} (since start) | rss {} KiB fds {}",
            self.slots.len(),
            self.latency_scratch.len(),
            pick(0.5),
            pick(0.99),
            self.latency_scratch.last().copied().unwrap_or(0),
            sys::rss_kib().unwrap_or(0),
            std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        );
        for (si, st) in self.streams.iter().enumerate() {
            if let Some(p) = &st.pipeline {
                log::info!(
                    "stats: pipeline frames dropped {} (since it started) on {}",
                    p.frames_dropped() + self.camera_skipped(st.cfg.camera),
                    st.cfg.path
                );
            }
            if self.streams.len() > 1 {
                let playing = self.slots.iter().filter(|s| s.playing && s.stream == si).count();
                log::info!("stats: stream {} playing {playing} packets {}", st.cfg.path, st.hub.packets);
            }
            self.log_feedback_stats(si);
            if let Some(g) = &st.group {
                let (sent, dropped) = g.counters();
                log::info!(
                    "stats: multicast {} sessions playing {} packets sent {sent} dropped {dropped}",
                    g.rtp_dest(),
                    self.server.multicast_playing(si)
                );
            }
        }
        if let Some(h) = &self.http {
            let (streaming, parts) =
                (0..self.streams.len()).fold((0, 0), |(a, b), si| (a + h.streaming(si), b + h.parts_sent(si)));
            log::info!("stats: http MJPEG streams {streaming} parts sent {parts}");
        }
        for (c, cam) in self.cameras.iter().enumerate() {
            if let Some(raw) = &cam.raw {
                let r = raw.status();
                log::info!(
                    "stats: raw frames {} consumers {}/{} frames copied {} sent {} skipped {} refused {} (since start)",
                    self.cfg.cameras[c].name,
                    r.consumers,
                    r.capacity,
                    r.counters.copied,
                    r.counters.sent,
                    r.counters.skipped,
                    r.counters.refused
                );
            }
        }
    }

    fn shutdown(&mut self) {
        self.notifier.notify("STOPPING=1");
        self.send_rtcp(Instant::now(), true);
        let now = Instant::now();
        for c in self.conns.iter_mut().flatten() {
            let _ = c.flush(now);
        }
    }
}

fn status_of(resp: &[u8]) -> &str {
    std::str::from_utf8(resp.get(9..12).unwrap_or(b"???")).unwrap_or("???")
}

fn describe_delivery(sess: &Session, s: &Slot) -> String {
    match sess.delivery {
        Delivery::Udp { client_rtp, client_rtcp, .. } => {
            format!("UDP to ports {client_rtp}-{client_rtcp} from {}-{}", sess.server_ports.0, sess.server_ports.1)
        }
        Delivery::Interleaved { rtp_channel, rtcp_channel } => {
            let _ = s;
            format!("TCP interleaved channels {rtp_channel}-{rtcp_channel}")
        }
        Delivery::Multicast { .. } => "UDP multicast (the group stream)".to_owned(),
    }
}
