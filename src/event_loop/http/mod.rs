//! The loop's HTTP connections: MJPEG streams, snapshots and the index page of several streams
//! (protocol core in [`crate::http`]).
//!
//! Streams are fixed at construction ([`HttpStream`]: a path and a [`JpegSupply`]) and named by
//! their index, as the loop names them; `/PATH.mjpeg` and `/PATH.jpg` of each stream, and `/`
//! (every stream on one page). A connection serves at most one stream at a time: the one its
//! MJPEG stream or waiting snapshot belongs to (`stream` in its state); a persistent connection
//! may ask for another stream's snapshot next.
//!
//! Invariants:
//! - Fixed slots (`--max-http-clients`) and fixed per-connection buffers: one head-sized input
//!   buffer, and an output buffer holding one response at a time (at most one frame, or the
//!   index page, and its headers; it grows to the largest and keeps its capacity in the pool).
//! - Persistent connections: a complete non-streaming response leaves the connection open when
//!   the request allows it ([`http::Request::persistence`]: HTTP/1.1 unless `Connection: close`,
//!   HTTP/1.0 only with `keep-alive`, never after a request with a body). Malformed heads, `503`
//!   for a full server, and the MJPEG stream end with the connection.
//! - Pipelining without reordering or growth: bytes after a request head stay in the input
//!   buffer, and the next request is parsed only once the previous response is fully written. A
//!   full input buffer stops reading (TCP backpressure); nothing is ever discarded unparsed.
//! - Slots: a new connection with every slot taken evicts the connection idle longest between
//!   requests (never a stream, a request in progress or a waiting snapshot); `503` and close only
//!   when none is idle.
//! - Timers, checked once a second by [`Http::enforce_limits`]: `request-timeout` from connect
//!   or from a request's first byte to its complete head (`408`, close); `idle-timeout` between
//!   requests on a persistent connection (closed, no response); `client-stall-timeout` while a
//!   response is not taken; [`SNAPSHOT_WAIT`] for a snapshot waiting for a frame (`503`).
//! - Newest frame wins per client: one latest-frame buffer per stream (allocated at start, grown
//!   to the largest frame, never shrunk); a streaming client gets a copy of its stream's frame
//!   (part header + JPEG) only when it has finished sending the previous part, so a slow client
//!   skips frames. A snapshot gets the latest frame only if it is fresh
//!   ([`FRESH_FRAME_MAX_AGE`]), else the next one stored. A client only ever gets frames of the
//!   stream it asked for.
//! - Per stream: [`JpegSupply`], latest frame, demand ([`Http::wants_frames`]) and parts sent.
//!   With `Unavailable(why)` that stream's JPEG routes answer `503` with `why` at once, and the
//!   index page shows `why` instead of its picture; `Stream` and `OnDemand` behave alike here
//!   ([`Http::wants_frames`] tells the loop when that stream's on-demand encoder is needed).
//! - Credentials ([`Http::set_auth`]): a user limited to a path gets that stream's routes only;
//!   the index page and `404`s need a user allowed on at least one stream.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::http::{self, Method, Parsed, Persistence, Route};
use crate::rtsp::auth::Verdict;
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::wbuf::WBuf;

/// A snapshot is served the latest frame only if it arrived within this long; else it waits.
pub(super) const FRESH_FRAME_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a snapshot waits for a frame before it gets `503`.
pub(super) const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// [`Http::wants_frames`] stays true this long after a client last asked for or took a frame,
/// so a script polling snapshots does not restart an on-demand encoder for every one.
pub(super) const DEMAND_LINGER: Duration = Duration::from_secs(5);
/// Longest `Unavailable` reason sent (it must fit the response scratch buffer with the head).
const MAX_REASON_BYTES: usize = 512;

/// A report the loop renders on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    /// `/status`, JSON.
    Status,
    /// `/metrics`, the Prometheus text format (version 0.0.4).
    Metrics,
    /// `POST /PATH/record?start|stop` for stream `stream`: the loop switches its recorder and
    /// answers with the recorder's state (JSON).
    Record { stream: usize, start: bool },
}

