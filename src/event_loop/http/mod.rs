//! The loop's HTTP connections: MJPEG streams, snapshots, the viewer page of several streams,
//! `/status`, `/metrics`, recording switches and WHEP offers (protocol core in [`crate::http`]).
//! Sub-modules: `conn` (a connection's state, buffers and socket I/O), `routing` (a request head
//! becomes a response, a stream or a wait), `jpeg` (each stream's JPEG supply and latest frame),
//! `whep` (offer bodies, answered by the loop in the same turn).
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
//! - Bodies are read only for WHEP offers (at most [`http::MAX_OFFER_BYTES`], into the
//!   connection's pooled body buffer), and such a connection closes after its answer.
//! - Credentials ([`Http::set_auth`]): a user limited to a path gets that stream's routes only;
//!   the index page and `404`s need a user allowed on at least one stream.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::http::{self, Persistence};
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::wbuf::WBuf;

mod conn;
mod jpeg;
mod routing;
mod whep;

use conn::{HttpConn, State};
use jpeg::{bounded_reason, StreamState};
pub(super) use jpeg::{HttpStream, JpegSupply};
pub(super) use whep::WhepAnswer;

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
    /// `DELETE /PATH/whep/ID`: the loop ends WebRTC session `id` of `stream` (`200`, or `404`
    /// when there is none).
    WhepEnd { stream: usize, id: u64 },
}

impl Report {
    fn content_type(self) -> &'static str {
        match self {
            Report::Status | Report::Record { .. } => "application/json",
            Report::Metrics => "text/plain; version=0.0.4; charset=utf-8",
            Report::WhepEnd { .. } => "text/plain; charset=utf-8",
        }
    }
}

/// A connection's input, output and body buffers (pooled across connections).
type Buffers = (Box<[u8]>, Vec<u8>, Vec<u8>);

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
    pool: Vec<Buffers>,
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
                    webrtc: s.webrtc,
                })
                .collect(),
            request_timeout,
            stall_timeout,
            idle_timeout,
            scratch: vec![0; 4096].into_boxed_slice(),
            dscp: 0,
            auth: None,
            pool: (0..slots)
                .map(|_| (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new(), Vec::new()))
                .collect(),
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
                State::Closing | State::WaitingWhep { .. } => false,
                State::Streaming { .. } | State::ReadingBody { .. } => !c.peer_eof,
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
            let (inbuf, out, body) = self
                .pool
                .pop()
                .unwrap_or_else(|| (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new(), Vec::new()));
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
                body,
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
            c.body.clear();
            self.pool.push((c.inbuf, c.out, c.body));
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
        self.body_progress(i);
        self.handle_input(i, now);
        self.pump(i, now);
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
                // The loop answers it in this turn (`answer_reports`, `answer_whep`), or the body
                // is still coming.
                State::WaitingReport { .. } | State::WaitingWhep { .. } | State::ReadingBody { .. } => return,
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
                State::Reading { since } | State::ReadingBody { since, .. }
                    if now.saturating_duration_since(since) >= self.request_timeout =>
                {
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

#[cfg(test)]
mod tests;
