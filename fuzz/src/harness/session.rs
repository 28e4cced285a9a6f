//! The RTSP session server driven by a structured script of requests, RTCP and time.

use super::*;

pub(super) struct SessionFuzz<'c> {
    srv: Server<'c, Vec<Session>>,
    auth: bool,
    multicast: bool,
    timeout: Duration,
    latest: Instant,
    stream: Option<StreamInfo<'c>>,
    out: Vec<u8>,
    /// Highest reception report count seen per slot since its last SETUP.
    reports: [u32; MAX_SLOTS],
}

pub(super) const FUZZ_GROUP: Option<MulticastGroup> =
    Some(MulticastGroup { group: std::net::IpAddr::V4(std::net::Ipv4Addr::new(239, 255, 42, 42)), port: 5004, ttl: 1 });

pub(super) const fn routes(path: &'static str, multicast: Option<MulticastGroup>) -> [StreamRoute<'static>; 2] {
    [StreamRoute { path, multicast }, StreamRoute { path: "/second", multicast: None }]
}

/// The session fuzzer's stream tables: three first paths, each without and with multicast.
pub(super) static SESSION_ROUTES: [[StreamRoute<'static>; 2]; 6] = [
    routes("/live", None),
    routes("/live", FUZZ_GROUP),
    routes("/", None),
    routes("/", FUZZ_GROUP),
    routes("/cam/1/", None),
    routes("/cam/1/", FUZZ_GROUP),
];

/// A sequence of operations on `Server` — requests built from real client templates or taken
/// raw, client RTCP, connection closes, dropped slots and time steps (some backwards) — with
/// the server's invariants checked after each.
///
/// Input: `slots timeout path stream seed auth` then operations, each an opcode and its operands
/// (see the match below). [`Cursor`] pads a short input with zeros.
pub fn rtsp_session(data: &[u8]) {
    let mut c = Cursor::new(data);
    let slots = 1 + usize::from(c.u8()) % MAX_SLOTS;
    let timeout = Duration::from_secs(1 + u64::from(c.u8() % 120));
    let path_index = usize::from(c.u8() % 3);
    let (sps, pps): (&[u8], &[u8]) = match c.u8() % 4 {
        0 => (SPS_X264_720P, PPS_X264),
        1 => (&[], &[]),
        _ => {
            let sps = c.short();
            (sps, c.short())
        }
    };
    let has_stream = c.u8() % 8 != 0;
    let stream = has_stream.then_some(StreamInfo {
        codec: uavstream::rtp::Codec::H264,
        sps,
        pps,
        ssrc: c.u32(),
        rtptime_now: c.u32(),
        framerate: u32::from(c.u8()),
        bitrate_kbps: c.u32() % 100_000,
    });
    let seed = c.u64();
    // One byte for both, so inputs kept from before multicast existed decode as they did.
    let auth_byte = c.u8();
    let auth = (auth_byte % 4 == 0).then_some(Auth { users: USERS, secret: [9; 16] });
    let multicast = (auth_byte & 0x10 != 0).then_some(MulticastGroup {
        group: std::net::Ipv4Addr::new(239, 255, 42, 42).into(),
        port: 5004,
        ttl: 1,
    });
    let mut sessions = vec![Session::FREE; slots];
    for (i, s) in sessions.iter_mut().enumerate() {
        s.server_ports = (58000 + 2 * i as u16, 58001 + 2 * i as u16);
    }
    // Two streams: the fuzzed path (with or without multicast), and a second one a request may
    // name instead.
    let routes = &SESSION_ROUTES[path_index * 2 + usize::from(multicast.is_some())];
    let feedback =
        [FeedbackPolicy::Off, FeedbackPolicy::KnownClients, FeedbackPolicy::All][usize::from(seed as u8 % 3)];
    let cfg = ServerConfig { streams: routes, session_timeout: timeout, auth, feedback, nack_window: None };
    let mut f = SessionFuzz {
        srv: Server::new(cfg, sessions, seed),
        auth: auth.is_some(),
        multicast: multicast.is_some(),
        timeout,
        latest: Instant::ZERO,
        stream,
        out: vec![0xa5; limits::MAX_RESPONSE_BYTES],
        reports: [0; MAX_SLOTS],
    };
    let mut ops = 0;
    while !c.is_empty() && ops < 512 {
        ops += 1;
        let conn = u64::from(c.u8()) % CONNS;
        match c.u8() % 10 {
            0..=3 => {
                let req = f.build_request(&mut c);
                f.feed(conn, &req);
            }
            4 => {
                let raw = c.long();
                f.feed(conn, raw);
            }
            5 => {
                let slot = usize::from(c.u8()) % (MAX_SLOTS + 1);
                let pkt = if c.bool() { c.short().to_vec() } else { receiver_report(&mut c) };
                f.rtcp(slot, &pkt);
            }
            6 => f.close(ConnId(conn)),
            7 => {
                let slot = usize::from(c.u8()) % (MAX_SLOTS + 1);
                f.srv.drop_session(slot);
            }
            _ => {
                let step = u64::from(c.u32()) * 1_000;
                f.advance(step, c.bool());
            }
        }
        f.check_invariants();
    }
}

/// An RTCP RR (plus SDES, as ffmpeg sends it) with fuzzed fields.
pub(super) fn receiver_report(c: &mut Cursor<'_>) -> Vec<u8> {
    let blocks = usize::from(c.u8() % 3);
    let mut p = vec![0x80 | blocks as u8, rtcp::PT_RR];
    p.extend_from_slice(&(1 + 6 * blocks as u16).to_be_bytes());
    p.extend_from_slice(&c.u32().to_be_bytes());
    for _ in 0..blocks {
        let mut b = c.bytes(24).to_vec();
        b.resize(24, 0);
        p.extend_from_slice(&b);
    }
    if c.bool() {
        p.extend_from_slice(&[0x81, rtcp::PT_SDES, 0x00, 0x02, 0x5e, 0x2f, 0x41, 0x0a, 0x01, 0x00, 0x00, 0x00]);
    }
    p
}

impl SessionFuzz<'_> {
    fn now(&mut self, step_us: u64, backwards: bool) -> Instant {
        if backwards {
            Instant::from_micros(self.latest.as_micros().saturating_sub(step_us))
        } else {
            let t = Instant::from_micros(self.latest.as_micros().saturating_add(step_us));
            self.latest = t;
            t
        }
    }

    fn build_request(&mut self, c: &mut Cursor<'_>) -> Vec<u8> {
        let method = METHODS[usize::from(c.u8()) % METHODS.len()];
        let path = ["/live", "/", "/cam/1", "/second"][usize::from(c.u8() % 4)];
        let mut r = String::new();
        let uri_kind = c.u8() % 8;
        let _ = match uri_kind {
            0 => write!(r, "{method} rtsp://127.0.0.1:8554{path} RTSP/1.0\r\n"),
            1 => write!(r, "{method} rtsp://192.168.1.10:8554{path}/trackID=0 RTSP/1.0\r\n"),
            2 => write!(r, "{method} * RTSP/1.0\r\n"),
            3 => write!(r, "{method} RTSP://[::1]{path}?token=1 RTSP/1.0\r\n"),
            4 => write!(r, "{method} {path}/ RTSP/1.0\r\n"),
            5 => write!(r, "{method} rtsp://h/other RTSP/1.0\r\n"),
            6 => write!(r, "{method} rtsp://h{} RTSP/1.0\r\n", String::from_utf8_lossy(c.short())),
            _ => write!(r, "{method} rtsp://127.0.0.1:8554{path}/ RTSP/1.0\r\n"),
        };
        match c.u8() % 8 {
            0 => {}
            1 => r.push_str(&format!("CSeq: {}\r\n", String::from_utf8_lossy(c.short()))),
            _ => r.push_str(&format!("CSeq: {}\r\n", c.u32())),
        }
        let sess = c.u8();
        if sess % 4 != 0 {
            let slot = usize::from(sess / 4) % MAX_SLOTS;
            let id = self.srv.session(slot).map_or(0, |s| s.id);
            let _ = match sess % 4 {
                1 => write!(r, "Session: {id:016X}\r\n"),
                2 => write!(r, "Session: {id:x};timeout=60\r\n"),
                _ => write!(r, "Session: {}\r\n", String::from_utf8_lossy(c.short())),
            };
        }
        let tr = c.u8();
        if tr % 3 != 0 {
            let t = match tr % 5 {
                4 => format!("RTP/AVP;unicast;client_port={}-{}", c.u16(), c.u16()),
                3 => String::from_utf8_lossy(c.short()).into_owned(),
                _ => TRANSPORTS[usize::from(tr / 5) % TRANSPORTS.len()].to_string(),
            };
            r.push_str(&format!("Transport: {t}\r\n"));
        }
        let extra = c.u8();
        if extra & 1 != 0 {
            r.push_str("User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n");
        }
        if extra & 2 != 0 {
            r.push_str(&format!("Require: {}\r\n", String::from_utf8_lossy(c.short())));
        }
        if extra & 4 != 0 {
            r.push_str(&format!("Authorization: {}\r\n", String::from_utf8_lossy(c.short())));
        }
        if extra & 8 != 0 {
            r.push_str("Authorization: Basic cGlsb3Q6czNjcmV0\r\n"); // pilot:s3cret
        }
        let mut bytes = r.into_bytes();
        if extra & 16 != 0 {
            let body = c.short();
            bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(body);
        } else {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes
    }

    /// What the event loop does with a connection's input.
    fn feed(&mut self, conn: u64, mut input: &[u8]) {
        while !input.is_empty() {
            match parse_input(input) {
                Ok(Input::Incomplete) => return,
                Ok(Input::Interleaved { channel, data, consumed }) => {
                    let slot = self.srv.sessions().iter().position(|s| {
                        s.state != SessionState::Free
                            && s.conn == ConnId(conn)
                            && matches!(s.delivery, Delivery::Interleaved { rtcp_channel, .. } if rtcp_channel == channel)
                    });
                    if let Some(slot) = slot {
                        self.rtcp(slot, data);
                    }
                    input = &input[consumed..];
                }
                Ok(Input::Request { request, consumed }) => {
                    self.request(conn, &request);
                    input = &input[consumed..];
                }
                Err(e) => {
                    let n = write_error_response(e.status(), None, &mut self.out);
                    assert!(self.out[..n].starts_with(b"RTSP/1.0 "));
                    return;
                }
            }
        }
    }

    fn request(&mut self, conn: u64, req: &Request<'_>) {
        let step = u64::from(req.body.len() as u32) * 10_000;
        let now = self.now(step, req.uri.len() % 7 == 0);
        let before: Vec<(SessionState, u64)> = self.srv.sessions().iter().map(|s| (s.state, s.id)).collect();
        let streams = [self.stream, self.stream];
        let ctx = RequestCtx { conn: ConnId(conn), local_addr: "127.0.0.1", streams: &streams };
        self.out.fill(0xa5);
        let o = self.srv.handle_request(&ctx, req, now, &mut self.out);
        assert!(o.len <= self.out.len());
        let text = std::str::from_utf8(&self.out[..o.len]).expect("response is UTF-8");
        assert!(text.starts_with("RTSP/1.0 ") && text.len() > 13, "no status line for {req:?}: {text:?}");
        let status: u16 = text[9..12].parse().expect("three-digit status");
        assert_eq!(&text[12..13], " ");
        let (head, body) = text.split_once("\r\n\r\n").expect("response head ends with a blank line");
        let mut lines = head.split("\r\n");
        lines.next();
        let headers: Vec<(&str, &str)> =
            lines.map(|l| l.split_once(": ").unwrap_or_else(|| panic!("header line {l:?}"))).collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v);
        match header("Content-Length") {
            Some(n) => assert_eq!(n.parse::<usize>().unwrap(), body.len(), "Content-Length"),
            None => assert!(body.is_empty(), "body without Content-Length"),
        }
        // A CSeq is a number of at most 10 digits; a valid one is echoed, anything else is a 400
        // without CSeq.
        let valid = |c: &str| !c.is_empty() && c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit());
        match req.cseq() {
            Some(cseq) if valid(cseq) => {
                assert_eq!(headers.first(), Some(&("CSeq", cseq)), "CSeq not echoed: {text:?}")
            }
            _ => assert_eq!((status, header("CSeq")), (400, None), "request without a valid CSeq: {text:?}"),
        }
        if let Some(ev) = o.event {
            assert_eq!(status, 200, "event {ev:?} with {text:?}");
        }
        let sessions = self.srv.sessions();
        match o.event {
            None => {
                let after: Vec<(SessionState, u64)> = sessions.iter().map(|s| (s.state, s.id)).collect();
                assert_eq!(before, after, "state changed without an event: {req:?}");
            }
            Some(Event::Setup { slot }) => {
                let s = &sessions[slot];
                assert_eq!((s.state, s.conn), (SessionState::Ready, ConnId(conn)));
                let sh = header("Session").expect("SETUP answer without Session");
                assert_eq!(sh.split(';').next(), Some(format!("{:016X}", s.id).as_str()));
                let tr = header("Transport").expect("SETUP answer without Transport");
                assert!(transport::choose_with(tr, true).is_ok(), "our Transport reply does not parse: {tr:?}");
                match s.delivery {
                    Delivery::Udp { client_rtp, client_rtcp, .. } => assert!(client_rtp != 0 && client_rtcp != 0),
                    Delivery::Interleaved { rtp_channel, rtcp_channel } => assert_ne!(rtp_channel, rtcp_channel),
                    Delivery::Multicast { lower } => {
                        assert!(self.multicast, "a multicast session while multicast is off: {req:?}");
                        assert_eq!(s.stream, 0, "a multicast session of a stream without a group: {req:?}");
                        assert_ne!(lower, Lower::Tcp);
                        assert!(tr.contains(";multicast;destination=239.255.42.42;port=5004-5005;ttl=1;"), "{tr:?}");
                    }
                }
                if before[slot].0 != SessionState::Free {
                    assert_eq!(before[slot].1, s.id, "re-SETUP changed the session id");
                }
                self.reports[slot] = 0;
            }
            Some(Event::Play { slot }) => assert_eq!(sessions[slot].state, SessionState::Playing),
            Some(Event::Pause { slot }) => {
                assert_eq!(before[slot].0, SessionState::Playing);
                assert_eq!(sessions[slot].state, SessionState::Ready);
            }
            Some(Event::Teardown { slot }) => {
                assert_ne!(before[slot].0, SessionState::Free);
                assert_eq!(sessions[slot].state, SessionState::Free);
            }
            Some(Event::SetBitrate { stream, bps }) => {
                assert!(stream < 2, "bitrate for a stream that does not exist");
                assert_eq!(req.method.as_str(), "SET_PARAMETER");
                assert!(uavstream::rtsp::session::BITRATE_RANGE.contains(&bps));
                let after: Vec<(SessionState, u64)> = sessions.iter().map(|s| (s.state, s.id)).collect();
                assert_eq!(before, after, "a bitrate change touched a session");
            }
        }
        if status == 503 && header("Retry-After") == Some("5") {
            assert!(before.iter().all(|s| s.0 != SessionState::Free), "503 with a free slot");
        }
        if self.auth && req.method.as_str() != "OPTIONS" && req.header("Authorization").is_none() {
            assert!(o.event.is_none() && matches!(status, 400 | 401 | 551), "no credentials but {text:?}");
        }
    }

    fn rtcp(&mut self, slot: usize, pkt: &[u8]) {
        let now = self.now(u64::from(pkt.len() as u32), false);
        self.srv.handle_rtcp(slot, pkt, now);
        if let Some(s) = self.srv.session(slot) {
            if s.state != SessionState::Free {
                assert!(s.reception.reports >= self.reports[slot], "reception report count went down");
                self.reports[slot] = s.reception.reports;
            }
        }
        walk_rtcp(pkt);
    }

    fn close(&mut self, conn: ConnId) {
        let mut n = 0;
        while let Some(slot) = self.srv.close_session_of(conn) {
            assert_eq!(self.srv.sessions()[slot].state, SessionState::Free);
            n += 1;
            assert!(n <= MAX_SLOTS, "close_session_of keeps returning slots");
        }
        assert!(
            !self.srv.sessions().iter().any(|s| s.state != SessionState::Free && s.conn == conn),
            "a session of a closed connection survived"
        );
    }

    fn advance(&mut self, step_us: u64, backwards: bool) {
        let now = self.now(step_us, backwards);
        let mut n = 0;
        while let Some(slot) = self.srv.poll_expired(now) {
            let s = &self.srv.sessions()[slot];
            assert_eq!(s.state, SessionState::Free);
            assert!(self.latest.saturating_since(s.last_seen) >= self.timeout, "expired early");
            n += 1;
            assert!(n <= MAX_SLOTS, "poll_expired keeps returning slots");
        }
        if let Some(t) = self.srv.poll_timeout() {
            assert!(t > self.latest, "poll_timeout {t:?} not after now {:?} once expired are drained", self.latest);
        }
    }

    fn check_invariants(&mut self) {
        let active: Vec<&Session> = self.srv.sessions().iter().filter(|s| s.state != SessionState::Free).collect();
        assert_eq!(active.len(), self.srv.active());
        assert!(self.srv.active() <= self.srv.sessions().len());
        for (i, a) in active.iter().enumerate() {
            assert_ne!(a.id, 0, "session id 0");
            assert!(active[i + 1..].iter().all(|b| b.id != a.id), "two sessions share an id");
            assert!(a.last_seen <= self.latest, "last_seen {:?} after the latest now {:?}", a.last_seen, self.latest);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rtcp
