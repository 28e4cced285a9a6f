//! The loop's HTTP connections: MJPEG streams, snapshots, the viewer page of several streams,
//! `/status`, `/metrics`, recording switches and WHEP offers (protocol core in [`crate::http`]).
//! Sans-IO below this file: `server` ([`HttpCore`]: slots, the connection state machine, timers),
//! `conn` (one connection's state and buffers), `routing` (a request head becomes a response, a
//! stream or a wait), `jpeg` (each stream's JPEG supply and latest frame), `whep` (offer bodies,
//! answered by the loop in the same turn); their tests run on a virtual clock with no socket.
//! This file is the I/O shell ([`Http`]): the listener and the sockets, moving bytes between
//! them and the core and ending sockets the way the core says.
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
//! - Timers, checked once a second by [`HttpCore::enforce_limits`]: `request-timeout` from connect
//!   or from a request's first byte to its complete head (`408`, close); `idle-timeout` between
//!   requests on a persistent connection (closed, no response); `client-stall-timeout` while a
//!   response is not taken; [`SNAPSHOT_WAIT`] for a snapshot waiting for a frame (`503`).
//! - Newest frame wins per client: one latest-frame buffer per stream (allocated at start, grown
//!   to the largest frame, never shrunk); a streaming client gets a copy of its stream's frame
//!   (part header + JPEG) only when it has finished sending the previous part, so a slow client
//!   skips frames. A snapshot gets the latest frame only if it is fresh
//!   ([`FRESH_FRAME_MAX_AGE`]), else the next one stored. A client only ever gets frames of the
//!   stream it asked for.
//! - Per stream: [`JpegSupply`], latest frame, demand ([`HttpCore::wants_frames`]) and parts sent.
//!   With `Unavailable(why)` that stream's JPEG routes answer `503` with `why` at once, and the
//!   index page shows `why` instead of its picture; `Stream` and `OnDemand` behave alike here
//!   ([`HttpCore::wants_frames`] tells the loop when that stream's on-demand encoder is needed).
//! - Bodies are read only for WHEP offers (at most [`http::MAX_OFFER_BYTES`], into the
//!   connection's pooled body buffer), and such a connection closes after its answer.
//! - Credentials ([`HttpCore::set_auth`]): a user limited to a path gets that stream's routes only;
//!   the index page and `404`s need a user allowed on at least one stream.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

mod conn;
mod jpeg;
mod routing;
mod server;
mod whep;

use conn::Close;
pub(super) use jpeg::{HttpStream, JpegSupply};
pub(super) use server::HttpCore;
pub(super) use whep::WhepAnswer;

/// A snapshot is served the latest frame only if it arrived within this long; else it waits.
pub(super) const FRESH_FRAME_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a snapshot waits for a frame before it gets `503`.
pub(super) const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);
/// [`HttpCore::wants_frames`] stays true this long after a client last asked for or took a frame,
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

/// A connection's socket.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// The last write would have blocked: wait for POLLOUT before writing again.
    blocked: bool,
}

/// The HTTP listener and the connections' sockets around the sans-IO [`HttpCore`] (read through
/// `Deref`; changes that may queue output go through the methods here, which write it).
#[derive(Debug)]
pub(super) struct Http<'a> {
    listener: TcpListener,
    /// Socket `i` belongs to the core's connection `i`.
    sockets: Vec<Option<Socket>>,
    core: HttpCore<'a>,
    /// DSCP for connections (`--dscp`: MJPEG is media too).
    dscp: u8,
}

impl<'a> std::ops::Deref for Http<'a> {
    type Target = HttpCore<'a>;

    fn deref(&self) -> &HttpCore<'a> {
        &self.core
    }
}

