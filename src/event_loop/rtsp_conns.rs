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

use super::ring_reader::RingReader;
use super::{accept_media_conn, describe_delivery, set_dscp, status_of, EventLoop, PENDING_CAP};
use crate::limits;
use crate::rtsp::conn::{ConnInput, ConnPolicy, Expiry, Item};
use crate::rtsp::session::{self, ConnId, Delivery, Event, RequestCtx, SessionState, StreamInfo};
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) local_ip: IpAddr,
    /// The input side (buffering, pipelining, rate, timers, half-close: `rtsp::conn`). `None`
    /// only while [`EventLoop::process_input`] holds it.
    pub(super) input: Option<ConnInput<Box<[u8]>>>,
    pub(super) pending: Vec<u8>,
    pub(super) want_write: bool,
    pub(super) dead: bool,
    /// This connection has set up an interleaved session at some point.
    pub(super) had_interleaved: bool,
    /// Last time the socket took bytes (or had nothing to take).
    pub(super) last_progress: Instant,
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

    /// Whether the input is done: the peer closed and every complete request was handed out,
    /// or an error answer ends the connection.
    fn input_finished(&self) -> bool {
        self.input.as_ref().is_none_or(ConnInput::finished)
    }

    /// Whether the poll set should ask for POLLIN.
    pub(super) fn wants_read(&self) -> bool {
        self.pending.len() + limits::MAX_RESPONSE_BYTES <= PENDING_CAP
            && self.input.as_ref().is_some_and(ConnInput::wants_read)
    }

    pub(super) fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.pending.len() + bytes.len() > PENDING_CAP {
            return false;
        }
        self.pending.extend_from_slice(bytes);
        true
    }
}