impl Report {
    fn content_type(self) -> &'static str {
        match self {
            Report::Status | Report::Record { .. } => "application/json",
            Report::Metrics => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// One stream as HTTP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HttpStream {
    /// The stream path, e.g. `/live`: served as `/live.mjpeg` and `/live.jpg`.
    pub(super) path: String,
    pub(super) supply: JpegSupply,
}

/// Where the JPEG frames of a stream's HTTP routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JpegSupply {
    /// The stream itself is JPEG.
    Stream,
    /// The loop can start a side encoder while [`Http::wants_frames`] says so.
    OnDemand,
    /// No JPEG frames: the JPEG routes answer `503` with this reason.
    Unavailable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request head: `since` the connection opened or the head's first byte came.
    Reading { since: Instant },
    /// A persistent connection between requests `since` its last response was written.
    Idle { since: Instant },
    /// Sending a complete response; then the next request (maybe already in the input buffer).
    Responding,
    /// A snapshot of `stream` waiting `since` for a frame after number `seen`.
    WaitingFrame { stream: usize, since: Instant, seen: u64, head: bool, persistence: Persistence },
    /// A `/status` or `/metrics` request waiting for the loop to render it (within the same
    /// turn of the loop: [`Http::reports_wanted`], [`Http::answer_reports`]).
    WaitingReport { report: Report, head: bool, persistence: Persistence },
    /// Sending the multipart stream of `stream`; `sent` is the sequence number of the last frame
    /// queued.
    Streaming { stream: usize, sent: u64 },
    /// Sending a last response, then closing.
    Closing,
}

impl State {
    /// The state after a complete response has been queued.
    fn after_response(persistence: Persistence) -> State {
        match persistence {
            Persistence::KeepAlive => State::Responding,
            Persistence::Close => State::Closing,
        }
    }

    /// The stream whose frames the connection waits for or streams.
    fn stream(self) -> Option<usize> {
        match self {
            State::WaitingFrame { stream, .. } | State::Streaming { stream, .. } => Some(stream),
            _ => None,
        }
    }
}

/// One stream's supply, latest frame and demand.
#[derive(Debug)]
struct StreamState {
    path: String,
    supply: JpegSupply,
    /// The latest JPEG frame, its sequence number (0 = none yet) and when it was stored.
    latest: Vec<u8>,
    latest_seq: u64,
    latest_at: Option<Instant>,
    /// When a client last asked for or took a frame (for [`Http::wants_frames`]).
    last_demand: Option<Instant>,
    parts_sent: u64,
}

impl StreamState {
    fn unavailable(&self) -> Option<&str> {
        match &self.supply {
            JpegSupply::Unavailable(why) => Some(why),
            JpegSupply::Stream | JpegSupply::OnDemand => None,
        }
    }

    /// The latest frame arrived within [`FRESH_FRAME_MAX_AGE`].
    fn fresh(&self, now: Instant) -> bool {
        self.latest_at.is_some_and(|t| now.saturating_duration_since(t) <= FRESH_FRAME_MAX_AGE)
    }
}

/// The streams as the index page lists them.
fn index_entries(streams: &[StreamState]) -> impl Iterator<Item = http::IndexEntry<'_>> + '_ {
    streams.iter().map(|s| http::IndexEntry { path: &s.path, unavailable: s.unavailable() })
}

/// Appends text to a connection's output buffer.
struct Appender<'v>(&'v mut Vec<u8>);

impl std::fmt::Write for Appender<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Debug)]
struct HttpConn {
    stream: TcpStream,
    peer: SocketAddr,
    inbuf: Box<[u8]>,
    inlen: usize,
    out: Vec<u8>,
    out_pos: usize,
    state: State,
    last_progress: Instant,
    /// The client closed its side (or reset): finish what is asked, read nothing more.
    peer_eof: bool,
    dead: bool,
}

