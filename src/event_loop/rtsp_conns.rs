//! The loop's RTSP connections: reading, request handling, responses, interleaved framing and
//! the per-connection limits (rate, slow requests, idle, stalled readers, half-close).
//!
//! Invariants:
//! - Fixed connection slots and fixed buffers per connection, reused from a pool (accepting
//!   allocates nothing); output holds at most one response and one partial packet.
//! - Requests are answered in order; a connection whose output is backed up stops being read.
//! - A half-closed connection (FIN) is answered for every complete request it sent, then closed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use super::{accept_media_conn, describe_delivery, set_dscp, status_of, EventLoop, PENDING_CAP};
use crate::limits;
use crate::rtsp::parse::{parse_input, Input};
use crate::rtsp::session::{self, ConnId, Delivery, Event, RequestCtx, SessionState, StreamInfo};
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) local_ip: IpAddr,
    pub(super) inbuf: Box<[u8]>,
    pub(super) inlen: usize,
    pub(super) pending: Vec<u8>,
    pub(super) want_write: bool,
    pub(super) close_after_flush: bool,
    /// The peer half-closed (FIN: `shutdown(SHUT_WR)`, `nc -N`): every complete request that
    /// came before it is answered, then the connection closes.
    pub(super) peer_closed: bool,
    pub(super) dead: bool,
    /// This connection has set up an interleaved session at some point.
    pub(super) had_interleaved: bool,
    /// Last complete request or interleaved frame from the client.
    pub(super) last_input: Instant,
    /// When the first byte of a still incomplete request arrived.
    pub(super) partial_since: Option<Instant>,
    /// Last time the socket took bytes (or had nothing to take).
    pub(super) last_progress: Instant,
    /// Request-rate token bucket, in thousandths of a request.
    pub(super) tokens: u64,
    pub(super) tokens_at: Instant,
}

impl Conn {
    /// Writes as much of `pending` as the socket takes. `Err` means the connection is gone.
    pub(super) fn flush(&mut self, now: Instant) -> io::Result<()> {
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
    pub(super) fn admit_request(&mut self, now: Instant, rate: u32) -> bool {
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

    pub(super) fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.pending.len() + bytes.len() > PENDING_CAP {
            return false;
        }
        self.pending.extend_from_slice(bytes);
        true
    }
}

impl EventLoop<'_> {
    pub(super) fn has_session(&self, id: ConnId) -> bool {
        self.server.sessions().iter().any(|s| s.state != SessionState::Free && s.conn == id)
    }

    pub(super) fn accept(&mut self, now: Instant) {
        while let Some((stream, peer)) = accept_media_conn(&self.listener, self.cfg.dscp, "rtsp") {
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
                peer_closed: false,
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

    pub(super) fn on_conn(&mut self, c: usize, rev: i16, now: Instant) {
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
        // Requests that arrived while output was backed up: answer them now rather than wait
        // for more input (after a half-close no more input comes, so answer all of them).
        while let Some(conn) = self.conns[c].as_mut() {
            if !conn.pending.is_empty() || conn.inlen == 0 || conn.close_after_flush {
                break;
            }
            let before = conn.inlen;
            self.process_input(c, now);
            let Some(conn) = self.conns[c].as_mut() else {
                return;
            };
            if conn.flush(now).is_err() {
                self.kill_conn(c, "write failed");
                return;
            }
            if conn.inlen == before {
                break;
            }
        }
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        if conn.pending.is_empty() && (conn.close_after_flush || conn.peer_closed) {
            // Everything the peer sent before its FIN is answered (an incomplete rest never
            // will be): close, which ends an interleaved session on this connection.
            let why = if conn.peer_closed { "closed by peer" } else { "closed after the answer" };
            self.kill_conn(c, why);
            return;
        }
        if conn.pending.is_empty() {
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
        if eof {
            conn.peer_closed = true;
        }
        self.process_input(c, now);
        self.flush_conn(c, now);
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
                    let core_now = self.core_now(now);
                    let out = {
                        let streams: heapless::Vec<Option<StreamInfo<'_>>, { limits::MAX_STREAMS }> =
                            self.streams.iter().map(|st| st.hub.stream_info(now)).collect();
                        let ctx = RequestCtx { conn: conn_id, local_addr: &local_ip, streams: &streams };
                        self.server.handle_request(&ctx, &request, core_now, &mut self.response)
                    };
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
    pub(super) fn enforce_connection_limits(&mut self, now: Instant) {
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
                s.stream = sess.stream;
                s.peer = Some(peer);
                // The stream's DSCP on this slot's UDP sockets (streams may differ).
                let dscp = self.streams[sess.stream].cfg.dscp;
                if dscp != s.dscp {
                    let v6 = self.cfg.listen.is_ipv6();
                    if set_dscp(&s.rtp, v6, dscp).and_then(|_| set_dscp(&s.rtcp, v6, dscp)).is_ok() {
                        s.dscp = dscp;
                    }
                }
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
                let st = &mut self.streams[sess.stream];
                // Fast join: start on the newest access unit when it is an IDR (at most a frame
                // behind), else at the head and ask the encoder for one (see `IdrLimiter`).
                let fresh = st.hub.ring.fresh_keyframe();
                s.next = fresh.unwrap_or(st.hub.ring.head());
                s.play_at = Some(now);
                log::info!("{peer}: PLAY {} session {:016X} via {}", st.cfg.path, sess.id, describe_delivery(&sess, s));
                if fresh.is_none() {
                    st.request_idr(now);
                }
                self.sync_group(sess.stream);
            }
            Event::Pause { slot } => {
                self.slots[slot].playing = false;
                let sess = self.server.sessions()[slot];
                log::info!("{peer}: PAUSE session {:016X}", sess.id);
                self.sync_group(sess.stream);
            }
            Event::Teardown { slot } => self.end_session(slot, "TEARDOWN"),
            Event::SetBitrate { stream, bps } => {
                let st = &mut self.streams[stream];
                if st.pipeline.as_mut().is_some_and(|p| p.set_bitrate(bps)) {
                    log::info!("{peer}: {} bitrate set to {} kbit/s", st.cfg.path, bps / 1000);
                } else {
                    log::warn!(
                        "{peer}: {} bitrate change to {bps} asked, but this source cannot change its bitrate",
                        st.cfg.path
                    );
                }
            }
        }
    }

    pub(super) fn end_session(&mut self, slot: usize, why: &str) {
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
        self.sync_group(sess.stream);
    }

    /// Runs stream `si`'s multicast group while any of its multicast sessions plays (see
    /// `multicast`).
    fn sync_group(&mut self, si: usize) {
        let st = &mut self.streams[si];
        if let Some(g) = st.group.as_mut() {
            g.set_playing(self.server.multicast_playing(si), &st.hub.ring);
        }
    }

    pub(super) fn reap_dead_conns(&mut self) {
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
}