/// What `process_input` does after an item.
enum After {
    Next,
    Stop,
    Close,
    Event(Event),
    /// A PLI/FIR on an interleaved session's RTCP channel.
    Keyframe(usize),
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
            let mut oldest: Option<(usize, (crate::time::Instant, u64))> = None;
            for (i, c) in self.conns.iter().enumerate() {
                let Some(c) = c else { continue };
                if c.dead || self.has_session(c.id) {
                    continue;
                }
                count += 1;
                let age = (c.input.as_ref().map_or(crate::time::Instant::ZERO, ConnInput::last_input), c.id.0);
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
            let input = ConnInput::new(inbuf, self.core_now(now));
            self.conns[idx] = Some(Conn {
                id,
                stream,
                peer,
                local_ip,
                input: Some(input),
                pending,
                want_write: false,
                dead: false,
                had_interleaved: false,
                last_progress: now,
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
        // Requests that arrived while output was backed up: answer them now rather than wait
        // for more input (after a half-close no more input comes, so answer all of them).
        while let Some(conn) = self.conns[c].as_mut() {
            let buffered = conn.input.as_ref().map_or(0, ConnInput::buffered);
            if !conn.pending.is_empty() || buffered == 0 || conn.input_finished() {
                break;
            }
            self.process_input(c, now);
            let Some(conn) = self.conns[c].as_mut() else {
                return;
            };
            if conn.flush(now).is_err() {
                self.kill_conn(c, "write failed");
                return;
            }
            if conn.input.as_ref().map_or(0, ConnInput::buffered) == buffered {
                break;
            }
        }
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        if conn.pending.is_empty() && conn.input_finished() {
            // Everything the peer sent before its FIN is answered (an incomplete rest never
            // will be), or an error answer is out: close, which ends an interleaved session on
            // this connection.
            let why = if conn.input.as_ref().is_some_and(ConnInput::peer_closed) {
                "closed by peer"
            } else {
                "closed after the answer"
            };
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
        let core_now = self.core_now(now);
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        let Some(input) = conn.input.as_mut() else { return };
        loop {
            let space = input.read_space();
            if space.is_empty() {
                break;
            }
            match (&conn.stream).read(space) {
                Ok(0) => {
                    input.handle_peer_closed();
                    break;
                }
                Ok(n) => input.handle_read(n, core_now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    input.handle_peer_closed();
                    break;
                }
            }
        }
        self.process_input(c, now);
        self.flush_conn(c, now);
    }

    /// Handles every complete request or interleaved frame in the connection's input, while
    /// there is room for the answers.
    fn process_input(&mut self, c: usize, now: Instant) {
        let core_now = self.core_now(now);
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        let Some(mut input) = conn.input.take() else { return };
        let (conn_id, peer) = (conn.id, conn.peer);
        let mut local_ip = heapless::String::<48>::new();
        let _ = std::fmt::Write::write_fmt(&mut local_ip, format_args!("{}", conn.local_ip));
        let rate = self.policy.max_request_rate;
        while let Some(conn) = self.conns[c].as_mut() {
            if conn.pending.len() + limits::MAX_RESPONSE_BYTES > PENDING_CAP {
                break;
            }
            // What to do once the item (which borrows the input) is gone.
            let next = {
                let Some(item) = input.poll_item(core_now, rate) else { break };
                match item {
                    Item::Interleaved { channel, data } => {
                        if !conn.had_interleaved && !self.slots.iter().any(|s| s.conn == Some(c)) {
                            // Binary frames on a connection that never set up an interleaved session:
                            // not a client we understand. Answer what is queued, then close. (A client
                            // that had one may still send a last RTCP BYE after TEARDOWN: ignored.)
                            log::info!("{peer}: interleaved data without an interleaved session; closing");
                            After::Close
                        } else {
                            let slot = self.slots.iter().position(|s| s.conn == Some(c) && s.channels.1 == channel);
                            match slot.map(|slot| (slot, self.server.handle_rtcp(slot, data, core_now))) {
                                // Over TCP nothing is lost in transit: NACKs are not answered.
                                Some((slot, fb)) if fb.keyframe => After::Keyframe(slot),
                                _ => After::Next,
                            }
                        }
                    }
                    Item::OverRate { cseq } => {
                        log::warn!("{peer}: more than {rate} requests/s; answering 503 and closing");
                        let n = session::write_error_response(503, cseq, &mut self.response);
                        conn.queue(&self.response[..n]);
                        After::Stop
                    }
                    Item::Bad(e) => {
                        log::info!("{peer}: bad request ({}); answering {} and closing", e.reason(), e.status());
                        let n = session::write_error_response(e.status(), None, &mut self.response);
                        conn.queue(&self.response[..n]);
                        After::Stop
                    }
                    Item::Request(request) => {
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
                        conn.queue(&self.response[..out.len]);
                        out.event.map_or(After::Next, After::Event)
                    }
                }
            };
            match next {
                After::Next => {}
                After::Stop => break,
                After::Close => {
                    input.close();
                    break;
                }
                After::Keyframe(slot) => self.on_keyframe_request(slot, now),
                After::Event(ev) => {
                    // The event may touch this connection (a slot binds to it): the input goes
                    // back meanwhile.
                    if let Some(conn) = self.conns[c].as_mut() {
                        conn.input = Some(input);
                    }
                    self.on_event(ev, c, now);
                    match self.conns[c].as_mut().and_then(|conn| conn.input.take()) {
                        Some(i) => input = i,
                        None => return,
                    }
                }
            }
        }
        if let Some(conn) = self.conns[c].as_mut() {
            conn.input = Some(input);
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
            let core_now = self.core_now(now);
            let conn_policy = ConnPolicy {
                request_timeout: self.policy.request_timeout,
                idle_timeout: self.policy.idle_timeout,
                max_request_rate: self.policy.max_request_rate,
            };
            let has_session = self.has_session(id);
            let Some(conn) = self.conns[c].as_mut() else { continue };
            let expired = conn.input.as_mut().and_then(|i| i.poll_expired(core_now, &conn_policy, has_session));
            match expired {
                Some(Expiry::SlowRequest) => {
                    log::info!(
                        "{peer}: request not completed within {:?}; answering 408 and closing",
                        self.policy.request_timeout
                    );
                    let n = session::write_error_response(408, None, &mut self.response);
                    conn.pending.clear();
                    conn.queue(&self.response[..n]);
                    if conn.flush(now).is_err() || conn.pending.is_empty() {
                        conn.dead = true;
                    }
                    continue;
                }
                Some(Expiry::Idle) => {
                    log::info!("{peer}: idle without a session for {:?}; closing", self.policy.idle_timeout);
                    self.kill_conn(c, "idle");
                    continue;
                }
                None => {}
            }
            if conn.want_write && now.saturating_duration_since(conn.last_progress) >= self.policy.client_stall_timeout
            {
                log::warn!(
                    "{peer}: took no data for {:?}; disconnecting (client stall)",
                    self.policy.client_stall_timeout
                );
                self.kill_conn(c, "stalled");
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
                let st = &mut self.streams[sess.stream];
                // Fast join: start on the newest access unit when it is an IDR (at most a frame
                // behind), else at the head and ask the encoder for one (see `IdrLimiter`).
                let fresh = st.hub.ring.fresh_keyframe();
                s.reader = RingReader::starting_at(fresh.unwrap_or(st.hub.ring.head()));
                s.play_at = Some(now);
                log::info!(
                    "{peer}: PLAY {} session {:016X} via {}{}",
                    st.cfg.path,
                    sess.id,
                    describe_delivery(&sess, s),
                    if sess.profile == crate::rtsp::transport::Profile::Avpf { " (RTP/AVPF)" } else { "" }
                );
                if fresh.is_none() {
                    st.request_idr(now);
                }
                self.arm_retransmission(slot, now);
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
                let bps = self.abr_manual(stream, bps, now);
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
        let rtx = s.rtx.as_ref().map(|x| x.counters).unwrap_or_default();
        log::info!(
            "{peer}: session {:016X} ended ({why}); sent {} packets, dropped {}; client reports: {} RR, lost {}, jitter {:.1} ms, rtt {}; NACKed {} retransmitted {}; PLI/FIR {}",
            sess.id,
            s.reader.sent,
            s.reader.dropped,
            r.reports,
            r.cumulative_lost,
            f64::from(r.jitter) / 90.0,
            r.rtt_us.map_or_else(|| "?".to_owned(), |us| format!("{:.1} ms", f64::from(us) / 1e3)),
            rtx.nacked,
            rtx.retransmitted,
            r.plis + r.firs
        );
        self.retire_retransmission(slot);
        let s = &mut self.slots[slot];
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
                if let Some(input) = conn.input.take() {
                    self.buffer_pool.push((input.into_buffer(), std::mem::take(&mut conn.pending)));
                }
            }
        }
    }
}