impl HttpConn {
    /// Writes what is pending. `Err` means the connection is gone.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match (&self.stream).write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        self.last_progress = now;
        Ok(())
    }

    fn flushed(&self) -> bool {
        self.out_pos >= self.out.len()
    }

    /// Whether bytes from the client go to the input buffer (a next request) or are discarded.
    fn keeps_input(&self) -> bool {
        !matches!(self.state, State::Streaming { .. } | State::Closing)
    }

    /// Reads what the client sent into the input buffer while it has room (a streaming or
    /// closing connection's bytes are discarded: they can never be a request that is answered).
    fn read_input(&mut self) {
        loop {
            let mut discard = [0u8; 512];
            let keep = self.keeps_input();
            let buf = match keep {
                false => &mut discard[..],
                true if self.inlen < self.inbuf.len() => &mut self.inbuf[self.inlen..],
                true => return,
            };
            match (&self.stream).read(buf) {
                Ok(0) => {
                    self.peer_eof = true;
                    return;
                }
                Ok(n) if keep => self.inlen += n,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.peer_eof = true;
                    return;
                }
            }
        }
    }

    /// Replaces the (flushed) output with `response` and, if given, the frame after it.
    fn queue(&mut self, response: &[u8], frame: Option<&[u8]>, now: Instant) {
        self.out.clear();
        self.out_pos = 0;
        self.out.extend_from_slice(response);
        if let Some(frame) = frame {
            self.out.extend_from_slice(frame);
        }
        self.last_progress = now;
    }
}

/// The HTTP listener and its connection slots.
#[derive(Debug)]
pub(super) struct Http<'a> {
    listener: TcpListener,
    conns: Vec<Option<HttpConn>>,
    /// Fixed at construction; a stream's number is its index.
    streams: Vec<StreamState>,
    request_timeout: Duration,
    stall_timeout: Duration,
    idle_timeout: Duration,
    scratch: Box<[u8]>,
    pool: Vec<(Box<[u8]>, Vec<u8>)>,
    /// DSCP for connections (`--dscp`: MJPEG is media too).
    dscp: u8,
    /// The RTSP users, when configured: the same credentials guard the pictures here, and the
    /// clock origin of Digest nonces.
    auth: Option<(crate::rtsp::auth::Auth<'a>, Instant)>,
}

