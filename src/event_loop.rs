//! The one `poll(2)` loop: the only owner of file descriptors and of the clock.
//!
//! ```text
//!            ┌──────────── poll(2) ────────────┐
//!  signalfd ─┤ SIGINT/SIGTERM → BYE, exit 0    │
//!  pipeline ─┤ access unit → hub.push (packetize once into the ring) → pump every player
//!            │ error or --stall-timeout without a unit → rebuild it with backoff, sessions kept
//!  listener ─┤ accept → connection slot (or close when none is free)
//!  TCP conn ─┤ read → parse_input → Server::handle_request → pending → write
//!            │ POLLOUT → flush pending → pump its interleaved session
//!  UDP RTCP ─┤ receiver reports → Server::handle_rtcp
//!  HTTP     ─┤ accept → HTTP slot (or 503); GET /PATH.mjpeg, /PATH.jpg, / (see `http`)
//!  side JPEG┤ with --codec h264: HTTP's on-demand JPEG encoder → HTTP only (see `side_jpeg`)
//!  timeout  ─┤ session expiry, sender reports, deferred IDR requests, watchdog
//!            └─────────────────────────────────┘
//! ```
//!
//! Push mode (`--rtp-dest`) is one more reader of the ring: every packet also goes to the
//! configured UDP destination, starting at a keyframe, with RTCP sender reports to its port + 1.
//! It is the one destination that is not an RTSP peer: the operator configured it.
//!
//! Multicast (`--multicast-group`) is another single reader of the ring: one group stream while
//! any `RTP/AVP;multicast` session plays (see `multicast`).
//!
//! Invariants:
//! - Nothing here blocks: every socket is non-blocking; the encoder is a worker thread behind an
//!   eventfd; a file source is paced by a timerfd.
//! - Capacities are fixed at start: connection slots, session slots (each with its UDP port
//!   pair bound at start), the packet ring, per-connection buffers. Nothing grows with load.
//! - UDP fan-out: every UDP reader (session slots, push, multicast) sends the ring bytes with
//!   `sendmmsg(2)`, runs of equal-size packets as one UDP GSO message each, where the kernel and
//!   the route allow it (see `udp_tx`); receivers get the same datagrams either way.
//! - Latency first: a UDP send the kernel refuses is a dropped packet, never a queue; a TCP
//!   client that falls behind the ring skips to the next IDR; per-connection output holds at
//!   most one response and one partial packet.
//! - A client starts at an IDR (fast join): new players wait for the next keyframe in the ring,
//!   and a live encoder is asked for one at once (at most every
//!   [`limits::FORCED_IDR_MIN_SPACING_MS`]). With `--codec mjpeg` every frame is a keyframe.
//! - HTTP clients hold at most one frame each: the newest frame wins (see `http`).

mod datagram_feed;
mod http;
mod multicast;
mod side_jpeg;
mod udp_tx;

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::hub::Hub;
use crate::limits;
use crate::rtp::rtcp::{self, SenderReport};
use crate::rtp::Codec;
use crate::rtsp::auth::{Auth, Credential};
use crate::rtsp::parse::{parse_input, Input};
use crate::rtsp::sdp::{write_sdp, SdpParams};
use crate::rtsp::session::{self, ConnId, Delivery, Event, RequestCtx, Server, ServerConfig, Session, SessionState};
use crate::source::{IdrControl, Pipeline, PollRequest};
use crate::sys::{self, sd_notify::Notifier, PollFd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::time;

/// Output buffered per connection: one response, one partial packet, one sender report.
const PENDING_CAP: usize = limits::MAX_RESPONSE_BYTES + limits::MAX_RTP_PACKET + 4 + 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Listener,
    Signal,
    Pipeline(usize),
    Conn(usize),
    Rtp(usize),
    Rtcp(usize),
    HttpListener,
    Http(usize),
    /// HTTP's on-demand JPEG encoder (see `side_jpeg`).
    SideJpeg(usize),
}

/// Push mode: the ring sent to one fixed UDP destination (`--rtp-dest`).
#[derive(Debug)]
struct Push {
    sock: UdpSocket,
    dest: SocketAddr,
    feed: datagram_feed::DatagramFeed,
    tx: udp_tx::UdpTx,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    local_ip: IpAddr,
    inbuf: Box<[u8]>,
    inlen: usize,
    pending: Vec<u8>,
    want_write: bool,
    close_after_flush: bool,
    dead: bool,
    /// This connection has set up an interleaved session at some point.
    had_interleaved: bool,
    /// Last complete request or interleaved frame from the client.
    last_input: Instant,
    /// When the first byte of a still incomplete request arrived.
    partial_since: Option<Instant>,
    /// Last time the socket took bytes (or had nothing to take).
    last_progress: Instant,
    /// Request-rate token bucket, in thousandths of a request.
    tokens: u64,
    tokens_at: Instant,
}

impl Conn {
    /// Writes as much of `pending` as the socket takes. `Err` means the connection is gone.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        while !self.pending.is_empty() {
            match (&self.stream).write(&self.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_write = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.want_write = false;
        Ok(())
    }

    /// Takes one request from the rate bucket; `false` when the client is over its rate.
    fn admit_request(&mut self, now: Instant, rate: u32) -> bool {
        let cap = u64::from(limits::REQUEST_BURST) * 1000;
        let refill = now.saturating_duration_since(self.tokens_at).as_millis() as u64 * u64::from(rate);
        self.tokens = (self.tokens + refill).min(cap);
        self.tokens_at = now;
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }

    fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.pending.len() + bytes.len() > PENDING_CAP {
            return false;
        }
        self.pending.extend_from_slice(bytes);
        true
    }
}

/// A session slot's sockets and fan-out position.
#[derive(Debug)]
struct Slot {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    playing: bool,
    /// Next ring index to send.
    next: u64,
    waiting_idr: bool,
    conn: Option<usize>,
    rtp_dest: Option<SocketAddr>,
    rtcp_dest: Option<SocketAddr>,
    channels: (u8, u8),
    play_at: Option<Instant>,
    peer: Option<SocketAddr>,
    sent: u64,
    dropped: u64,
    /// GSO state and counters of `rtp` (kept across sessions).
    tx: udp_tx::UdpTx,
}