impl<'a> Http<'a> {
    /// `slots` connections at most; the rest as [`HttpCore::new`].
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
            sockets: (0..slots).map(|_| None).collect(),
            core: HttpCore::new(slots, streams, request_timeout, stall_timeout, idle_timeout),
            dscp: 0,
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
        self.core.interests().filter_map(|(i, read, write)| {
            let socket = self.sockets.get(i)?.as_ref()?;
            let ev = if read { POLLIN } else { 0 } | if write { POLLOUT } else { 0 };
            Some((i, socket.stream.as_raw_fd(), ev))
        })
    }

    /// As [`HttpCore::set_auth`].
    pub(super) fn set_auth(&mut self, auth: crate::rtsp::auth::Auth<'a>, epoch: Instant) {
        self.core.set_auth(auth, epoch);
    }

    /// Marks every accepted connection with `dscp` (0 = unmarked).
    pub(super) fn set_dscp(&mut self, dscp: u8) {
        self.dscp = dscp;
    }

    pub(super) fn accept(&mut self, now: Instant) {
        self.reap();
        while let Some((stream, peer)) = super::accept_media_conn(&self.listener, self.dscp, "http") {
            let Some(i) = self.core.slot_for(peer) else {
                log::warn!("http {peer}: every HTTP slot is busy (max-http-clients); 503");
                let _ = (&stream).write(self.core.refusal());
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            self.end_socket(i);
            self.core.open(i, peer, now);
            self.sockets[i] = Some(Socket { stream, blocked: false });
        }
    }

    pub(super) fn on_conn(&mut self, i: usize, rev: i16, now: Instant) {
        let Some(socket) = self.sockets.get_mut(i).and_then(Option::as_mut) else { return };
        if rev & (POLLERR | POLLNVAL) != 0 {
            self.core.handle_error(i);
            return;
        }
        if rev & POLLOUT != 0 {
            socket.blocked = false;
        }
        if rev & (POLLIN | POLLHUP) != 0 {
            loop {
                let space = self.core.read_space(i);
                if space.is_empty() {
                    break;
                }
                match (&socket.stream).read(space) {
                    Ok(0) => {
                        self.core.handle_peer_closed(i);
                        break;
                    }
                    Ok(n) => self.core.handle_read(i, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.core.handle_peer_closed(i);
                        break;
                    }
                }
            }
            if rev & POLLHUP != 0 {
                self.core.handle_hangup(i);
            }
        }
        self.core.process(i, now);
        self.flush(i, now);
    }

    /// Writes what connection `i` has queued until it is all written or the socket is full.
    fn flush(&mut self, i: usize, now: Instant) {
        let Some(socket) = self.sockets.get_mut(i).and_then(Option::as_mut) else { return };
        while !socket.blocked {
            let pending = self.core.pending(i);
            if pending.is_empty() {
                return;
            }
            match (&socket.stream).write(pending) {
                Ok(0) => self.core.handle_error(i),
                Ok(n) => self.core.handle_written(i, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.core.handle_error(i),
            }
        }
    }

    /// Writes what any connection has queued (after a change of the core's that may queue).
    fn flush_all(&mut self, now: Instant) {
        for i in 0..self.sockets.len() {
            self.flush(i, now);
        }
    }

    /// As [`HttpCore::answer_reports`], then writes the answers.
    pub(super) fn answer_reports(&mut self, report: Report, status: u16, body: &str, now: Instant) {
        self.core.answer_reports(report, status, body, now);
        self.flush_all(now);
    }

    /// As [`HttpCore::answer_whep`], then writes the answer.
    pub(super) fn answer_whep(&mut self, i: usize, answer: WhepAnswer<'_>, now: Instant) {
        self.core.answer_whep(i, answer, now);
        self.flush(i, now);
    }

    /// As [`HttpCore::set_supply`], then writes what it answered.
    pub(super) fn set_supply(&mut self, stream: usize, supply: JpegSupply, now: Instant) {
        self.core.set_supply(stream, supply, now);
        self.flush_all(now);
    }

    /// As [`HttpCore::store_frame`].
    pub(super) fn store_frame(&mut self, stream: usize, jpeg: &[u8], now: Instant) {
        self.core.store_frame(stream, jpeg, now);
    }

    /// As [`HttpCore::pump_stream`], then writes the frames it queued.
    pub(super) fn pump_stream(&mut self, stream: usize, now: Instant) {
        self.core.pump_stream(stream, now);
        self.flush_all(now);
    }

    /// As [`HttpCore::enforce_limits`], then writes what it answered.
    pub(super) fn enforce_limits(&mut self, now: Instant) {
        self.core.enforce_limits(now);
        self.flush_all(now);
    }

    /// Ends the sockets of closed connections the way the core says and frees their slots.
    pub(super) fn reap(&mut self) {
        for i in 0..self.sockets.len() {
            if self.core.closed(i).is_some() {
                self.end_socket(i);
            }
        }
    }

    /// Ends socket `i` (as its connection's [`Close`] says) and frees the core's slot `i`.
    fn end_socket(&mut self, i: usize) {
        if let Some(socket) = self.sockets[i].take() {
            let how = match self.core.closed(i) {
                Some(Close::Finish) => Some(Shutdown::Write),
                Some(Close::Abort) => Some(Shutdown::Both),
                Some(Close::Drop) | None => None,
            };
            if let Some(how) = how {
                let _ = socket.stream.shutdown(how);
            }
        }
        self.core.release(i);
    }
}

#[cfg(test)]
mod tests;