impl<'a> Http<'a> {
    /// `streams`: fixed for the server's life, stream `n` is `streams[n]` in every method;
    /// `request_timeout`: connect or first byte to complete head; `stall_timeout`: a client
    /// taking no bytes of a response; `idle_timeout`: a persistent connection between requests.
    pub(super) fn new(
        listener: TcpListener,
        slots: usize,
        streams: Vec<HttpStream>,
        request_timeout: Duration,
        stall_timeout: Duration,
        idle_timeout: Duration,
    ) -> io::Result<Http<'a>> {
        listener.set_nonblocking(true)?;
        Ok(Http {
            listener,
            conns: (0..slots).map(|_| None).collect(),
            streams: streams
                .into_iter()
                .map(|s| StreamState {
                    path: s.path,
                    supply: bounded_reason(s.supply),
                    latest: Vec::new(),
                    latest_seq: 0,
                    latest_at: None,
                    last_demand: None,
                    parts_sent: 0,
                })
                .collect(),
            request_timeout,
            stall_timeout,
            idle_timeout,
            scratch: vec![0; 4096].into_boxed_slice(),
            dscp: 0,
            auth: None,
            pool: (0..slots).map(|_| (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new())).collect(),
        })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(super) fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// `(slot, fd, events)` of every connection, for the poll set.
    pub(super) fn interests(&self) -> impl Iterator<Item = (usize, RawFd, i16)> + '_ {
        self.conns.iter().enumerate().filter_map(|(i, c)| {
            let c = c.as_ref().filter(|c| !c.dead)?;
            // Streaming clients are read too: that is how their hang-up is seen. A closing one, or
            // one whose peer has closed, is not (EOF would keep it readable and the loop spinning);
            // poll still reports POLLHUP/POLLERR. A full input buffer waits for the response.
            let reads = match c.state {
                State::Closing => false,
                State::Streaming { .. } => !c.peer_eof,
                _ => !c.peer_eof && c.inlen < c.inbuf.len(),
            };
            let mut ev = if reads { POLLIN } else { 0 };
            if !c.flushed() {
                ev |= POLLOUT;
            }
            Some((i, c.stream.as_raw_fd(), ev))
        })
    }

    /// Requires `auth`'s credentials (Basic or Digest, as for RTSP) for every page and picture;
    /// nonce times count from `epoch`.
    pub(super) fn set_auth(&mut self, auth: crate::rtsp::auth::Auth<'a>, epoch: Instant) {
        self.auth = Some((auth, epoch));
    }

    /// Marks every accepted connection with `dscp` (0 = unmarked).
    pub(super) fn set_dscp(&mut self, dscp: u8) {
        self.dscp = dscp;
    }

    /// MJPEG streams of `stream` playing.
    pub(super) fn streaming(&self, stream: usize) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| !c.dead && matches!(c.state, State::Streaming { stream: s, .. } if s == stream))
            .count()
    }

    /// MJPEG parts (frames) sent to the clients of `stream` so far.
    pub(super) fn parts_sent(&self, stream: usize) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.parts_sent)
    }

    /// Tells where the JPEG frames of `stream` come from now (the loop calls it when the
    /// pipeline is rebuilt). Becoming `Unavailable` answers that stream's waiting snapshots with
    /// the reason, ends its MJPEG streams after the part being sent, and forgets its latest frame.
    pub(super) fn set_supply(&mut self, stream: usize, supply: JpegSupply, now: Instant) {
        let Some(st) = self.streams.get_mut(stream) else { return };
        st.supply = bounded_reason(supply);
        let JpegSupply::Unavailable(why) = &st.supply else { return };
        let why = why.clone();
        st.latest_at = None;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead && c.state.stream() == Some(stream)) else {
                continue;
            };
            match c.state {
                State::WaitingFrame { persistence, .. } => {
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_text(&mut w, 503, &why, persistence).is_err() {
                        c.dead = true;
                        continue;
                    }
                    log::debug!("http {}: snapshot -> 503 ({why})", c.peer);
                    c.queue(w.written(), None, now);
                    c.state = State::after_response(persistence);
                }
                State::Streaming { .. } => {
                    log::info!("http {}: MJPEG stream ended: {why}", c.peer);
                    c.state = State::Closing;
                }
                _ => continue,
            }
            self.pump(i, now);
        }
    }

    /// Whether JPEG frames of `stream` are wanted: while a client streams it or waits for its
    /// snapshot, and for [`DEMAND_LINGER`] after a client last asked for or took one of it.
    pub(super) fn wants_frames(&self, stream: usize, now: Instant) -> bool {
        let Some(st) = self.streams.get(stream).filter(|s| s.unavailable().is_none()) else { return false };
        let waiting = self.conns.iter().flatten().any(|c| !c.dead && c.state.stream() == Some(stream));
        waiting || st.last_demand.is_some_and(|t| now.saturating_duration_since(t) < DEMAND_LINGER)
    }

    pub(super) fn accept(&mut self, now: Instant) {
        while let Some((stream, peer)) = super::accept_media_conn(&self.listener, self.dscp, "http") {
            let Some(idx) = self.free_slot(peer) else {
                log::warn!("http {peer}: every HTTP slot is busy (max-http-clients); 503");
                let mut w = WBuf::new(&mut self.scratch);
                if http::write_error(&mut w, 503, Persistence::Close).is_ok() {
                    let _ = (&stream).write(w.written());
                }
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            let (inbuf, out) =
                self.pool.pop().unwrap_or_else(|| (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new()));
            log::debug!("http {peer}: connected");
            self.conns[idx] = Some(HttpConn {
                stream,
                peer,
                inbuf,
                inlen: 0,
                out,
                out_pos: 0,
                state: State::Reading { since: now },
                last_progress: now,
                peer_eof: false,
                dead: false,
            });
        }
    }

    /// A slot for a new connection from `peer`: a free one (or one whose connection is closed),
    /// else that of the connection idle longest between requests, which is closed.
    fn free_slot(&mut self, peer: SocketAddr) -> Option<usize> {
        if let Some(i) = self.conns.iter().position(|c| c.as_ref().is_none_or(|c| c.dead)) {
            self.release(i);
            return Some(i);
        }
        let (_, oldest) = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.as_ref()?.state {
                State::Idle { since } => Some((since, i)),
                _ => None,
            })
            .min()?;
        if let Some(c) = &self.conns[oldest] {
            log::debug!("http {}: idle connection closed to make room for {peer} (every HTTP slot is taken)", c.peer);
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.release(oldest);
        Some(oldest)
    }

    /// Empties a slot; the connection's buffers go back to the pool.
    fn release(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            log::debug!("http {}: closed", c.peer);
            c.out.clear();
            self.pool.push((c.inbuf, c.out));
        }
    }

    pub(super) fn on_conn(&mut self, i: usize, rev: i16, now: Instant) {
        let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead) else { return };
        if rev & (POLLERR | POLLNVAL) != 0 {
            c.dead = true;
            return;
        }
        if rev & (POLLIN | POLLHUP) != 0 && !c.peer_eof {
            c.read_input();
            // POLLHUP: both directions are shut (a reset); with a full input buffer it cannot be
            // seen as EOF by reading.
            if rev & POLLHUP != 0 && c.keeps_input() && c.inlen == c.inbuf.len() {
                c.peer_eof = true;
            }
        }
        self.handle_input(i, now);
        self.pump(i, now);
    }

    /// Parses the request at the start of the input buffer, if the connection waits for one, and
    /// queues its response (or starts the stream, or the wait for a frame).
    fn handle_input(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead) else { return };
        let since = match c.state {
            State::Idle { .. } if c.inlen > 0 => now,
            State::Reading { since } => since,
            _ => return,
        };
        c.state = State::Reading { since };
        let mut w = WBuf::new(&mut self.scratch);
        let (request, consumed) = match http::parse_request(&c.inbuf[..c.inlen]) {
            Ok(Parsed::Incomplete) => return,
            Err(e) => {
                log::debug!("http {}: bad request ({e:?}): {}", c.peer, e.status());
                let _ = http::write_error(&mut w, e.status(), Persistence::Close);
                c.queue(w.written(), None, now);
                c.state = State::Closing;
                c.inlen = 0;
                return;
            }
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
        };
        let head = request.method == Method::Head;
        let persistence = request.persistence();
        let streams = &self.streams;
        let route = match http::route(&request, streams.iter().map(|s| s.path.as_str())) {
            Route::Index
            | Route::Mjpeg(_)
            | Route::Snapshot(_)
            | Route::Status
            | Route::Metrics
            | Route::Record(..)
            | Route::BadRecordAction
            | Route::NotFound
                if request.has_body =>
            {
                None
            }
            route => Some(route),
        };
        // Everything but a malformed or unsupported request needs the credentials, when set: a
        // picture those of its stream's path, the page and 404s those of any stream.
        let denied = match (&self.auth, route) {
            (None, _) | (_, None | Some(Route::MethodNotAllowed)) => None,
            (Some((auth, epoch)), Some(route)) => {
                let now_s = now.saturating_duration_since(*epoch).as_secs();
                let method = match request.method {
                    Method::Head => "HEAD",
                    Method::Post => "POST",
                    _ => "GET",
                };
                let authorization = request.authorization;
                let verdict = match route {
                    Route::Mjpeg(s) | Route::Snapshot(s) | Route::Record(s, _) => {
                        auth.verify(authorization, method, &streams[s].path, now_s)
                    }
                    _ => verify_any(auth, authorization, method, streams.iter().map(|s| s.path.as_str()), now_s),
                };
                match verdict {
                    Verdict::Allowed { .. } => None,
                    Verdict::Denied => Some((auth, now_s, false)),
                    Verdict::Stale => Some((auth, now_s, true)),
                }
            }
        };
        let mut frame = None;
        let mut index_body = false;
        let mut demand = None;
        let written = match (route, denied) {
            // Bodies are not read, so the connection cannot go on (persistence is Close).
            (None, _) => http::write_error(&mut w, 400, Persistence::Close).map(|_| State::Closing),
            (Some(Route::MethodNotAllowed), _) => {
                http::write_error(&mut w, 405, persistence).map(|_| State::after_response(persistence))
            }
            (Some(_), Some((auth, now_s, stale))) => http::write_unauthorized(&mut w, auth, now_s, stale, persistence)
                .map(|_| State::after_response(persistence)),
            // The head now; the page goes straight into the output buffer after it.
            (Some(Route::Index), None) => {
                index_body = !head;
                let len = http::index_len(index_entries(streams));
                http::write_head(&mut w, 200, "text/html; charset=utf-8", Some(len), persistence)
                    .map(|_| State::after_response(persistence))
            }
            (Some(Route::NotFound), None) => {
                http::write_error(&mut w, 404, persistence).map(|_| State::after_response(persistence))
            }
            (Some(Route::Status), None) => Ok(State::WaitingReport { report: Report::Status, head, persistence }),
            (Some(Route::Metrics), None) => Ok(State::WaitingReport { report: Report::Metrics, head, persistence }),
            (Some(Route::Record(stream, start)), None) => {
                Ok(State::WaitingReport { report: Report::Record { stream, start }, head, persistence })
            }
            (Some(Route::BadRecordAction), None) => {
                http::write_text(&mut w, 400, "POST /PATH/record?start or /PATH/record?stop", persistence)
                    .map(|_| State::after_response(persistence))
            }
            (Some(picture @ (Route::Snapshot(stream) | Route::Mjpeg(stream))), None) => {
                let st = &streams[stream];
                let fresh = st.fresh(now);
                demand = st.unavailable().is_none().then_some(stream);
                match (picture, st.unavailable()) {
                    (_, Some(why)) => {
                        http::write_text(&mut w, 503, why, persistence).map(|_| State::after_response(persistence))
                    }
                    (Route::Snapshot(_), None) if fresh => {
                        frame = (!head).then_some(&st.latest[..]);
                        http::write_head(&mut w, 200, "image/jpeg", Some(st.latest.len()), persistence)
                            .map(|_| State::after_response(persistence))
                    }
                    (Route::Snapshot(_), None) => {
                        Ok(State::WaitingFrame { stream, since: now, seen: st.latest_seq, head, persistence })
                    }
                    (_, None) if head => {
                        http::write_mjpeg_head(&mut w, persistence).map(|_| State::after_response(persistence))
                    }
                    // The stream starts with the latest frame only if it is fresh, else with the next.
                    (_, None) => {
                        let sent = if fresh { st.latest_seq.saturating_sub(1) } else { st.latest_seq };
                        http::write_mjpeg_head(&mut w, Persistence::Close).map(|_| State::Streaming { stream, sent })
                    }
                }
            }
        };
        let Ok(next) = written else {
            log::warn!("http {}: response to {} did not fit its buffer; closing", c.peer, request.path);
            c.dead = true;
            return;
        };
        let status = std::str::from_utf8(w.written().get(9..12).unwrap_or(b"...")).unwrap_or("...");
        match next {
            State::WaitingFrame { .. } => log::debug!("http {}: {} waits for a fresh frame", c.peer, request.path),
            State::WaitingReport { .. } => log::debug!("http {}: {}", c.peer, request.path),
            _ => log::debug!("http {}: {:?} {} -> {status} {persistence:?}", c.peer, request.method, request.path),
        }
        if let State::Streaming { .. } = next {
            log::info!("http {}: MJPEG stream started: {}", c.peer, request.path);
        }
        c.queue(w.written(), frame, now);
        if index_body {
            // Cannot fail: the sink grows (the pooled output buffer keeps its capacity).
            let _ = http::write_index(&mut Appender(&mut c.out), index_entries(streams));
        }
        c.state = next;
        if matches!(next, State::Closing | State::Streaming { .. }) {
            c.inlen = 0;
        } else {
            // Pipelined bytes stay for the next request.
            c.inbuf.copy_within(consumed..c.inlen, 0);
            c.inlen -= consumed;
        }
        if let Some(stream) = demand {
            self.streams[stream].last_demand = Some(now);
        }
    }

    /// Keeps the latest frame of `stream` (a copy into that stream's buffer) and when it
    /// arrived. Call [`Http::pump_stream`] after it to send it.
    pub(super) fn store_frame(&mut self, stream: usize, jpeg: &[u8], now: Instant) {
        let Some(st) = self.streams.get_mut(stream).filter(|s| s.unavailable().is_none()) else { return };
        st.latest.clear();
        st.latest.extend_from_slice(jpeg);
        st.latest_seq += 1;
        st.latest_at = Some(now);
    }

    /// Pumps the clients of one stream (after store_frame of that stream): sends its latest frame
    /// to each of its streaming clients that is idle and each snapshot waiting for it.
    pub(super) fn pump_stream(&mut self, stream: usize, now: Instant) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.state.stream() == Some(stream)) {
                self.pump(i, now);
            }
        }
    }

    /// Which reports connections wait for: the loop renders each and calls
    /// [`Http::answer_reports`] in the same turn.
    pub(super) fn reports_wanted(&self) -> impl Iterator<Item = Report> + '_ {
        self.conns.iter().enumerate().filter_map(move |(i, c)| {
            let State::WaitingReport { report, .. } = c.as_ref().filter(|c| !c.dead)?.state else { return None };
            // Each report once: the first connection waiting for it stands for all.
            let first = self.conns.iter().position(|o| {
                o.as_ref().is_some_and(|o| {
                    !o.dead && matches!(o.state, State::WaitingReport { report: r, .. } if r == report)
                })
            });
            (first == Some(i)).then_some(report)
        })
    }

    /// Answers every connection waiting for `report` with `status` and `body`.
    pub(super) fn answer_reports(&mut self, report: Report, status: u16, body: &str, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead) else { continue };
            let State::WaitingReport { report: r, head, persistence } = c.state else { continue };
            if r != report {
                continue;
            }
            let mut w = WBuf::new(&mut self.scratch);
            if http::write_head(&mut w, status, report.content_type(), Some(body.len()), persistence).is_err() {
                c.dead = true;
                continue;
            }
            c.queue(w.written(), (!head).then_some(body.as_bytes()), now);
            c.state = State::after_response(persistence);
            self.pump(i, now);
        }
    }

    /// Writes what is pending and moves the connection on: the next stream part, the waited-for
    /// snapshot, the next pipelined request, or the close.
    fn pump(&mut self, i: usize, now: Instant) {
        loop {
            let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead) else { return };
            if c.flush(now).is_err() {
                c.dead = true;
                return;
            }
            if !c.flushed() {
                return;
            }
            match c.state {
                State::Reading { .. } | State::Idle { .. } => {
                    // Half-closed with no complete request left: nothing more will be answered.
                    if c.peer_eof {
                        let _ = c.stream.shutdown(Shutdown::Write);
                        c.dead = true;
                    }
                    return;
                }
                // The loop answers it in this turn (`answer_reports`).
                State::WaitingReport { .. } => return,
                State::Responding => {
                    c.state = match c.inlen {
                        0 => State::Idle { since: now },
                        _ => State::Reading { since: now },
                    };
                    self.handle_input(i, now);
                }
                State::Closing => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    c.dead = true;
                    return;
                }
                State::Streaming { .. } if c.peer_eof => {
                    c.dead = true;
                    return;
                }
                State::Streaming { stream, sent } => {
                    let Some(st) = self.streams.get_mut(stream).filter(|st| sent < st.latest_seq) else { return };
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_part_header(&mut w, st.latest.len()).is_err() {
                        c.dead = true;
                        return;
                    }
                    c.queue(w.written(), Some(&st.latest), now);
                    c.out.extend_from_slice(b"\r\n");
                    c.state = State::Streaming { stream, sent: st.latest_seq };
                    st.parts_sent += 1;
                    st.last_demand = Some(now);
                }
                State::WaitingFrame { stream, seen, head, persistence, .. } => {
                    let Some(st) = self.streams.get_mut(stream).filter(|st| seen < st.latest_seq) else { return };
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_head(&mut w, 200, "image/jpeg", Some(st.latest.len()), persistence).is_err() {
                        c.dead = true;
                        return;
                    }
                    log::debug!("http {}: snapshot -> 200 {persistence:?} (after waiting)", c.peer);
                    c.queue(w.written(), (!head).then_some(&st.latest[..]), now);
                    c.state = State::after_response(persistence);
                    st.last_demand = Some(now);
                }
            }
        }
    }

    /// Once a second: slow requests, idle persistent connections, snapshots that waited too long,
    /// and stalled readers.
    pub(super) fn enforce_limits(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| !c.dead) else { continue };
            match c.state {
                State::Reading { since } if now.saturating_duration_since(since) >= self.request_timeout => {
                    log::info!("http {}: request not completed within {:?}; closing", c.peer, self.request_timeout);
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_error(&mut w, 408, Persistence::Close).is_ok() {
                        let _ = (&c.stream).write(w.written());
                    }
                    c.dead = true;
                }
                State::Idle { since } if now.saturating_duration_since(since) >= self.idle_timeout => {
                    log::debug!("http {}: idle for {:?} between requests; closing", c.peer, self.idle_timeout);
                    let _ = c.stream.shutdown(Shutdown::Both);
                    c.dead = true;
                }
                State::WaitingFrame { since, persistence, .. }
                    if now.saturating_duration_since(since) >= SNAPSHOT_WAIT =>
                {
                    let mut why = heapless::String::<80>::new();
                    let _ = write!(why, "no JPEG frame arrived within {} s", SNAPSHOT_WAIT.as_secs());
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_text(&mut w, 503, &why, persistence).is_err() {
                        c.dead = true;
                        continue;
                    }
                    log::info!("http {}: snapshot -> 503 ({why})", c.peer);
                    c.queue(w.written(), None, now);
                    c.state = State::after_response(persistence);
                    self.pump(i, now);
                }
                _ if !c.flushed() && now.saturating_duration_since(c.last_progress) >= self.stall_timeout => {
                    log::warn!(
                        "http {}: took no data for {:?}; disconnecting (client stall)",
                        c.peer,
                        self.stall_timeout
                    );
                    c.dead = true;
                }
                _ => {}
            }
        }
    }

    /// Frees the slots of closed connections (their buffers go back to the pool).
    pub(super) fn reap(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.dead) {
                self.release(i);
            }
        }
    }
}