impl Slot {
    fn reset(&mut self) {
        self.playing = false;
        self.waiting_idr = true;
        self.conn = None;
        self.rtp_dest = None;
        self.rtcp_dest = None;
        self.play_at = None;
        self.peer = None;
        self.sent = 0;
        self.dropped = 0;
        self.tx.new_destination();
    }
}

/// Rate-limits IDR requests made for joining clients.
#[derive(Debug, Default)]
struct IdrLimiter {
    last: Option<Instant>,
    deferred: bool,
}

impl IdrLimiter {
    const SPACING: Duration = Duration::from_millis(limits::FORCED_IDR_MIN_SPACING_MS);

    fn request(&mut self, now: Instant) -> bool {
        match self.last {
            Some(l) if now.saturating_duration_since(l) < Self::SPACING => {
                self.deferred = true;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.deferred.then(|| self.last.map_or(Instant::now(), |l| l + Self::SPACING))
    }

    fn poll(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.deferred = false;
            self.last = Some(now);
            return true;
        }
        false
    }
}

/// Builds a new pipeline after the old one broke or stalled.
pub type PipelineFactory<'c> = Box<dyn FnMut() -> Result<Box<dyn Pipeline>, String> + 'c>;

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct EventLoop<'c> {
    listener: TcpListener,
    signals: nix::sys::signalfd::SignalFd,
    pipeline: Option<Box<dyn Pipeline>>,
    factory: PipelineFactory<'c>,
    pipe_reqs: Vec<PollRequest>,
    /// When the pipeline last delivered an access unit (or was (re)built).
    last_unit: Instant,
    stall_timeout: Duration,
    restart_at: Option<Instant>,
    restart_backoff: Duration,
    /// Fault injection: the current pipeline's output is discarded (looks stalled).
    fault_stalled: bool,
    /// DSCP for media sockets (`--dscp`; 0 = unmarked).
    dscp: u8,
    cfg: &'c Config,
    /// HTTP's JPEG encoder while the stream is H.264 and HTTP clients want frames.
    side_jpeg: Option<side_jpeg::SideJpeg>,
    side_reqs: Vec<PollRequest>,
    /// Whether HTTP's JPEG frames come from `side_jpeg` (the stream is H.264 and the source has
    /// raw frames).
    jpeg_on_demand: bool,
    side_retry_at: Option<Instant>,
    hub: Hub,
    server: Server<'c, Vec<Session>>,
    conns: Vec<Option<Conn>>,
    slots: Vec<Slot>,
    epoch: Instant,
    next_conn_id: u64,
    next_sr: Instant,
    next_watchdog: Option<Instant>,
    idr: IdrLimiter,
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
    push: Option<Push>,
    /// `--sdp-out` not written yet (an H.264 stream needs its SPS/PPS first).
    sdp_out: Option<std::path::PathBuf>,
    /// Our address towards the push destination, for the SDP's `o=`.
    push_origin: String,
    framerate: u32,
    /// The multicast group stream, when `--multicast-group` is set.
    group: Option<multicast::Group>,
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

/// The push-mode socket: unbound port, non-blocking, DSCP set.
/// Returns it with our address towards `dest` (for the SDP's `o=`).
fn push_socket(dest: SocketAddr, dscp: u8) -> io::Result<(UdpSocket, IpAddr)> {
    let any: IpAddr = if dest.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    let sock = UdpSocket::bind((any, 0))?;
    sock.set_nonblocking(true)?;
    set_dscp(&sock, dest.is_ipv6(), dscp)?;
    // The address the kernel would send from, found with a throwaway connected socket.
    let probe = UdpSocket::bind((any, 0))?;
    let origin = probe.connect(dest).and_then(|_| probe.local_addr()).map_or(any, |a| a.ip());
    Ok((sock, origin))
}

impl<'c> EventLoop<'c> {
    /// Binds every socket and allocates every slot. Call before anything else spawns threads:
    /// it blocks SIGINT/SIGTERM for the signalfd.
    pub fn new(
        cfg: &'c Config,
        signals: nix::sys::signalfd::SignalFd,
        pipeline: Box<dyn Pipeline>,
        factory: PipelineFactory<'c>,
        credentials: &'c [Credential<'c>],
        notifier: Notifier,
    ) -> io::Result<Self> {
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
                rtp,
                rtcp,
                playing: false,
                next: 0,
                waiting_idr: true,
                conn: None,
                rtp_dest: None,
                rtcp_dest: None,
                channels: (0, 1),
                play_at: None,
                peer: None,
                sent: 0,
                dropped: 0,
                tx: udp_tx::UdpTx::new(kernel_gso),
            });
        }
        let epoch = Instant::now();
        // One set of users for RTSP and HTTP: the pictures are guarded like the stream.
        let auth = (!credentials.is_empty()).then(|| Auth { users: credentials, secret: sys::random_secret() });
        let server = Server::new(
            ServerConfig {
                path: &cfg.path,
                session_timeout: Duration::from_secs(u64::from(cfg.session_timeout)),
                auth,
                multicast: cfg.multicast.as_ref().map(multicast::core_config),
            },
            sessions,
            sys::random_u64(),
        );
        let bitrate_kbps = if cfg.codec == Codec::H264 { cfg.bitrate / 1000 } else { 0 };
        let mut hub = Hub::new(cfg.codec, cfg.max_rtp_packet(), epoch, sys::random_u64(), cfg.fps, bitrate_kbps);
        if let Some((sps, pps)) = pipeline.parameter_sets().filter(|_| cfg.codec == Codec::H264) {
            hub.prime(&sps, &pps);
        }
        // Video first: a taken HTTP port (HTTP is on by default, and 8080 is a popular port) is
        // logged and HTTP stays off; RTSP and push mode still start.
        // Where HTTP's JPEGs come from, decided once for the first pipeline.
        let supply = side_jpeg::supply(cfg, Some(pipeline.as_ref()));
        let jpeg_on_demand = matches!(supply, http::JpegSupply::OnDemand);
        let mut http = match cfg.http_port {
            0 => None,
            port => match TcpListener::bind((cfg.listen, port)) {
                Ok(l) => Some(http::Http::new(
                    l,
                    cfg.max_http_clients,
                    &cfg.path,
                    supply,
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
        let (push, push_origin) = match cfg.rtp_dest {
            None => (None, String::new()),
            Some(dest) => {
                let (sock, origin) = push_socket(dest, cfg.dscp)
                    .map_err(|e| io::Error::new(e.kind(), format!("rtp-dest {dest}: {e}")))?;
                log::info!(
                    "push mode: RTP ({:?}) to {dest}, RTCP to port {}{}",
                    cfg.codec,
                    dest.port().wrapping_add(1),
                    if cfg.dscp > 0 {
                        format!(", DSCP {} (TOS 0x{:02x})", cfg.dscp, cfg.dscp << 2)
                    } else {
                        String::new()
                    }
                );
                let p = Push {
                    sock,
                    dest,
                    feed: datagram_feed::DatagramFeed::starting_at(0),
                    tx: udp_tx::UdpTx::new(kernel_gso),
                };
                (Some(p), origin.to_string())
            }
        };
        let group = match &cfg.multicast {
            None => None,
            Some(m) => {
                let g = multicast::Group::open(m, cfg.dscp, kernel_gso)
                    .map_err(|e| io::Error::new(e.kind(), format!("multicast-group {}: {e}", m.group)))?;
                log::info!(
                    "multicast: RTP/AVP;multicast sessions get {} (RTCP port {}), TTL {}{}",
                    g.rtp_dest(),
                    m.port.wrapping_add(1),
                    m.ttl,
                    m.interface.as_ref().map_or(String::new(), |(name, _)| format!(", via {name}"))
                );
                Some(g)
            }
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
        Ok(EventLoop {
            listener,
            signals,
            pipeline: Some(pipeline),
            factory,
            pipe_reqs: Vec::with_capacity(8),
            last_unit: epoch,
            stall_timeout: Duration::from_secs(u64::from(cfg.stall_timeout)),
            restart_at: None,
            restart_backoff: RESTART_BACKOFF_MIN,
            fault_stalled: false,
            dscp: cfg.dscp,
            cfg,
            side_jpeg: None,
            side_reqs: Vec::new(),
            jpeg_on_demand,
            side_retry_at: None,
            hub,
            server,
            conns: (0..n_conns).map(|_| None).collect(),
            slots,
            epoch,
            next_conn_id: 1,
            next_sr: epoch + Duration::from_millis(limits::RTCP_SR_INTERVAL_MS),
            next_watchdog,
            idr: IdrLimiter::default(),
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
            http,
            push,
            sdp_out: cfg.sdp_out.clone(),
            push_origin,
            framerate: cfg.fps,
            group,
        })
    }

    /// The HTTP listener's address, when HTTP is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|h| h.local_addr().ok())
    }

    /// Writes `--sdp-out` once the stream can be described (at once for JPEG; after the SPS/PPS
    /// for H.264). Failing to write it is logged, not fatal: the stream is still pushed.
    fn write_sdp_out(&mut self, now: Instant) {
        let (Some(path), Some(push)) = (self.sdp_out.as_ref(), self.push.as_ref()) else { return };
        let Some(stream) = self.hub.stream_info(now) else { return };
        let dest_ip = push.dest.ip().to_canonical().to_string();
        let mut sdp = [0u8; limits::MAX_SDP_BYTES];
        let params = SdpParams {
            session_id: u64::from(stream.ssrc),
            session_version: 1,
            origin_addr: &self.push_origin,
            codec: stream.codec,
            payload_type: stream.codec.payload_type(),
            destination: Some((&dest_ip, push.dest.port())),
            sps: stream.sps,
            pps: stream.pps,
            framerate: self.framerate,
            bandwidth_kbps: stream.bitrate_kbps,
        };
        match write_sdp(&params, &mut sdp) {
            Ok(n) => match std::fs::write(path, &sdp[..n]) {
                Ok(()) => log::info!("push mode: SDP written to {}", path.display()),
                Err(e) => log::error!("sdp-out {}: {e}", path.display()),
            },
            Err(_) => log::error!("sdp-out: SDP larger than {} bytes", limits::MAX_SDP_BYTES),
        }
        self.sdp_out = None;
    }

    /// Sends the push destination everything from its position to the ring head.
    fn pump_push(&mut self) {
        if let Some(p) = self.push.as_mut() {
            p.feed.pump(&self.hub.ring, &p.sock, &p.dest, &mut p.tx);
        }
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
        if let Some(p) = &self.pipeline {
            log::info!("source: {}", p.describe());
        }
        if self.sdp_out.is_some() {
            self.write_sdp_out(Instant::now());
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
                                    log::info!("SIGHUP: reopening source and encoder (sessions stay up)");
                                    self.drop_pipeline(now);
                                    self.restart_at = Some(now);
                                }
                                libc::SIGUSR1 => {
                                    log::warn!(
                                        "fault injection: the pipeline's output is discarded until it is rebuilt"
                                    );
                                    self.fault_stalled = true;
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
                    Token::Pipeline(k) => self.on_pipeline(k, rev, now),
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
                    Token::SideJpeg(k) => self.on_side_jpeg(k, rev, now),
                }
            }
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
        self.pipe_reqs.clear();
        if let Some(p) = &self.pipeline {
            p.poll_requests(&mut self.pipe_reqs);
        }
        for (k, r) in self.pipe_reqs.iter().enumerate() {
            add(&mut self.pollfds, &mut self.tokens, r.fd, r.events, Token::Pipeline(k));
        }
        self.side_reqs.clear();
        if let Some(side) = &self.side_jpeg {
            side.pipeline.poll_requests(&mut self.side_reqs);
        }
        for (k, r) in self.side_reqs.iter().enumerate() {
            add(&mut self.pollfds, &mut self.tokens, r.fd, r.events, Token::SideJpeg(k));
        }
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut ev = 0;
            // Backpressure: stop reading while a response could not be queued.
            if c.pending.len() + limits::MAX_RESPONSE_BYTES <= PENDING_CAP && !c.close_after_flush {
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
    }

    fn timeout_ms(&self, now: Instant) -> i32 {
        let mut deadline = self.next_sr;
        if let Some(t) = self.server.poll_timeout() {
            deadline = deadline.min(self.core_to_std(t));
        }
        if let Some(t) = self.idr.deadline() {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.next_watchdog {
            deadline = deadline.min(t);
        }
        if let Some(p) = &self.pipeline {
            deadline = deadline.min(self.last_unit + self.stall_timeout);
            if let Some(t) = p.next_deadline() {
                deadline = deadline.min(t);
            }
        }
        if let Some(t) = self.restart_at {
            deadline = deadline.min(t);
        }
        // Round up to whole milliseconds so the loop never spins.
        let us = deadline.saturating_duration_since(now).as_micros();
        us.div_ceil(1000).min(60_000) as i32
    }

    fn on_pipeline(&mut self, index: usize, revents: i16, now: Instant) {
        self.drive_pipeline(now, |p, sink| p.on_ready(index, revents, now, sink));
    }

    /// Runs one pipeline call, packetizes what it produced, and fans it out. A failing pipeline
    /// is dropped and rebuilt later; sessions stay.
    fn drive_pipeline(
        &mut self,
        now: Instant,
        call: impl FnOnce(&mut dyn Pipeline, &mut crate::source::Sink<'_>) -> io::Result<()>,
    ) {
        let Some(pipeline) = self.pipeline.as_mut() else { return };
        let mut any = false;
        let mut idr = false;
        let stalled = self.fault_stalled;
        let jpeg_stream = self.hub.codec() == Codec::Jpeg;
        let result = {
            let hub = &mut self.hub;
            let http = &mut self.http;
            let mut sink = |data: &[u8], capture: Instant| {
                if stalled {
                    return;
                }
                if let Some(h) = http.as_mut().filter(|_| jpeg_stream) {
                    h.store_frame(data, now);
                }
                let p = hub.push(data, capture);
                any |= p.count > 0;
                idr |= p.idr;
            };
            call(pipeline.as_mut(), &mut sink)
        };
        if any {
            self.last_unit = now;
            self.restart_backoff = RESTART_BACKOFF_MIN;
            if idr {
                // A natural IDR serves everyone waiting: no deferred request needed.
                self.idr.deferred = false;
            }
            for s in 0..self.slots.len() {
                self.pump(s, now);
            }
            self.pump_push();
            if let Some(g) = self.group.as_mut() {
                g.pump(&self.hub.ring);
            }
            if let Some(h) = self.http.as_mut() {
                h.pump_all(now);
            }
            if self.sdp_out.is_some() {
                self.write_sdp_out(now);
            }
            // Server-added latency: from the unit being available (poll returned) to its last
            // packet handed to the kernel for every client.
            let us = Instant::now().saturating_duration_since(now).as_micros().min(u128::from(u32::MAX)) as u32;
            if self.latency_us.len() == self.latency_us.capacity() {
                self.latency_us.clear();
            }
            self.latency_us.push(us);
        }
        if let Err(e) = result {
            log::error!("pipeline failed: {e}; rebuilding in {:?} (sessions stay up)", self.restart_backoff);
            self.drop_pipeline(now);
        }
    }

    fn drop_pipeline(&mut self, now: Instant) {
        self.pipeline = None;
        self.fault_stalled = false;
        self.restart_at = Some(now + self.restart_backoff);
        self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF_MAX);
    }

    /// Stall detection and rebuilding, from `on_timers`.
    fn supervise_pipeline(&mut self, now: Instant) {
        if self.pipeline.as_ref().and_then(|p| p.next_deadline()).is_some_and(|t| now >= t) {
            self.drive_pipeline(now, |p, sink| p.on_timer(now, sink));
        }
        if self.pipeline.is_some() && now.saturating_duration_since(self.last_unit) >= self.stall_timeout {
            log::warn!(
                "no access unit for {:.1} s: restarting source and encoder (sessions stay up)",
                now.saturating_duration_since(self.last_unit).as_secs_f64()
            );
            self.drop_pipeline(now);
            // A stall is not an error of the new pipeline: try at once.
            self.restart_at = Some(now);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            match (self.factory)() {
                Ok(p) => {
                    log::info!("source restarted: {}", p.describe());
                    if let Some((sps, pps)) = p.parameter_sets() {
                        self.hub.prime(&sps, &pps);
                    }
                    self.pipeline = Some(p);
                    self.last_unit = now;
                    self.on_pipeline_replaced(now);
                    // Clients in mid-GOP need the new stream's first IDR.
                    for s in &mut self.slots {
                        s.waiting_idr = true;
                    }
                    if let Some(g) = self.group.as_mut() {
                        g.restart_at_keyframe();
                    }
                }
                Err(e) => {
                    log::warn!("source restart failed: {e}; next try in {:?}", self.restart_backoff);
                    self.drop_pipeline(now);
                }
            }
        }
    }

    /// HTTP's JPEG source follows the new pipeline: the tap moves to it (or the side encoder
    /// stops, to restart on demand), and HTTP learns whether JPEG frames can be had at all.
    fn on_pipeline_replaced(&mut self, now: Instant) {
        let supply = side_jpeg::supply(self.cfg, self.pipeline.as_deref());
        let on_demand = matches!(supply, http::JpegSupply::OnDemand);
        if on_demand != self.jpeg_on_demand {
            self.jpeg_on_demand = on_demand;
            if let Some(h) = self.http.as_mut() {
                h.set_supply(supply, now);
            }
        }
        let keep = match (self.side_jpeg.as_mut(), self.pipeline.as_deref_mut()) {
            (Some(side), Some(p)) => on_demand && side.reattach(p),
            _ => true,
        };
        if !keep {
            self.stop_side_jpeg("the rebuilt source delivers other frames");
        }
    }

    /// Starts HTTP's JPEG encoder when clients want frames and stops it when none has for a while.
    fn supervise_side_jpeg(&mut self, now: Instant) {
        let wanted = self.jpeg_on_demand && self.http.as_ref().is_some_and(|h| h.wants_frames(now));
        match (&self.side_jpeg, wanted) {
            (None, true) if self.side_retry_at.is_none_or(|t| now >= t) => {
                match side_jpeg::SideJpeg::start(self.cfg, self.pipeline.as_deref_mut()) {
                    Ok(side) => {
                        self.side_jpeg = Some(side);
                        self.side_retry_at = None;
                    }
                    Err(e) => {
                        log::warn!("http: cannot start the JPEG encoder: {e}; next try in {:?}", side_jpeg::RETRY);
                        self.side_retry_at = Some(now + side_jpeg::RETRY);
                    }
                }
            }
            (Some(_), false) => self.stop_side_jpeg("no HTTP client wants frames"),
            _ => {}
        }
    }

    fn stop_side_jpeg(&mut self, why: &str) {
        if let Some(side) = self.side_jpeg.take() {
            side.detach(self.pipeline.as_deref_mut());
            // Joins the worker thread: the log line means it is gone.
            drop(side);
            log::info!("http: JPEG encoder stopped: {why}");
        }
    }

    /// JPEG frames from HTTP's encoder go to HTTP only.
    fn on_side_jpeg(&mut self, index: usize, revents: i16, now: Instant) {
        let Some(side) = self.side_jpeg.as_mut() else { return };
        let http = &mut self.http;
        let result = side.pipeline.on_ready(index, revents, now, &mut |jpeg: &[u8], _capture| {
            if let Some(h) = http.as_mut() {
                h.store_frame(jpeg, now);
            }
        });
        if let Some(h) = self.http.as_mut() {
            h.pump_all(now);
        }
        if let Err(e) = result {
            log::warn!("http: JPEG encoder failed: {e}; next try in {:?}", side_jpeg::RETRY);
            self.stop_side_jpeg("failed");
            self.side_retry_at = Some(now + side_jpeg::RETRY);
        }
    }

    fn has_session(&self, id: ConnId) -> bool {
        self.server.sessions().iter().any(|s| s.state != SessionState::Free && s.conn == id)
    }

    fn accept(&mut self, now: Instant) {
        while let Some((stream, peer)) = accept_media_conn(&self.listener, self.dscp, "rtsp") {
            // Cap on connections without a session: evict the oldest such one.
            let mut count = 0;
            // Oldest by last input, then by accept order (ids only grow).
            let mut oldest: Option<(usize, (Instant, u64))> = None;
            for (i, c) in self.conns.iter().enumerate() {
                let Some(c) = c else { continue };
                if c.dead || self.has_session(c.id) {
                    continue;
                }
                count += 1;
                let age = (c.last_input, c.id.0);
                if oldest.is_none_or(|(_, o)| age < o) {
                    oldest = Some((i, age));
                }
            }
            if count >= self.policy.max_pending_connections {
                if let Some((i, _)) = oldest {
                    if let Some(c) = &self.conns[i] {
                        log::info!(
                            "{}: closed to admit {peer}: {count} connections without a session (max-pending-connections)",
                            c.peer
                        );
                    }
                    self.kill_conn(i, "evicted: too many connections without a session");
                    self.reap_dead_conns();
                }
            }
            let Some(idx) = self.conns.iter().position(Option::is_none) else {
                log::warn!("{peer}: every connection slot is taken; closing");
                continue;
            };
            let local_ip = stream.local_addr().map_or(self.cfg_listen(), |a| a.ip().to_canonical());
            let id = ConnId(self.next_conn_id);
            self.next_conn_id += 1;
            log::info!("{peer}: connected (connection {})", id.0);
            let (inbuf, pending) = self.buffer_pool.pop().unwrap_or_else(|| {
                (vec![0; limits::MAX_REQUEST_BYTES].into_boxed_slice(), Vec::with_capacity(PENDING_CAP))
            });
            self.conns[idx] = Some(Conn {
                id,
                stream,
                peer,
                local_ip,
                inbuf,
                inlen: 0,
                pending,
                want_write: false,
                close_after_flush: false,
                dead: false,
                had_interleaved: false,
                last_input: now,
                partial_since: None,
                last_progress: now,
                tokens: u64::from(limits::REQUEST_BURST) * 1000,
                tokens_at: now,
            });
        }
    }

    fn cfg_listen(&self) -> IpAddr {
        self.listener.local_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip())
    }

    fn on_conn(&mut self, c: usize, rev: i16, now: Instant) {
        if rev & (POLLERR | POLLNVAL) != 0 {
            self.kill_conn(c, "socket error");
            return;
        }
        if rev & POLLOUT != 0 {
            self.flush_conn(c, now);
        }
        if rev & (POLLIN | POLLHUP) != 0 {
            self.read_conn(c, now);
        }
    }

    fn kill_conn(&mut self, c: usize, why: &str) {
        if let Some(conn) = self.conns[c].as_mut() {
            if !conn.dead {
                log::debug!("{}: {why}", conn.peer);
            }
            conn.dead = true;
        }
    }

    fn flush_conn(&mut self, c: usize, now: Instant) {
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        if conn.flush(now).is_err() {
            self.kill_conn(c, "write failed");
            return;
        }
        if conn.pending.is_empty() && conn.close_after_flush {
            conn.dead = true;
            return;
        }
        if conn.pending.is_empty() && conn.inlen > 0 {
            // Requests that arrived while output was backed up: answer them now rather than
            // wait for more input.
            self.process_input(c, now);
            let Some(conn) = self.conns[c].as_mut() else {
                return;
            };
            if conn.flush(now).is_err() {
                self.kill_conn(c, "write failed");
                return;
            }
        }
        if self.conns[c].as_ref().is_some_and(|conn| conn.pending.is_empty()) {
            for s in 0..self.slots.len() {
                if self.slots[s].conn == Some(c) {
                    self.pump(s, now);
                }
            }
        }
    }

    fn read_conn(&mut self, c: usize, now: Instant) {
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        let mut eof = false;
        loop {
            if conn.inlen == conn.inbuf.len() {
                break;
            }
            match (&conn.stream).read(&mut conn.inbuf[conn.inlen..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => conn.inlen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        self.process_input(c, now);
        if eof {
            self.kill_conn(c, "closed by peer");
        } else {
            self.flush_conn(c, now);
        }
    }

    /// Handles every complete request or interleaved frame in the connection's input.
    fn process_input(&mut self, c: usize, now: Instant) {
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        let inbuf = std::mem::take(&mut conn.inbuf);
        let mut inlen = conn.inlen;
        let (conn_id, peer) = (conn.id, conn.peer);
        let mut local_ip = heapless::String::<48>::new();
        let _ = std::fmt::Write::write_fmt(&mut local_ip, format_args!("{}", conn.local_ip));
        let rate = self.policy.max_request_rate;
        let mut consumed_total = 0;
        while let Some(conn) = self.conns[c].as_mut() {
            if conn.close_after_flush || conn.pending.len() + limits::MAX_RESPONSE_BYTES > PENDING_CAP {
                break;
            }
            let input = &inbuf[consumed_total..inlen];
            match parse_input(input) {
                Ok(Input::Incomplete) => break,
                Ok(Input::Interleaved { channel, data, consumed }) => {
                    conn.last_input = now;
                    consumed_total += consumed;
                    if !conn.had_interleaved && !self.slots.iter().any(|s| s.conn == Some(c)) {
                        // Binary frames on a connection that never set up an interleaved session:
                        // not a client we understand. Answer what is queued, then close. (A client
                        // that had one may still send a last RTCP BYE after TEARDOWN: ignored.)
                        log::info!("{peer}: interleaved data without an interleaved session; closing");
                        conn.close_after_flush = true;
                        consumed_total = inlen;
                        break;
                    }
                    let slot = self.slots.iter().position(|s| s.conn == Some(c) && s.channels.1 == channel);
                    if let Some(slot) = slot {
                        self.server.handle_rtcp(slot, data, self.core_now(now));
                    }
                }
                Ok(Input::Request { request, consumed }) => {
                    conn.last_input = now;
                    consumed_total += consumed;
                    if !conn.admit_request(now, rate) {
                        log::warn!("{peer}: more than {rate} requests/s; answering 503 and closing");
                        let n = session::write_error_response(503, request.cseq(), &mut self.response);
                        conn.queue(&self.response[..n]);
                        conn.close_after_flush = true;
                        consumed_total = inlen;
                        break;
                    }
                    let stream = self.hub.stream_info(now);
                    let ctx = RequestCtx { conn: conn_id, local_addr: &local_ip, stream };
                    let core_now = self.core_now(now);
                    let out = self.server.handle_request(&ctx, &request, core_now, &mut self.response);
                    log::debug!(
                        "{peer}: {} {} -> {}",
                        request.method.as_str(),
                        request.uri,
                        status_of(&self.response[..out.len])
                    );
                    if let Some(conn) = self.conns[c].as_mut() {
                        conn.queue(&self.response[..out.len]);
                    }
                    if let Some(ev) = out.event {
                        self.on_event(ev, c, now);
                    }
                }
                Err(e) => {
                    log::info!("{peer}: bad request ({}); answering {} and closing", e.reason(), e.status());
                    let n = session::write_error_response(e.status(), None, &mut self.response);
                    conn.queue(&self.response[..n]);
                    conn.close_after_flush = true;
                    consumed_total = inlen;
                    break;
                }
            }
        }
        let mut inbuf = inbuf;
        inbuf.copy_within(consumed_total..inlen, 0);
        inlen -= consumed_total;
        if let Some(conn) = self.conns[c].as_mut() {
            conn.inbuf = inbuf;
            conn.inlen = inlen;
            // Slowloris guard: remember when an incomplete request started.
            conn.partial_since = if inlen == 0 { None } else { conn.partial_since.or(Some(now)) };
        }
    }

    /// Per-connection limits, once a second: slow requests, idle sessionless connections,
    /// clients that stopped reading.
    fn enforce_connection_limits(&mut self, now: Instant) {
        for c in 0..self.conns.len() {
            let Some(conn) = self.conns[c].as_ref() else { continue };
            if conn.dead {
                continue;
            }
            let (id, peer) = (conn.id, conn.peer);
            if conn.partial_since.is_some_and(|t| now.saturating_duration_since(t) >= self.policy.request_timeout) {
                log::info!(
                    "{peer}: request not completed within {:?}; answering 408 and closing",
                    self.policy.request_timeout
                );
                let n = session::write_error_response(408, None, &mut self.response);
                if let Some(conn) = self.conns[c].as_mut() {
                    conn.inlen = 0;
                    conn.partial_since = None;
                    conn.pending.clear();
                    conn.queue(&self.response[..n]);
                    conn.close_after_flush = true;
                    if conn.flush(now).is_err() || conn.pending.is_empty() {
                        conn.dead = true;
                    }
                }
                continue;
            }
            if conn.want_write && now.saturating_duration_since(conn.last_progress) >= self.policy.client_stall_timeout
            {
                log::warn!(
                    "{peer}: took no data for {:?}; disconnecting (client stall)",
                    self.policy.client_stall_timeout
                );
                self.kill_conn(c, "stalled");
                continue;
            }
            if now.saturating_duration_since(conn.last_input) >= self.policy.idle_timeout && !self.has_session(id) {
                log::info!("{peer}: idle without a session for {:?}; closing", self.policy.idle_timeout);
                self.kill_conn(c, "idle");
            }
        }
    }

    fn on_event(&mut self, ev: Event, c: usize, now: Instant) {
        let Some(peer) = self.conns[c].as_ref().map(|x| x.peer) else {
            return;
        };
        match ev {
            Event::Setup { slot } => {
                let sess = self.server.sessions()[slot];
                let s = &mut self.slots[slot];
                s.reset();
                s.peer = Some(peer);
                match sess.delivery {
                    Delivery::Udp { client_rtp, client_rtcp, .. } => {
                        s.rtp_dest = Some(SocketAddr::new(peer.ip(), client_rtp));
                        s.rtcp_dest = Some(SocketAddr::new(peer.ip(), client_rtcp));
                    }
                    Delivery::Interleaved { rtp_channel, rtcp_channel } => {
                        if let Some(conn) = self.conns[c].as_mut() {
                            conn.had_interleaved = true;
                        }
                        s.conn = Some(c);
                        s.channels = (rtp_channel, rtcp_channel);
                    }
                    // Sent by the group stream, not by the slot.
                    Delivery::Multicast { .. } => {}
                }
            }
            Event::Play { slot } => {
                let sess = self.server.sessions()[slot];
                let s = &mut self.slots[slot];
                s.playing = true;
                s.waiting_idr = true;
                s.next = self.hub.ring.head();
                s.play_at = Some(now);
                log::info!("{peer}: PLAY session {:016X} via {}", sess.id, describe_delivery(&sess, s));
                self.request_idr(now);
                self.sync_group();
            }
            Event::Pause { slot } => {
                self.slots[slot].playing = false;
                log::info!("{peer}: PAUSE session {:016X}", self.server.sessions()[slot].id);
                self.sync_group();
            }
            Event::Teardown { slot } => self.end_session(slot, "TEARDOWN"),
            Event::SetBitrate { bps } => {
                if self.pipeline.as_mut().is_some_and(|p| p.set_bitrate(bps)) {
                    log::info!("{peer}: bitrate set to {} kbit/s", bps / 1000);
                } else {
                    log::warn!("{peer}: bitrate change to {bps} asked, but this source cannot change its bitrate");
                }
            }
        }
    }

    /// Asks a live encoder for an IDR for a joining client, rate-limited.
    fn request_idr(&mut self, now: Instant) {
        let Some(p) = self.pipeline.as_mut() else { return };
        if p.idr_control() == IdrControl::OnRequest && self.idr.request(now) {
            p.request_idr();
        }
    }

    fn end_session(&mut self, slot: usize, why: &str) {
        let sess = self.server.sessions()[slot];
        let s = &mut self.slots[slot];
        let r = sess.reception;
        let peer = s.peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
        log::info!(
            "{peer}: session {:016X} ended ({why}); sent {} packets, dropped {}; client reports: {} RR, lost {}, jitter {:.1} ms",
            sess.id,
            s.sent,
            s.dropped,
            r.reports,
            r.cumulative_lost,
            f64::from(r.jitter) / 90.0
        );
        s.reset();
        self.sync_group();
    }

    /// Runs the multicast group stream while any multicast session plays (see `multicast`).
    fn sync_group(&mut self) {
        if let Some(g) = self.group.as_mut() {
            g.set_playing(self.server.multicast_playing(), &self.hub.ring);
        }
    }

    /// Sends a slot everything from its position to the ring head, as far as its transport
    /// takes it now.
    fn pump(&mut self, slot: usize, now: Instant) {
        let s = &mut self.slots[slot];
        if !s.playing {
            return;
        }
        let ring = &self.hub.ring;
        if s.next < ring.oldest() {
            // Fell behind the ring (a stalled TCP reader): skip to the next IDR.
            s.waiting_idr = true;
            s.dropped += ring.oldest() - s.next;
        }
        if s.waiting_idr {
            match ring.next_keyframe(s.next) {
                Some(k) => {
                    s.next = k;
                    s.waiting_idr = false;
                    if let Some(t) = s.play_at.take() {
                        log::debug!(
                            "slot {slot}: first IDR {:.1} ms after PLAY",
                            now.saturating_duration_since(t).as_secs_f64() * 1e3
                        );
                    }
                }
                None => {
                    s.next = ring.head();
                    return;
                }
            }
        }
        match s.conn {
            None => {
                let Some(dest) = s.rtp_dest else { return };
                // The same ring bytes for every client, up to BATCH packets per sendmmsg(2).
                let mut batch: [&[u8]; sys::BATCH] = [&[]; sys::BATCH];
                while s.next < ring.head() {
                    let mut n = 0;
                    while n < sys::BATCH && s.next + (n as u64) < ring.head() {
                        let Some(pkt) = ring.get(s.next + n as u64) else { break };
                        batch[n] = pkt.bytes;
                        n += 1;
                    }
                    if n == 0 {
                        break;
                    }
                    // Runs of equal-size packets go as one GSO message each (see `udp_tx`).
                    let sent = s.tx.send(&s.rtp, &dest, &batch[..n]);
                    s.sent += sent as u64;
                    // Refused (full socket buffer, ICMP-reported unreachable port): dropped, never
                    // queued. An error on the first packet refuses the whole batch.
                    s.dropped += (n - sent) as u64;
                    s.next += n as u64;
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
                while s.next < ring.head() {
                    let mut n = 0;
                    let mut total = 0;
                    for (k, h) in hdrs.iter_mut().enumerate() {
                        let Some(pkt) = ring.get(s.next + k as u64) else { break };
                        let len = pkt.bytes.len() as u16;
                        *h = [b'$', s.channels.0, (len >> 8) as u8, len as u8];
                        total += 4 + pkt.bytes.len();
                        n += 1;
                    }
                    let mut iov = [IoSlice::new(&[]); 2 * sys::BATCH];
                    for k in 0..n {
                        iov[2 * k] = IoSlice::new(&hdrs[k]);
                        iov[2 * k + 1] = IoSlice::new(ring.get(s.next + k as u64).map_or(&[][..], |p| p.bytes));
                    }
                    match (&conn.stream).write_vectored(&iov[..2 * n]) {
                        Ok(written) if written >= total => {
                            conn.last_progress = now;
                            s.sent += n as u64;
                            s.next += n as u64;
                        }
                        Ok(written) => {
                            conn.last_progress = now;
                            // Partial write: whole packets are done; keep the rest of the one cut
                            // in the middle, then wait for POLLOUT.
                            let mut left = written;
                            for k in 0..n {
                                let pkt = iov[2 * k + 1];
                                let size = 4 + pkt.len();
                                s.sent += 1;
                                s.next += 1;
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
            && s.dropped > 0
            && s.conn.is_none()
        {
            self.udp_drops_logged = now;
            log::warn!("slot {slot}: {} packets dropped so far (kernel send buffer full)", s.dropped);
        }
    }

    fn on_udp(&mut self, slot: usize, is_rtcp: bool, now: Instant) {
        let expected_ip = self.slots[slot].peer.map(|p| p.ip().to_canonical());
        loop {
            let sock = if is_rtcp { &self.slots[slot].rtcp } else { &self.slots[slot].rtp };
            match sock.recv_from(&mut self.rtcp_buf) {
                Ok((n, from)) => {
                    // Only the session's own client may refresh it.
                    if is_rtcp && Some(from.ip().to_canonical()) == expected_ip {
                        let core_now = self.core_now(now);
                        self.server.handle_rtcp(slot, &self.rtcp_buf[..n], core_now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or an ICMP error queued on the socket: nothing more to read.
                Err(_) => break,
            }
        }
    }

    fn reap_dead_conns(&mut self) {
        // (Connection buffers go back to the pool below, so accepting allocates nothing.)
        for c in 0..self.conns.len() {
            let Some(conn) = self.conns[c].as_ref() else {
                continue;
            };
            if !conn.dead {
                continue;
            }
            let (id, peer) = (conn.id, conn.peer);
            while let Some(slot) = self.server.close_session_of(id) {
                self.end_session(slot, "connection closed");
            }
            for s in &mut self.slots {
                if s.conn == Some(c) {
                    s.reset();
                }
            }
            log::info!("{peer}: disconnected (connection {})", id.0);
            if let Some(mut conn) = self.conns[c].take() {
                conn.pending.clear();
                self.buffer_pool.push((std::mem::take(&mut conn.inbuf), std::mem::take(&mut conn.pending)));
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let core_now = self.core_now(now);
        while let Some(slot) = self.server.poll_expired(core_now) {
            self.end_session(slot, "timed out");
        }
        if self.idr.poll(now) {
            if let Some(p) = self.pipeline.as_mut().filter(|p| p.idr_control() == IdrControl::OnRequest) {
                p.request_idr();
            }
        }
        self.supervise_pipeline(now);
        self.supervise_side_jpeg(now);
        if now >= self.next_sr {
            // Once a second: sender reports, and the per-connection limits.
            self.next_sr = now + Duration::from_millis(limits::RTCP_SR_INTERVAL_MS);
            self.send_rtcp(now, false);
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

    /// One `stats:` line: slots, connections, server-added latency, traffic, memory.
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
        let (sent, dropped) = self.slots.iter().fold((0, 0), |(a, b), s| (a + s.sent, b + s.dropped));
        let txs = self
            .slots
            .iter()
            .map(|s| &s.tx)
            .chain(self.push.as_ref().map(|p| &p.tx))
            .chain(self.group.as_ref().map(|g| &g.tx));
        let (gso_msgs, gso_pkts, datagrams) =
            txs.fold((0, 0, 0), |(a, b, c), t| (a + t.gso_messages, b + t.gso_packets, c + t.datagrams));
        log::info!(
            "stats: sessions {sessions}/{} playing {playing} connections {conns} | server latency per access unit over {} units: p50 {} us p99 {} us max {} us | packets {} sent {sent} dropped {dropped} (current sessions) | udp gso messages {gso_msgs} carrying {gso_pkts} packets, single datagrams {datagrams} (since start) | rss {} KiB fds {}",
            self.slots.len(),
            self.latency_scratch.len(),
            pick(0.5),
            pick(0.99),
            self.latency_scratch.last().copied().unwrap_or(0),
            self.hub.packets,
            sys::rss_kib().unwrap_or(0),
            std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        );
        if let Some(p) = &self.pipeline {
            log::info!("stats: pipeline frames dropped {} (since it started)", p.frames_dropped());
        }
        if let Some(g) = &self.group {
            let (sent, dropped) = g.counters();
            log::info!(
                "stats: multicast {} sessions playing {} packets sent {sent} dropped {dropped}",
                g.rtp_dest(),
                self.server.multicast_playing()
            );
        }
        if let Some(h) = &self.http {
            log::info!("stats: http MJPEG streams {} parts sent {}", h.streaming(), h.parts_sent);
        }
    }

    /// Sends a sender report (or, with `bye`, SR+SDES+BYE) to every playing session.
    fn send_rtcp(&mut self, now: Instant, bye: bool) {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let sr = SenderReport {
            ssrc: self.hub.ssrc(),
            ntp: rtcp::ntp_from_unix(wall.as_secs(), wall.subsec_nanos()),
            rtp_timestamp: self.hub.rtp_time(now),
            packet_count: self.hub.packets as u32,
            octet_count: self.hub.octets as u32,
        };
        let mut pkt = [0u8; 256];
        let written = if bye {
            rtcp::write_bye(&sr, &self.cname, &mut pkt[4..])
        } else {
            rtcp::write_sender_report(&sr, &self.cname, &mut pkt[4..])
        };
        let Ok(n) = written else { return };
        if let Some(p) = self.push.as_ref().filter(|p| !p.feed.waiting_keyframe) {
            let _ = p.sock.send_to(&pkt[4..4 + n], SocketAddr::new(p.dest.ip(), p.dest.port().wrapping_add(1)));
        }
        if let Some(g) = self.group.as_ref() {
            g.send_rtcp(&pkt[4..4 + n]);
        }
        for (i, s) in self.slots.iter().enumerate() {
            if !s.playing || self.server.sessions()[i].state != SessionState::Playing {
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
