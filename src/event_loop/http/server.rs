//! The HTTP connections without their sockets: slots, the per-connection state machine, the
//! timers and each stream's latest frame. Sans-IO: the loop (`super::Http`) moves bytes between
//! the sockets and these buffers and reports what happened; every call takes `now`; nothing
//! here touches an fd or reads a clock (see the parent module's invariants).
//!
//! The loop's side, per connection slot `i`:
//! - in: read into [`HttpCore::read_space`] and report it with [`HttpCore::handle_read`] (EOF
//!   with [`HttpCore::handle_peer_closed`], POLLHUP with [`HttpCore::handle_hangup`], an error
//!   with [`HttpCore::handle_error`]), then [`HttpCore::process`];
//! - out: write [`HttpCore::pending`] and report it with [`HttpCore::handle_written`] (which
//!   moves the connection on once the response is written and may queue the next one);
//! - end: once [`HttpCore::closed`] says how, end the socket and [`HttpCore::release`] the slot.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::conn::{Close, HttpConn, Sink, State};
use super::jpeg::{bounded_reason, StreamState};
use super::{Buffers, HttpStream, Report, SNAPSHOT_WAIT};
use crate::http::{self, Persistence};
use crate::wbuf::WBuf;

/// What the receive scratch holds at most (a WHEP body's chunk, or bytes discarded).
const RECEIVE_CHUNK: usize = 2048;

/// The sans-IO HTTP server: connection slots, streams, timers.
#[derive(Debug)]
pub(in crate::event_loop) struct HttpCore<'a> {
    pub(super) conns: Vec<Option<HttpConn>>,
    /// Fixed at construction; a stream's number is its index.
    pub(super) streams: Vec<StreamState>,
    request_timeout: Duration,
    stall_timeout: Duration,
    idle_timeout: Duration,
    /// Response heads are written here, then copied into a connection's output.
    pub(super) scratch: Box<[u8]>,
    /// Bytes of a WHEP body on their way to the body buffer, or discarded ones.
    receive: Box<[u8]>,
    pool: Vec<Buffers>,
    /// The RTSP users, when configured: the same credentials guard the pictures here, and the
    /// clock origin of Digest nonces.
    pub(super) auth: Option<(crate::rtsp::auth::Auth<'a>, Instant)>,
}

