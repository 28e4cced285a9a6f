//! The loop's HTTP connections: MJPEG streams, snapshots and the index page (protocol core in
//! [`crate::http`]).
//!
//! Invariants:
//! - Fixed slots (`--max-http-clients`); a connection beyond them gets `503` and is closed.
//! - Newest frame wins per client: the loop keeps one latest-frame buffer; a streaming client
//!   gets a copy of it (part header + JPEG) only when it has finished sending the previous part,
//!   so a slow client skips frames and holds at most one frame and its headers.
//! - Every response but the stream closes the connection after it is sent; a client that takes
//!   no bytes for `client-stall-timeout` or sends no complete request within `request-timeout`
//!   is closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::http::{self, Method, Parsed, Route};
use crate::limits;
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::wbuf::WBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// Sending the multipart stream; `sent` is the sequence number of the last frame queued.
    Streaming {
        sent: u64,
    },
    /// Sending a last response, then closing.
    Closing,
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
    since: Instant,
    last_progress: Instant,
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

    fn idle(&self) -> bool {
        self.out_pos >= self.out.len()
    }
}

/// The HTTP listener and its connection slots.
#[derive(Debug)]
pub(super) struct Http {
    listener: TcpListener,
    conns: Vec<Option<HttpConn>>,
    /// The latest JPEG frame and its sequence number (0 = none yet).
    latest: Vec<u8>,
    latest_seq: u64,
    /// Whether the stream is JPEG (else the JPEG routes answer 503).
    jpeg: bool,
    path: String,
    request_timeout: Duration,
    stall_timeout: Duration,
    scratch: Box<[u8]>,
    pool: Vec<(Box<[u8]>, Vec<u8>)>,
    pub(super) parts_sent: u64,
}

impl Http {
    pub(super) fn new(
        listener: TcpListener,
        slots: usize,
        path: &str,
        jpeg: bool,
        request_timeout: Duration,
        stall_timeout: Duration,
    ) -> io::Result<Http> {
        listener.set_nonblocking(true)?;
        Ok(Http {
            listener,
            conns: (0..slots).map(|_| None).collect(),
            latest: Vec::new(),
            latest_seq: 0,
            jpeg,
            path: path.to_owned(),
            request_timeout,
            stall_timeout,
            scratch: vec![0; 4096].into_boxed_slice(),
            pool: (0..slots).map(|_| (vec![0; http::MAX_HEAD_BYTES].into_boxed_slice(), Vec::new())).collect(),
            parts_sent: 0,
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
            // Streaming clients are read too: that is how their hang-up is seen. A closing one is
            // not (after a half-close, EOF would keep it readable and the loop spinning); poll
            // still reports its POLLHUP/POLLERR.
            let mut ev = if c.state == State::Closing { 0 } else { POLLIN };
            if !c.idle() {
                ev |= POLLOUT;
            }
            Some((i, c.stream.as_raw_fd(), ev))
        })
    }

