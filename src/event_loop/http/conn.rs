//! One HTTP connection, sans-IO: its state, buffers and timers (see the parent module's
//! invariants). It never touches a socket or reads a clock.

use std::net::SocketAddr;
use std::time::Instant;

use super::Report;
use crate::http::{self, Persistence};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for a request head: `since` the connection opened or the head's first byte came.
    Reading { since: Instant },
    /// A persistent connection between requests `since` its last response was written.
    Idle { since: Instant },
    /// Sending a complete response; then the next request (maybe already in the input buffer).
    Responding,
    /// A snapshot of `stream` waiting `since` for a frame after number `seen`.
    WaitingFrame { stream: usize, since: Instant, seen: u64, head: bool, persistence: Persistence },
    /// A `/status` or `/metrics` request waiting for the loop to render it (within the same
    /// turn of the loop: [`HttpCore::reports_wanted`], [`HttpCore::answer_reports`]).
    WaitingReport { report: Report, head: bool, persistence: Persistence },
    /// Sending the multipart stream of `stream`; `sent` is the sequence number of the last frame
    /// queued.
    Streaming { stream: usize, sent: u64 },
    /// Reading the `len`-byte body of a WHEP offer for `stream` into the body buffer, `since` the
    /// head was complete (the request timeout runs on).
    ReadingBody { stream: usize, len: usize, since: Instant },
    /// A complete WHEP offer for `stream` waiting for the loop (within the same turn:
    /// [`HttpCore::whep_offers`], [`HttpCore::answer_whep`]).
    WaitingWhep { stream: usize },
    /// Sending a last response, then closing.
    Closing,
}

impl State {
    /// The state after a complete response has been queued.
    pub(super) fn after_response(persistence: Persistence) -> State {
        match persistence {
            Persistence::KeepAlive => State::Responding,
            Persistence::Close => State::Closing,
        }
    }

    /// The stream whose frames the connection waits for or streams.
    pub(super) fn stream(self) -> Option<usize> {
        match self {
            State::WaitingFrame { stream, .. } | State::Streaming { stream, .. } => Some(stream),
            _ => None,
        }
    }
}

/// Appends text to a connection's output buffer.
pub(super) struct Appender<'v>(pub(super) &'v mut Vec<u8>);

impl std::fmt::Write for Appender<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How the loop ends a connection's socket once the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::event_loop) enum Close {
    /// Just close it (an error, a stall, a reset, or a response cut short).
    Drop,
    /// Everything queued was written: send FIN, then close.
    Finish,
    /// Shut both directions (idle timeout, evicted to make room).
    Abort,
}

/// Where the next bytes from the client go ([`HttpConn::read_space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sink {
    /// The input buffer, after what is in it (a request head, maybe pipelined ones).
    Input,
    /// The body of a WHEP offer (through the receive scratch), at most this many more bytes.
    Body(usize),
    /// Discarded (through the receive scratch): a streaming or closing connection.
    Discard,
    /// Nothing is read now (a full input buffer waits for the response; EOF was seen; the
    /// connection waits for the loop).
    None,
}

/// One connection, without its socket: buffers, state and timers. The loop moves bytes in
/// ([`HttpConn::read_space`] / [`super::HttpCore::handle_read`]) and out
/// ([`HttpConn::pending`] / [`super::HttpCore::handle_written`]).
#[derive(Debug)]
pub(in crate::event_loop) struct HttpConn {
    pub(super) peer: SocketAddr,
    pub(super) inbuf: Box<[u8]>,
    pub(super) inlen: usize,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) state: State,
    pub(super) last_progress: Instant,
    /// The client closed its side (or reset): finish what is asked, read nothing more.
    pub(super) peer_eof: bool,
    /// Closed, and how the loop should end the socket; the slot is freed by `reap`.
    pub(super) closed: Option<Close>,
    /// A WHEP offer's body (at most [`http::MAX_OFFER_BYTES`]; pooled with the other buffers).
    pub(super) body: Vec<u8>,
}

impl HttpConn {
    pub(super) fn new(peer: SocketAddr, (inbuf, out, body): super::Buffers, now: Instant) -> HttpConn {
        HttpConn {
            peer,
            inbuf,
            inlen: 0,
            out,
            out_pos: 0,
            state: State::Reading { since: now },
            last_progress: now,
            peer_eof: false,
            closed: None,
            body,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Marks the connection closed (the first reason wins).
    pub(super) fn close(&mut self, how: Close) {
        self.closed.get_or_insert(how);
    }

    /// The bytes queued and not yet written.
    pub(in crate::event_loop) fn pending(&self) -> &[u8] {
        &self.out[self.out_pos.min(self.out.len())..]
    }

    pub(super) fn flushed(&self) -> bool {
        self.out_pos >= self.out.len()
    }

    /// `n` bytes of [`HttpConn::pending`] were written; the buffer empties once all are.
    pub(super) fn consume_output(&mut self, n: usize, now: Instant) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.flushed() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.last_progress = now;
    }

    /// Whether bytes from the client go to the input buffer (a next request) or are discarded.
    pub(super) fn keeps_input(&self) -> bool {
        !matches!(self.state, State::Streaming { .. } | State::Closing)
    }

    /// Where bytes read now go. Streaming clients are read too: that is how their hang-up is
    /// seen. A closing one, or one whose peer has closed, is not (EOF would keep it readable and
    /// the loop spinning). A full input buffer waits for the response (TCP backpressure).
    pub(super) fn sink(&self) -> Sink {
        if self.peer_eof || !self.is_open() {
            return Sink::None;
        }
        match self.state {
            State::Closing | State::WaitingWhep { .. } => Sink::None,
            State::Streaming { .. } => Sink::Discard,
            State::ReadingBody { len, .. } => match len.min(http::MAX_OFFER_BYTES).saturating_sub(self.body.len()) {
                0 => Sink::None,
                more => Sink::Body(more),
            },
            _ if self.inlen < self.inbuf.len() => Sink::Input,
            _ => Sink::None,
        }
    }

    /// Replaces the (flushed) output with `response` and, if given, the frame after it.
    pub(super) fn queue(&mut self, response: &[u8], frame: Option<&[u8]>, now: Instant) {
        self.out.clear();
        self.out_pos = 0;
        self.out.extend_from_slice(response);
        if let Some(frame) = frame {
            self.out.extend_from_slice(frame);
        }
        self.last_progress = now;
    }
}