impl<'a> HttpCore<'a> {
    /// `streams`: fixed for the server's life, stream `n` is `streams[n]` in every method;
    /// `request_timeout`: connect or first byte to complete head; `stall_timeout`: a client
    /// taking no bytes of a response; `idle_timeout`: a persistent connection between requests.
    pub(in crate::event_loop) fn new(
        slots: usize,
        streams: Vec<HttpStream>,
        request_timeout: Duration,
        stall_timeout: Duration,
        idle_timeout: Duration,
    ) -> HttpCore<'a> {
        HttpCore {
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
            receive: vec![0; RECEIVE_CHUNK].into_boxed_slice(),
            auth: None,
            pool: (0..slots).map(|_| new_buffers()).collect(),
        }
    }

    /// Requires `auth`'s credentials (Basic or Digest, as for RTSP) for every page and picture;
    /// nonce times count from `epoch`.
    pub(in crate::event_loop) fn set_auth(&mut self, auth: crate::rtsp::auth::Auth<'a>, epoch: Instant) {
        self.auth = Some((auth, epoch));
    }

    /// What a client gets when every slot is busy: `503`, then the close.
    pub(super) fn refusal(&mut self) -> &[u8] {
        let mut w = WBuf::new(&mut self.scratch);
        let n = match http::write_error(&mut w, 503, Persistence::Close) {
            Ok(()) => w.written().len(),
            Err(_) => 0,
        };
        &self.scratch[..n]
    }

    /// A slot for a new connection from `peer`: a free one, else that of the connection idle
    /// longest between requests, which is closed ([`Close::Abort`]: end its socket and
    /// [`HttpCore::release`] the slot before [`HttpCore::open`]). `None`: every slot is busy.
    pub(in crate::event_loop) fn slot_for(&mut self, peer: SocketAddr) -> Option<usize> {
        if let Some(i) = self.conns.iter().position(|c| c.as_ref().is_none_or(|c| !c.is_open())) {
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
        if let Some(c) = self.conns[oldest].as_mut() {
            log::debug!("http {}: idle connection closed to make room for {peer} (every HTTP slot is taken)", c.peer);
            c.close(Close::Abort);
        }
        Some(oldest)
    }

    /// A new connection from `peer` in the (released) slot `i`.
    pub(in crate::event_loop) fn open(&mut self, i: usize, peer: SocketAddr, now: Instant) {
        self.release(i);
        let buffers = self.pool.pop().unwrap_or_else(new_buffers);
        log::debug!("http {peer}: connected");
        self.conns[i] = Some(HttpConn::new(peer, buffers, now));
    }

    /// Empties a slot; the connection's buffers go back to the pool.
    pub(in crate::event_loop) fn release(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            log::debug!("http {}: closed", c.peer);
            c.out.clear();
            c.body.clear();
            self.pool.push((c.inbuf, c.out, c.body));
        }
    }

    fn open_conn(&mut self, i: usize) -> Option<&mut HttpConn> {
        self.conns.get_mut(i)?.as_mut().filter(|c| c.is_open())
    }

    /// How connection `i` ended, once it has: the loop ends the socket and releases the slot.
    pub(in crate::event_loop) fn closed(&self, i: usize) -> Option<Close> {
        self.conns.get(i)?.as_ref()?.closed
    }

    /// The open connections and what each waits for: `(slot, read, write)`.
    pub(in crate::event_loop) fn interests(&self) -> impl Iterator<Item = (usize, bool, bool)> + '_ {
        self.conns.iter().enumerate().filter_map(|(i, c)| {
            let c = c.as_ref().filter(|c| c.is_open())?;
            Some((i, c.sink() != Sink::None, !c.flushed()))
        })
    }

    /// Where the next bytes from connection `i`'s client go; empty: read nothing now.
    pub(in crate::event_loop) fn read_space(&mut self, i: usize) -> &mut [u8] {
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()).filter(|c| c.is_open()) else {
            return &mut [];
        };
        match c.sink() {
            Sink::None => &mut [],
            Sink::Input => &mut c.inbuf[c.inlen..],
            Sink::Body(more) => &mut self.receive[..more.min(RECEIVE_CHUNK)],
            Sink::Discard => &mut self.receive[..],
        }
    }

    /// `n` bytes were read into [`HttpCore::read_space`] of connection `i`.
    pub(in crate::event_loop) fn handle_read(&mut self, i: usize, n: usize) {
        let receive = &self.receive;
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()).filter(|c| c.is_open()) else { return };
        match c.sink() {
            Sink::Input => c.inlen = (c.inlen + n).min(c.inbuf.len()),
            Sink::Body(more) => c.body.extend_from_slice(&receive[..n.min(more).min(RECEIVE_CHUNK)]),
            Sink::Discard | Sink::None => {}
        }
    }

    /// The client of connection `i` closed its side (EOF) or reset it.
    pub(in crate::event_loop) fn handle_peer_closed(&mut self, i: usize) {
        if let Some(c) = self.open_conn(i) {
            c.peer_eof = true;
        }
    }

    /// Poll said POLLHUP (both directions are shut, a reset): with a full input buffer it
    /// cannot be seen as EOF by reading.
    pub(in crate::event_loop) fn handle_hangup(&mut self, i: usize) {
        if let Some(c) = self.open_conn(i) {
            if c.keeps_input() && c.inlen == c.inbuf.len() {
                c.peer_eof = true;
            }
        }
    }

    /// The socket of connection `i` failed (POLLERR, a write error): it is closed.
    pub(in crate::event_loop) fn handle_error(&mut self, i: usize) {
        if let Some(c) = self.open_conn(i) {
            c.close(Close::Drop);
        }
    }

    /// The bytes of connection `i` to write next (empty: nothing).
    pub(in crate::event_loop) fn pending(&self, i: usize) -> &[u8] {
        match self.conns.get(i).and_then(|c| c.as_ref()).filter(|c| c.is_open()) {
            Some(c) => c.pending(),
            None => &[],
        }
    }

    /// `n` bytes of [`HttpCore::pending`] of connection `i` were written at `now`. A response
    /// written whole moves the connection on (maybe queuing the next response).
    pub(in crate::event_loop) fn handle_written(&mut self, i: usize, n: usize, now: Instant) {
        let Some(c) = self.open_conn(i) else { return };
        c.consume_output(n, now);
        if c.flushed() {
            self.advance(i, now);
        }
    }

    /// After input: a WHEP body completes, the next request is parsed, the connection moves on.
    pub(in crate::event_loop) fn process(&mut self, i: usize, now: Instant) {
        self.body_progress(i);
        self.handle_input(i, now);
        self.advance(i, now);
    }

    /// Which reports connections wait for: the loop renders each and calls
    /// [`HttpCore::answer_reports`] in the same turn.
    pub(in crate::event_loop) fn reports_wanted(&self) -> impl Iterator<Item = Report> + '_ {
        self.conns.iter().enumerate().filter_map(move |(i, c)| {
            let State::WaitingReport { report, .. } = c.as_ref().filter(|c| c.is_open())?.state else { return None };
            // Each report once: the first connection waiting for it stands for all.
            let first = self.conns.iter().position(|o| {
                o.as_ref().is_some_and(|o| {
                    o.is_open() && matches!(o.state, State::WaitingReport { report: r, .. } if r == report)
                })
            });
            (first == Some(i)).then_some(report)
        })
    }

    /// Answers every connection waiting for `report` with `status` and `body`.
    pub(in crate::event_loop) fn answer_reports(&mut self, report: Report, status: u16, body: &str, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| c.is_open()) else { continue };
            let State::WaitingReport { report: r, head, persistence } = c.state else { continue };
            if r != report {
                continue;
            }
            let mut w = WBuf::new(&mut self.scratch);
            if http::write_head(&mut w, status, report.content_type(), Some(body.len()), persistence).is_err() {
                c.close(Close::Drop);
                continue;
            }
            c.queue(w.written(), (!head).then_some(body.as_bytes()), now);
            c.state = State::after_response(persistence);
            self.advance(i, now);
        }
    }

    /// Moves a connection whose output is written on: the next stream part, the waited-for
    /// snapshot, the next pipelined request, or the close. Does nothing while output is pending.
    pub(super) fn advance(&mut self, i: usize, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()).filter(|c| c.is_open()) else { return };
            if !c.flushed() {
                return;
            }
            match c.state {
                State::Reading { .. } | State::Idle { .. } => {
                    // Half-closed with no complete request left: nothing more will be answered.
                    if c.peer_eof {
                        c.close(Close::Finish);
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
                    c.close(Close::Finish);
                    return;
                }
                State::Streaming { .. } if c.peer_eof => {
                    c.close(Close::Drop);
                    return;
                }
                State::Streaming { stream, sent } => {
                    let Some(st) = self.streams.get_mut(stream).filter(|st| sent < st.latest_seq) else { return };
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_part_header(&mut w, st.latest.len()).is_err() {
                        c.close(Close::Drop);
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
                        c.close(Close::Drop);
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

    /// Once a second: slow requests (`408`), idle persistent connections, snapshots that waited
    /// too long (`503`), and stalled readers.
    pub(in crate::event_loop) fn enforce_limits(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| c.is_open()) else { continue };
            match c.state {
                State::Reading { since } | State::ReadingBody { since, .. }
                    if now.saturating_duration_since(since) >= self.request_timeout =>
                {
                    log::info!("http {}: request not completed within {:?}; closing", c.peer, self.request_timeout);
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_error(&mut w, 408, Persistence::Close).is_err() || !c.flushed() {
                        c.close(Close::Drop);
                        continue;
                    }
                    c.queue(w.written(), None, now);
                    c.inlen = 0;
                    c.state = State::Closing;
                }
                State::Idle { since } if now.saturating_duration_since(since) >= self.idle_timeout => {
                    log::debug!("http {}: idle for {:?} between requests; closing", c.peer, self.idle_timeout);
                    c.close(Close::Abort);
                }
                State::WaitingFrame { since, persistence, .. }
                    if now.saturating_duration_since(since) >= SNAPSHOT_WAIT =>
                {
                    let mut why = heapless::String::<80>::new();
                    let _ = write!(why, "no JPEG frame arrived within {} s", SNAPSHOT_WAIT.as_secs());
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_text(&mut w, 503, &why, persistence).is_err() {
                        c.close(Close::Drop);
                        continue;
                    }
                    log::info!("http {}: snapshot -> 503 ({why})", c.peer);
                    c.queue(w.written(), None, now);
                    c.state = State::after_response(persistence);
                    self.advance(i, now);
                }
                _ if !c.flushed() && now.saturating_duration_since(c.last_progress) >= self.stall_timeout => {
                    log::warn!(
                        "http {}: took no data for {:?}; disconnecting (client stall)",
                        c.peer,
                        self.stall_timeout
                    );
                    c.close(Close::Drop);
                }
                _ => {}
            }
        }
    }
}

fn new_buffers() -> Buffers {
    (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new(), Vec::new())
}
