//! One HTTP connection: its state, buffers and socket I/O (see the parent module's invariants).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    /// turn of the loop: [`Http::reports_wanted`], [`Http::answer_reports`]).
    WaitingReport { report: Report, head: bool, persistence: Persistence },
    /// Sending the multipart stream of `stream`; `sent` is the sequence number of the last frame
    /// queued.
    Streaming { stream: usize, sent: u64 },
    /// Reading the `len`-byte body of a WHEP offer for `stream` into the body buffer, `since` the
    /// head was complete (the request timeout runs on).
    ReadingBody { stream: usize, len: usize, since: Instant },
    /// A complete WHEP offer for `stream` waiting for the loop (within the same turn:
    /// [`Http::whep_offers`], [`Http::answer_whep`]).
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

#[derive(Debug)]
pub(super) struct HttpConn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) inbuf: Box<[u8]>,
    pub(super) inlen: usize,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) state: State,
    pub(super) last_progress: Instant,
    /// The client closed its side (or reset): finish what is asked, read nothing more.
    pub(super) peer_eof: bool,
    pub(super) dead: bool,
    /// A WHEP offer's body (at most [`http::MAX_OFFER_BYTES`]; pooled with the other buffers).
    pub(super) body: Vec<u8>,
}

impl HttpConn {
    /// Writes what is pending. `Err` means the connection is gone.
    pub(super) fn flush(&mut self, now: Instant) -> io::Result<()> {
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

    pub(super) fn flushed(&self) -> bool {
        self.out_pos >= self.out.len()
    }

    /// Whether bytes from the client go to the input buffer (a next request) or are discarded.
    pub(super) fn keeps_input(&self) -> bool {
        !matches!(self.state, State::Streaming { .. } | State::Closing)
    }

    /// Reads what the client sent into the input buffer while it has room (a streaming or
    /// closing connection's bytes are discarded: they can never be a request that is answered).
    pub(super) fn read_input(&mut self) {
        if let State::ReadingBody { len, .. } = self.state {
            self.read_body(len);
            return;
        }
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

    /// Reads up to `len` bytes of body; what the client sends beyond it is never read (the
    /// connection closes after the answer).
    fn read_body(&mut self, len: usize) {
        let len = len.min(http::MAX_OFFER_BYTES);
        let mut chunk = [0u8; 2048];
        while self.body.len() < len {
            let want = (len - self.body.len()).min(chunk.len());
            match (&self.stream).read(&mut chunk[..want]) {
                Ok(0) => {
                    self.peer_eof = true;
                    return;
                }
                Ok(n) => self.body.extend_from_slice(&chunk[..n]),
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