/// The verdict on credentials for a route of no stream (the page, a `404`): allowed for a user
/// allowed on any of `paths` (or on `/` when there is no stream), else stale if a Digest answer
/// on an expired nonce would be allowed, else denied.
fn verify_any<'u, 'p>(
    auth: &'u crate::rtsp::auth::Auth<'_>,
    authorization: Option<&str>,
    method: &str,
    paths: impl Iterator<Item = &'p str>,
    now_s: u64,
) -> Verdict<'u> {
    let mut verdict = None;
    for path in paths {
        match auth.verify(authorization, method, path, now_s) {
            allowed @ Verdict::Allowed { .. } => return allowed,
            Verdict::Stale => verdict = Some(Verdict::Stale),
            Verdict::Denied => verdict = verdict.or(Some(Verdict::Denied)),
        }
    }
    verdict.unwrap_or_else(|| auth.verify(authorization, method, "/", now_s))
}

/// Cuts an `Unavailable` reason to [`MAX_REASON_BYTES`] (at a character boundary) so its `503`
/// always fits the response buffer.
fn bounded_reason(supply: JpegSupply) -> JpegSupply {
    match supply {
        JpegSupply::Unavailable(mut why) if why.len() > MAX_REASON_BYTES => {
            let mut end = MAX_REASON_BYTES;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            JpegSupply::Unavailable(why)
        }
        supply => supply,
    }
}

#[cfg(test)]
mod tests;