    /// MJPEG streams playing.
    pub(super) fn streaming(&self) -> usize {
        self.conns.iter().flatten().filter(|c| matches!(c.state, State::Streaming { .. })).count()
    }

    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("http accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let Some(idx) = self.conns.iter().position(Option::is_none) else {
                log::warn!("http {peer}: every HTTP slot is taken (max-http-clients); 503");
                let mut w = WBuf::new(&mut self.scratch);
                if http::write_error(&mut w, 503).is_ok() {
                    let _ = (&stream).write(w.written());
                }
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &limits::TCP_SEND_BUFFER);
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
                state: State::Reading,
                since: now,
                last_progress: now,
                dead: false,
            });
        }
    }

    pub(super) fn on_conn(&mut self, i: usize, rev: i16, now: Instant) {
        let Some(c) = self.conns[i].as_mut() else { return };
        if rev & (POLLERR | POLLNVAL) != 0 {
            c.dead = true;
            return;
        }
        if rev & (POLLIN | POLLHUP) != 0 {
            let mut eof = false;
            loop {
                let mut discard = [0u8; 512];
                let buf = match c.state {
                    State::Reading if c.inlen < c.inbuf.len() => &mut c.inbuf[c.inlen..],
                    _ => &mut discard[..],
                };
                match (&c.stream).read(buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if c.state == State::Reading && c.inlen < c.inbuf.len() => c.inlen += n,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
                if c.state == State::Reading && c.inlen == c.inbuf.len() {
                    break;
                }
            }
            if c.state == State::Reading {
                self.handle_input(i, now);
            }
            if eof {
                if let Some(c) = self.conns[i].as_mut() {
                    // A client that half-closes after its request still gets its response.
                    if c.state != State::Closing || c.idle() {
                        c.dead = true;
                    }
                }
            }
        }
        self.pump(i, now);
    }

    fn handle_input(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns[i].as_mut() else { return };
        let parsed = http::parse_request(&c.inbuf[..c.inlen]);
        let mut w = WBuf::new(&mut self.scratch);
        let (request, result) = match parsed {
            Ok(Parsed::Incomplete) => return,
            Err(e) => {
                log::debug!("http {}: bad request ({e:?}): {}", c.peer, e.status());
                let _ = http::write_error(&mut w, e.status());
                (None, State::Closing)
            }
            Ok(Parsed::Complete { request, .. }) => {
                let head = request.method == Method::Head;
                let route = http::route(&request, &self.path);
                let state = match route {
                    Route::Index => {
                        let mut page = [0u8; 512];
                        let mut p = WBuf::new(&mut page);
                        let _ = http::write_index(&mut p, &self.path);
                        let _ = http::write_head(&mut w, 200, "text/html; charset=utf-8", Some(p.len()));
                        if !head {
                            let _ = w.put(p.written());
                        }
                        State::Closing
                    }
                    Route::Snapshot | Route::Mjpeg if !self.jpeg || self.latest_seq == 0 => {
                        let _ = http::write_error(&mut w, 503);
                        State::Closing
                    }
                    Route::Snapshot => {
                        let _ = http::write_head(&mut w, 200, "image/jpeg", Some(self.latest.len()));
                        State::Closing
                    }
                    Route::Mjpeg if head => {
                        let _ = http::write_mjpeg_head(&mut w);
                        State::Closing
                    }
                    Route::Mjpeg => {
                        let _ = http::write_mjpeg_head(&mut w);
                        State::Streaming { sent: 0 }
                    }
                    Route::NotFound => {
                        let _ = http::write_error(&mut w, 404);
                        State::Closing
                    }
                    Route::MethodNotAllowed => {
                        let _ = http::write_error(&mut w, 405);
                        State::Closing
                    }
                };
                (Some((route, head)), state)
            }
        };
        let status = std::str::from_utf8(w.written().get(9..12).unwrap_or(b"???")).unwrap_or("???");
        log::debug!("http {}: {:?} -> {status}", c.peer, request.map(|r| r.0));
        c.out.clear();
        c.out_pos = 0;
        c.out.extend_from_slice(w.written());
        if let (Some((Route::Snapshot, false)), State::Closing) = (request, result) {
            if status == "200" {
                c.out.extend_from_slice(&self.latest);
            }
        }
        c.state = result;
        c.inlen = 0;
        c.last_progress = now;
        if let State::Streaming { .. } = result {
            log::info!("http {}: MJPEG stream started", c.peer);
        }
    }

    /// Keeps the latest frame (a copy into the one shared buffer).
    pub(super) fn store_frame(&mut self, jpeg: &[u8]) {
        if !self.jpeg {
            return;
        }
        self.latest.clear();
        self.latest.extend_from_slice(jpeg);
        self.latest_seq += 1;
    }

    /// Sends each streaming client the latest frame if it is idle.
    pub(super) fn pump_all(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            self.pump(i, now);
        }
    }

    fn pump(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns[i].as_mut() else { return };
        if c.dead {
            return;
        }
        loop {
            if c.flush(now).is_err() {
                c.dead = true;
                return;
            }
            if !c.idle() {
                return;
            }
            match c.state {
                State::Reading => return,
                State::Closing => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    c.dead = true;
                    return;
                }
                State::Streaming { sent } if sent < self.latest_seq => {
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_part_header(&mut w, self.latest.len()).is_err() {
                        c.dead = true;
                        return;
                    }
                    c.out.extend_from_slice(w.written());
                    c.out.extend_from_slice(&self.latest);
                    c.out.extend_from_slice(b"\r\n");
                    c.state = State::Streaming { sent: self.latest_seq };
                    self.parts_sent += 1;
                }
                State::Streaming { .. } => return,
            }
        }
    }

    /// Once a second: slow requests and stalled readers.
    pub(super) fn enforce_limits(&mut self, now: Instant) {
        for c in self.conns.iter_mut().flatten() {
            if c.dead {
                continue;
            }
            if c.state == State::Reading && now.saturating_duration_since(c.since) >= self.request_timeout {
                log::info!("http {}: request not completed within {:?}; closing", c.peer, self.request_timeout);
                let mut w = WBuf::new(&mut self.scratch);
                if http::write_error(&mut w, 408).is_ok() {
                    let _ = (&c.stream).write(w.written());
                }
                c.dead = true;
            } else if !c.idle() && now.saturating_duration_since(c.last_progress) >= self.stall_timeout {
                log::warn!("http {}: took no data for {:?}; disconnecting (client stall)", c.peer, self.stall_timeout);
                c.dead = true;
            }
        }
    }

    /// Frees the slots of closed connections (their buffers go back to the pool).
    pub(super) fn reap(&mut self) {
        for slot in &mut self.conns {
            if slot.as_ref().is_some_and(|c| c.dead) {
                if let Some(mut c) = slot.take() {
                    log::debug!("http {}: closed", c.peer);
                    c.out.clear();
                    self.pool.push((c.inbuf, c.out));
                }
            }
        }
    }
}
