//! The fuzz targets' bodies, one `pub fn NAME(data: &[u8])` per target in `fuzz_targets/`.
//!
//! Shared by the cargo-fuzz binaries and by the main crate's `tests/fuzz_regressions.rs` (which
//! includes this file with `#[path]`), so a crash kept in `fuzz/regressions/<target>/` replays
//! through exactly the code that found it. Only `std` and `uavstream` are used: structured inputs
//! are decoded by hand with [`Cursor`] rather than with the `arbitrary` crate.
//!
//! Every function panics (with a message naming the broken property) when the code under test
//! misbehaves, and returns quietly otherwise.

use std::fmt::Write as _;
use std::time::Duration;

use uavstream::cmdline;
use uavstream::limits;
use uavstream::media::fmp4::{self, read as mp4read, AvcTrack, InitError, SampleInfo};
use uavstream::media::h264::{annex_b, nal_unit_type, starts_access_unit, AuSpan, AuSplitter, Sps};
use uavstream::rtp::feedback::{self, nacked_seqs};
use uavstream::rtp::h264::{AccessUnit, Depacketizer, Packetizer};
use uavstream::rtp::header::{RtpHeader, HEADER_LEN};
use uavstream::rtp::rtcp::{self, parse_compound, ReportBlock, RtcpPacket, SenderReport};
use uavstream::rtp::rtx::{write_rtx_header, Retransmitter, RingPos, RtxPolicy, Verdict, RTX_HEADER_MAX};
use uavstream::rtsp::auth::{Auth, Credential};
use uavstream::rtsp::parse::{parse_input, uri_path, Input, ParseError, Request};
use uavstream::rtsp::sdp::{write_sdp, SdpParams};
use uavstream::rtsp::session::{
    write_error_response, ConnId, Delivery, Event, FeedbackPolicy, RequestCtx, Server, ServerConfig, Session,
    SessionState, StreamInfo, StreamRoute,
};
use uavstream::rtsp::transport::{self, Lower, MulticastGroup, TransportSpec};
use uavstream::time::Instant;
use uavstream::wbuf::{decode_base64, put_base64, Full, WBuf};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz_targets/*.rs` and of the corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("rtsp_input", rtsp_input),
    ("rtsp_session", rtsp_session),
    ("rtcp", rtcp),
    ("h264", h264),
    ("rtp_h264_roundtrip", rtp_h264_roundtrip),
    ("cmdline", cmdline),
    ("base64", base64),
    ("http_request", http_request),
    ("rtp_jpeg_roundtrip", rtp_jpeg_roundtrip),
    ("fmp4_roundtrip", fmp4_roundtrip),
    ("rtcp_feedback", rtcp_feedback),
    ("rtsp_client", rtsp_client),
];

/// Reads structured values off the fuzz input; past the end every read gives zeros / empty.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        b.iter().fold(0u16, |v, &x| (v << 8) | u16::from(x))
    }

    pub fn u32(&mut self) -> u32 {
        let b = self.bytes(4);
        b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x))
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A byte string with a one-byte length prefix (0..=255 bytes).
    pub fn short(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A byte string with a two-byte length prefix.
    pub fn long(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
}

fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    let off = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    assert!(off <= outer.len() && inner.len() <= outer.len() - off, "slice does not borrow from its input");
    off
}

// ---------------------------------------------------------------------------------------------
// rtsp_input

/// `parse_input` over pipelined input as the event loop drives it; every request round-trips
/// through `Request::write_to`, every strict prefix of a complete unit is `Incomplete`, and the
/// Transport header, URI and Authorization header go through their own parsers.
pub fn rtsp_input(data: &[u8]) {
    let mut rest = data;
    let mut units = 0;
    loop {
        match parse_input(rest) {
            Ok(Input::Incomplete) => break,
            Ok(Input::Request { request, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len(), "consumed {consumed} of {}", rest.len());
                check_prefixes_incomplete(&rest[..consumed]);
                check_request(&request);
                rest = &rest[consumed..];
            }
            Ok(Input::Interleaved { channel: _, data: frame, consumed }) => {
                assert_eq!(consumed, 4 + frame.len());
                assert!(frame.len() <= limits::MAX_INTERLEAVED_IN);
                assert_eq!(frame, &rest[4..consumed]);
                check_prefixes_incomplete(&rest[..consumed]);
                walk_rtcp(frame);
                rest = &rest[consumed..];
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 413 | 431 | 505), "{e:?}");
                let mut out = [0u8; 256];
                let n = write_error_response(e.status(), None, &mut out);
                assert!(out[..n].starts_with(b"RTSP/1.0 ") && out[..n].ends_with(b"\r\n\r\n"));
                break;
            }
        }
        units += 1;
        assert!(units <= data.len(), "parse_input made no progress");
    }
}

/// Every strict prefix of a complete request or frame must ask for more bytes.
fn check_prefixes_incomplete(unit: &[u8]) {
    let n = unit.len();
    let check = |cut: usize| {
        let r = parse_input(&unit[..cut]);
        assert_eq!(r, Ok(Input::Incomplete), "prefix of {cut} of {n} bytes");
    };
    if n <= 300 {
        (0..n).for_each(check);
    } else {
        (0..16).map(|i| i * n / 16).chain([n - 1]).for_each(check);
    }
}

fn check_request(r: &Request<'_>) {
    assert_eq!(r.version, (1, 0));
    assert!(r.headers.len() <= limits::MAX_HEADERS);
    assert!(r.body.len() <= limits::MAX_BODY_BYTES);
    let method = r.method.as_str();
    assert!(!method.is_empty() && !method.contains([' ', '\r', '\n']), "method {method:?}");
    assert!(!r.uri.is_empty() && !r.uri.bytes().any(|b| b == b' ' || b.is_ascii_control()), "uri {:?}", r.uri);
    for (n, v) in &r.headers {
        assert!(!n.is_empty() && !n.contains([':', ' ', '\r', '\n']), "header name {n:?}");
        assert_eq!(*v, v.trim(), "header value not trimmed");
        assert!(!v.contains('\n'));
    }
    let _ = (r.cseq(), r.session_id());

    // parse → write → parse.
    let mut buf = vec![0xa5u8; 2 * limits::MAX_REQUEST_BYTES + limits::MAX_BODY_BYTES + 512];
    let mut w = WBuf::new(&mut buf);
    r.write_to(&mut w).expect("write_to into a large buffer");
    let written = w.len();
    let head_len = written - r.body.len();
    match parse_input(&buf[..written]) {
        Ok(Input::Request { request, consumed }) => {
            assert_eq!(consumed, written, "re-parse consumed");
            assert_eq!(&request, r, "round trip changed the request");
        }
        // The written form spells every line `Name: value\r\n`, which can be longer than what
        // the client sent; past the head limit the parser refuses it, as it should.
        Err(ParseError::HeadTooLarge) if head_len > limits::MAX_REQUEST_BYTES => {}
        other => panic!("re-parse of the written request: {other:?}"),
    }
    // A buffer one byte short is Full, never a panic or a partial success.
    let mut short = vec![0u8; written - 1];
    assert_eq!(r.write_to(&mut WBuf::new(&mut short)), Err(Full));

    if let Some(t) = r.header("Transport") {
        check_transport(t);
    }
    check_uri_path(r.uri);
    if let Some(a) = r.header("Authorization") {
        check_authorization(a, r.method.as_str(), r.uri);
    }
}

/// `choose`'s answer is servable, and our reply `Transport` parses back to the same choice.
pub fn check_transport(header: &str) {
    for spec in header.split(',') {
        let _ = transport::parse_spec(spec);
    }
    let Ok(t) = transport::choose(header) else { return };
    assert!(!t.multicast, "chose multicast: {header:?}");
    if let Some((a, b)) = t.client_port {
        assert!(a != 0 && b != 0, "port 0 chosen: {header:?}");
    }
    if let Some((a, b)) = t.interleaved {
        assert_ne!(a, b, "same channel twice: {header:?}");
    }
    let mut buf = [0xa5u8; 256];
    let mut w = WBuf::new(&mut buf);
    let want = match (t.lower, t.client_port) {
        (Lower::Tcp, _) => {
            let ch = t.interleaved.unwrap_or((0, 1));
            transport::write_tcp_reply(&mut w, t.profile, ch, 0x1234_5678).unwrap();
            TransportSpec {
                lower: Lower::Tcp,
                profile: t.profile,
                multicast: false,
                client_port: None,
                interleaved: Some(ch),
            }
        }
        (lower, Some(cp)) => {
            transport::write_udp_reply(&mut w, lower, t.profile, cp, (58000, 58001), 0xdead_beef).unwrap();
            TransportSpec { lower, profile: t.profile, multicast: false, client_port: Some(cp), interleaved: None }
        }
        (_, None) => panic!("UDP chosen without client ports: {header:?}"),
    };
    let reply = std::str::from_utf8(w.written()).unwrap();
    assert_eq!(transport::choose(reply), Ok(want), "reply {reply:?} to {header:?}");
    check_multicast_transport(header);
}

/// With multicast on: the choice is the unicast one or the multicast one, whichever the client
/// listed first; a multicast answer carries our group and parses back to the same choice.
fn check_multicast_transport(header: &str) {
    let unicast = transport::choose(header);
    let Ok(t) = transport::choose_with(header, true) else {
        assert!(unicast.is_err(), "multicast on refused what unicast serves: {header:?}");
        return;
    };
    if !t.multicast {
        assert_eq!(Ok(t), unicast, "multicast on changed the unicast choice: {header:?}");
        return;
    }
    assert_ne!(t.lower, Lower::Tcp, "multicast over TCP chosen: {header:?}");
    assert_eq!((t.client_port, t.interleaved), (None, None), "{header:?}");
    let g = MulticastGroup { group: "ff15::4242".parse().unwrap(), port: 65534, ttl: 255 };
    let mut buf = [0xa5u8; 256];
    let mut w = WBuf::new(&mut buf);
    transport::write_multicast_reply(&mut w, t.lower, &g, 0xdead_beef).unwrap();
    let reply = std::str::from_utf8(w.written()).unwrap();
    assert_eq!(transport::choose_with(reply, true), Ok(t), "reply {reply:?} to {header:?}");
    assert_eq!(transport::choose(reply), Err(transport::TransportError::Unsupported), "{reply:?}");
}

pub fn check_uri_path(uri: &str) {
    if let Some(p) = uri_path(uri) {
        assert!(p.starts_with('/'), "uri_path({uri:?}) = {p:?}");
        assert!(!p.contains(['?', '#']), "uri_path({uri:?}) = {p:?} keeps the query");
        assert!(uri.contains(p), "uri_path({uri:?}) = {p:?} is not part of it");
    }
}

const USERS: &[Credential<'static>] = &[
    Credential { user: "pilot", password: "s3cret", path: None },
    Credential { user: "viewer", password: "", path: Some("/live") },
];

fn check_authorization(header: &str, method: &str, uri: &str) {
    let auth = Auth { users: USERS, secret: [7; 16] };
    let path = uri_path(uri).unwrap_or("/live");
    for now_s in [0, 1_000, u64::from(u32::MAX) + 5] {
        let _ = auth.verify(Some(header), method, path, now_s);
    }
    let _ = uavstream::rtsp::auth::DigestParams::parse(header);
}

// ---------------------------------------------------------------------------------------------
// rtsp_session

const SPS_X264_720P: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f,
    0x23, 0xc6, 0x0c, 0xa8,
];
const PPS_X264: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

/// Verbatim requests and Transport headers of real clients, for the request builder.
const TRANSPORTS: &[&str] = &[
    "RTP/AVP/TCP;unicast;interleaved=0-1",         // ffmpeg -rtsp_transport tcp
    "RTP/AVP;unicast;client_port=45486-45487",     // GStreamer rtspsrc, VLC
    "RTP/AVP/UDP;unicast;client_port=50620-50621", // WinTAK
    "RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1",
    "RTP/AVP/TCP;unicast;interleaved=3-4",
    "RTP/AVP;unicast;client_port=5000",
    "RTP/AVP;unicast",
];
const METHODS: &[&str] = &[
    "OPTIONS",
    "DESCRIBE",
    "SETUP",
    "PLAY",
    "PAUSE",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
    "ANNOUNCE",
    "RECORD",
    "REDIRECT",
    "FOO",
];
const MAX_SLOTS: usize = 4;
const CONNS: u64 = 4;

struct SessionFuzz<'c> {
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

const FUZZ_GROUP: Option<MulticastGroup> =
    Some(MulticastGroup { group: std::net::IpAddr::V4(std::net::Ipv4Addr::new(239, 255, 42, 42)), port: 5004, ttl: 1 });

const fn routes(path: &'static str, multicast: Option<MulticastGroup>) -> [StreamRoute<'static>; 2] {
    [StreamRoute { path, multicast }, StreamRoute { path: "/second", multicast: None }]
}

/// The session fuzzer's stream tables: three first paths, each without and with multicast.
static SESSION_ROUTES: [[StreamRoute<'static>; 2]; 6] = [
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
fn receiver_report(c: &mut Cursor<'_>) -> Vec<u8> {
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

/// Iterates every packet and report block; an error ends the iteration.
fn walk_rtcp(data: &[u8]) {
    let mut packets = 0;
    let mut errored = false;
    for p in parse_compound(data) {
        assert!(!errored, "a packet after an error");
        packets += 1;
        assert!(packets <= data.len() / 4 + 1, "more packets than words");
        match p {
            Ok(RtcpPacket::SenderReport { blocks, .. }) | Ok(RtcpPacket::ReceiverReport { blocks, .. }) => {
                assert!(blocks.count() <= 31);
            }
            Ok(_) => {}
            Err(_) => errored = true,
        }
    }
}

/// `parse_compound` over the raw input, then SR/SDES/BYE written with fields taken from the
/// input parse back to the same fields, and a receiver report encoded by hand (RFC 3550 §6.4.2)
/// parses to its fields.
pub fn rtcp(data: &[u8]) {
    walk_rtcp(data);

    let mut c = Cursor::new(data);
    let sr = SenderReport {
        ssrc: c.u32(),
        ntp: c.u64(),
        rtp_timestamp: c.u32(),
        packet_count: c.u32(),
        octet_count: c.u32(),
    };
    let small = usize::from(c.u16()) % 128;
    let cname_raw = c.long();
    let cname = String::from_utf8_lossy(cname_raw);
    for bye in [false, true] {
        let write = |buf: &mut [u8]| {
            if bye {
                rtcp::write_bye(&sr, &cname, buf)
            } else {
                rtcp::write_sender_report(&sr, &cname, buf)
            }
        };
        let mut buf = vec![0xa5u8; 2048];
        let n = write(&mut buf).expect("SR fits 2048 bytes");
        assert_eq!(n % 4, 0);
        let mut small_buf = vec![0xa5u8; small];
        match write(&mut small_buf) {
            Ok(m) => assert_eq!(&small_buf[..m], &buf[..n]),
            Err(Full) => assert!(small < n),
        }
        let pkts: Vec<_> = parse_compound(&buf[..n]).collect();
        assert_eq!(pkts.len(), if bye { 3 } else { 2 }, "{pkts:?}");
        match pkts[0] {
            Ok(RtcpPacket::SenderReport { report, mut blocks }) => {
                assert_eq!(report, sr);
                assert!(blocks.next().is_none());
            }
            ref other => panic!("{other:?}"),
        }
        assert_eq!(pkts[1], Ok(RtcpPacket::Other(rtcp::PT_SDES)));
        let cn = cname.as_bytes();
        let cn = &cn[..cn.len().min(255)];
        assert_eq!((buf[36], usize::from(buf[37])), (1, cn.len()), "SDES CNAME item");
        assert_eq!(&buf[38..38 + cn.len()], cn);
        if bye {
            assert_eq!(pkts[2], Ok(RtcpPacket::Bye));
        }
    }

    // A receiver report encoded by hand.
    let count = usize::from(c.u8() % 32);
    let ssrc = c.u32();
    let blocks: Vec<ReportBlock> = (0..count)
        .map(|_| {
            let lost = c.u32();
            ReportBlock {
                ssrc: c.u32(),
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: ((lost << 8) as i32) >> 8,
                highest_sequence: c.u32(),
                jitter: c.u32(),
                last_sr: c.u32(),
                delay_since_last_sr: c.u32(),
            }
        })
        .collect();
    let pad = usize::from(c.u8() % 4) * 4;
    let mut p = vec![0x80 | if pad > 0 { 0x20 } else { 0 } | count as u8, rtcp::PT_RR];
    p.extend_from_slice(&((1 + 6 * count + pad / 4) as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for b in &blocks {
        p.extend_from_slice(&b.ssrc.to_be_bytes());
        p.push(b.fraction_lost);
        p.extend_from_slice(&(b.cumulative_lost as u32).to_be_bytes()[1..]);
        for v in [b.highest_sequence, b.jitter, b.last_sr, b.delay_since_last_sr] {
            p.extend_from_slice(&v.to_be_bytes());
        }
    }
    if pad > 0 {
        p.resize(p.len() + pad - 1, 0);
        p.push(pad as u8);
    }
    match parse_compound(&p).collect::<Vec<_>>().as_slice() {
        [Ok(RtcpPacket::ReceiverReport { ssrc: s, blocks: got })] => {
            assert_eq!(*s, ssrc);
            assert_eq!(got.collect::<Vec<_>>(), blocks);
        }
        other => panic!("hand-made RR parsed as {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// h264

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn split_spans(data: &[u8], mut next_chunk: impl FnMut() -> usize) -> Vec<AuSpan> {
    let mut spans = Vec::new();
    let mut sp = AuSplitter::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = next_chunk().clamp(1, rest.len());
        sp.feed(&rest[..n], &mut |a| spans.push(a));
        rest = &rest[n..];
    }
    sp.finish(&mut |a| spans.push(a));
    spans
}

/// `annex_b`, `Sps::parse` on every NAL unit, and `AuSplitter` fed whole, byte by byte and in
/// pseudo-random chunks (seeded from the input), which must all give the same spans.
pub fn h264(data: &[u8]) {
    let nals: Vec<&[u8]> = annex_b(data).collect();
    let mut rebuilt = Vec::new();
    for nal in &nals {
        let _ = offset_in(data, nal);
        assert!(!nal.is_empty() && nal.last() != Some(&0), "NAL {nal:02x?} empty or ends in zero");
        assert!(!nal.windows(3).any(|w| w == [0, 0, 1]), "NAL {nal:02x?} holds a start code");
        if let Ok(sps) = Sps::parse(nal) {
            assert!(sps.width > 0 && sps.height > 0 && sps.width <= 16 * 1024 && sps.height <= 32 * 1024, "{sps:?}");
        }
        let _ = starts_access_unit(nal, false);
        let _ = starts_access_unit(nal, true);
        rebuilt.extend_from_slice(&[0, 0, 0, 1]);
        rebuilt.extend_from_slice(nal);
    }
    let again: Vec<&[u8]> = annex_b(&rebuilt).collect();
    assert_eq!(again, nals, "annex_b of its own output with 4-byte start codes");
    let _ = Sps::parse(data);

    let whole = split_spans(data, || usize::MAX);
    let mut end = None;
    for s in &whole {
        assert!(s.start < s.end && s.end <= data.len() as u64, "{s:?}");
        if let Some(e) = end {
            assert_eq!(s.start, e, "spans are not contiguous");
        }
        end = Some(s.end);
        let unit = &data[s.start as usize..s.end as usize];
        let types: Vec<u8> = annex_b(unit).filter_map(nal_unit_type).collect();
        assert_eq!(s.idr, types.contains(&5), "idr flag of {s:?}, NAL types {types:?}");
        assert_eq!(s.has_sps, types.contains(&7), "has_sps flag of {s:?}, NAL types {types:?}");
    }
    if let Some(e) = end {
        assert_eq!(e, data.len() as u64, "last span does not end the stream");
    }
    assert_eq!(split_spans(data, || 1), whole, "byte-by-byte feeding");
    let mut state =
        0x9e37_79b9_7f4a_7c15 ^ data.len() as u64 ^ data.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    for _ in 0..2 {
        let spans = split_spans(data, || (xorshift(&mut state) % 64) as usize + 1);
        assert_eq!(spans, whole, "chunked feeding");
    }
}

// ---------------------------------------------------------------------------------------------
// rtp_h264_roundtrip

/// Turns fuzz bytes into a NAL unit the Annex B framing can carry: a header whose type is a
/// single-NAL type (1..=23), emulation prevention (`00 00 0x` → `00 00 03 0x`, H.264 §7.4.1),
/// and a non-zero last byte (the RBSP stop bit).
fn make_nal(raw: &[u8]) -> Vec<u8> {
    let h = raw.first().copied().unwrap_or(0x65);
    let t = match h & 0x1f {
        t @ 1..=23 => t,
        t => 1 + t % 23,
    };
    let mut nal = vec![(h & 0xe0) | t];
    let mut zeros = 0;
    for &b in raw.iter().skip(1) {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    if nal.last() == Some(&0) {
        nal.push(0x80);
    }
    nal
}

/// Access units of arbitrary NAL units (and SPS/PPS to prepend) through `Packetizer` with an
/// arbitrary `max_packet` and `Depacketizer` back: the output is exactly the input NAL units,
/// packets fit, sequence numbers run on without gaps, the marker is on each unit's last packet
/// only, and a short output buffer is `Full` without losing a packet.
pub fn rtp_h264_roundtrip(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_packet = 32 + usize::from(c.u16()) % (limits::MAX_RTP_PACKET - 31);
    let first_seq = c.u16();
    let ssrc = c.u32();
    let pt = c.u8() & 0x7f;
    let mut pz = Packetizer::new(ssrc, pt, first_seq, max_packet);
    assert_eq!(pz.max_packet(), max_packet);
    let mut seq = first_seq;
    let mut de = Depacketizer::new();
    let units = 1 + c.u8() % 4;
    for _ in 0..units {
        let timestamp = c.u32();
        let flags = c.u8();
        let prepend: Vec<Vec<u8>> = (0..2)
            .map(|i| match (flags >> (2 * i)) & 3 {
                0 | 3 => Vec::new(), // none, or an empty one (skipped)
                1 => make_nal(&[0x67, 0x42, 0xc0, 0x1f]),
                _ => make_nal(c.short()),
            })
            .collect();
        let count = usize::from(c.u8() % 6);
        let nals: Vec<Vec<u8>> = (0..count).map(|_| make_nal(c.long())).collect();
        let mut annexb = Vec::new();
        if flags & 0x10 != 0 {
            annexb.extend_from_slice(&[0xff, 0x12]); // bytes before the first start code are skipped
        }
        for (i, n) in nals.iter().enumerate() {
            let three = flags & 0x20 != 0 && i % 2 == 1;
            annexb.extend_from_slice(if three { &[0, 0, 1] } else { &[0, 0, 0, 1] });
            annexb.extend_from_slice(n);
            if flags & 0x40 != 0 {
                annexb.extend_from_slice(&[0, 0]); // trailing_zero_8bits
            }
        }
        let expect_nals: Vec<&[u8]> =
            prepend.iter().filter(|p| !p.is_empty()).chain(nals.iter()).map(Vec::as_slice).collect();
        let mut expect = Vec::new();
        for n in &expect_nals {
            expect.extend_from_slice(&[0, 0, 0, 1]);
            expect.extend_from_slice(n);
        }
        let au = AccessUnit {
            data: &annexb,
            timestamp,
            prepend: [
                (flags & 3 != 0).then_some(prepend[0].as_slice()),
                (flags & 12 != 0).then_some(prepend[1].as_slice()),
            ],
        };

        let mut out = vec![0u8; expect.len() + 64];
        let mut w = WBuf::new(&mut out);
        let mut pkts = pz.push(au);
        let mut buf = vec![0xa5u8; max_packet];
        let mut short = vec![0u8; max_packet - 1];
        let mut n = 0;
        let mut marker_seen = false;
        loop {
            if n == 0 || flags & 0x80 != 0 {
                match pkts.next(&mut short) {
                    None => {}
                    Some(Err(Full)) => {}
                    Some(Ok(p)) => panic!("packet {p:?} written into a buffer below max_packet"),
                }
            }
            buf.fill(0xa5);
            let Some(r) = pkts.next(&mut buf) else { break };
            let info = r.expect("next into a max_packet buffer");
            assert!(info.len <= max_packet && info.len > HEADER_LEN, "packet of {} bytes", info.len);
            assert!(!marker_seen, "a packet after the marker");
            let (h, payload) = RtpHeader::parse(&buf[..info.len]).expect("our RTP header parses");
            assert_eq!(
                (h.sequence, h.timestamp, h.ssrc, h.payload_type, h.marker),
                (seq, timestamp, ssrc, pt, info.marker)
            );
            assert_eq!(info.sequence, seq);
            seq = seq.wrapping_add(1);
            marker_seen = info.marker;
            de.push(payload, &mut w).unwrap_or_else(|e| panic!("depacketize packet {n}: {e:?}"));
            n += 1;
        }
        assert_eq!(n > 0, !expect_nals.is_empty());
        assert_eq!(marker_seen, n > 0, "no marker on the last packet");
        assert_eq!(pz.next_sequence(), seq);
        assert!(w.written() == expect.as_slice(), "depacketize(packetize(x)) != x");
    }
}

// ---------------------------------------------------------------------------------------------
// cmdline

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `cmdline::args` never panics, returns slices of its input, splits only on whitespace outside
/// double quotes, stops at `--`; tokens re-joined canonically tokenize to the same list.
pub fn cmdline(data: &[u8]) {
    let args: Vec<cmdline::Arg<'_>> = cmdline::args(data).collect();
    assert!(args.len() <= data.len() / 2 + 1, "more arguments than possible");
    for a in &args {
        let p = offset_in(data, a.param);
        assert!(!(a.param == b"--" && a.value.is_none()), "`--` not treated as the end");
        // The argument starts after whitespace (or at the start), possibly with its opening quote.
        let start = if p > 0 && data[p - 1] == b'"' { p - 1 } else { p };
        assert!(start == 0 || is_space(data[start - 1]), "argument does not start after whitespace");
        let mut spans = vec![(p, a.param.len())];
        if let Some(v) = a.value {
            spans.push((offset_in(data, v), v.len()));
        }
        for (off, len) in spans {
            for i in off..off + len {
                if is_space(data[i]) {
                    let quotes = data[start..i].iter().filter(|&&b| b == b'"').count();
                    assert!(quotes % 2 == 1, "unquoted whitespace at {i} in {:?}", String::from_utf8_lossy(data));
                }
            }
        }
        if let Some(k) = cmdline::uavstream_key(a.param) {
            assert!(a.param.ends_with(k) && !k.is_empty());
        }
        assert!(cmdline::param_eq(a.param, a.param));
    }

    // Canonical re-join of the arguments without quotes or `=` oddities: `k`, `k=v`, `k="v w"`.
    let simple: Vec<(&[u8], Option<&[u8]>)> = args
        .iter()
        .filter(|a| {
            !a.param.is_empty()
                && !a.param.iter().any(|&b| b == b'"' || b == b'=' || is_space(b))
                && a.value.is_none_or(|v| !v.contains(&b'"'))
        })
        .map(|a| (a.param, a.value))
        .collect();
    let mut line = Vec::new();
    for (k, v) in &simple {
        line.extend_from_slice(k);
        if let Some(v) = v {
            line.push(b'=');
            let quote = v.iter().any(|&b| is_space(b));
            if quote {
                line.push(b'"');
            }
            line.extend_from_slice(v);
            if quote {
                line.push(b'"');
            }
        }
        line.push(b' ');
    }
    let again: Vec<(&[u8], Option<&[u8]>)> = cmdline::args(&line).map(|a| (a.param, a.value)).collect();
    assert_eq!(again, simple, "re-joined line {:?}", String::from_utf8_lossy(&line));
}

// ---------------------------------------------------------------------------------------------
// base64 (and the SDP that carries it)

/// `put_base64` → `decode_base64` is the identity; `decode_base64` of anything never panics;
/// the SDP written for an SPS/PPS taken from the input carries them back out.
pub fn base64(data: &[u8]) {
    let enc_len = data.len().div_ceil(3) * 4;
    let mut enc = vec![0xa5u8; enc_len];
    let mut w = WBuf::new(&mut enc);
    put_base64(&mut w, data).expect("exact-size buffer");
    assert_eq!(w.len(), enc_len);
    assert!(enc.iter().all(|&b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    if enc_len > 0 {
        let mut short = vec![0u8; enc_len - 1];
        assert_eq!(put_base64(&mut WBuf::new(&mut short), data), Err(Full));
    }
    let mut dec = vec![0u8; data.len()];
    assert_eq!(decode_base64(&enc, &mut dec), Some(data.len()));
    assert_eq!(dec, data);
    if !data.is_empty() {
        let mut short = vec![0u8; data.len() - 1];
        assert_eq!(decode_base64(&enc, &mut short), None, "decoded into too small a buffer");
    }
    let mut any = vec![0u8; data.len()];
    if let Some(n) = decode_base64(data, &mut any) {
        assert!(n <= data.len() * 3 / 4 + 1);
    }

    let split = data.len() / 2;
    let (sps, pps) = data.split_at(split);
    let (sps, pps) =
        (&sps[..sps.len().min(limits::MAX_PARAM_SET_BYTES)], &pps[..pps.len().min(limits::MAX_PARAM_SET_BYTES)]);
    let origin = if data.first().is_some_and(|b| b & 1 == 1) { "fe80::1" } else { "192.168.1.10" };
    let p = SdpParams {
        session_id: u64::from(data.len() as u32),
        session_version: 1,
        origin_addr: origin,
        codec: uavstream::rtp::Codec::H264,
        payload_type: 96,
        destination: None,
        sps,
        pps,
        framerate: 30,
        bandwidth_kbps: 2000,
    };
    let mut buf = vec![0xa5u8; limits::MAX_SDP_BYTES];
    let n = write_sdp(&p, &mut buf).expect("SDP with parameter sets within limits fits MAX_SDP_BYTES");
    let sdp = std::str::from_utf8(&buf[..n]).expect("SDP is UTF-8");
    assert!(sdp.lines().all(|l| !l.is_empty()) && sdp.ends_with("\r\n"));
    assert_eq!(sdp.contains("profile-level-id="), Sps::parse(sps).is_ok());
    if !sps.is_empty() && !pps.is_empty() {
        let sets =
            sdp.split("sprop-parameter-sets=").nth(1).expect("sprop-parameter-sets").split("\r\n").next().unwrap();
        let (a, b) = sets.split_once(',').expect("two parameter sets");
        for (b64, want) in [(a, sps), (b, pps)] {
            let mut out = vec![0u8; want.len()];
            assert_eq!(decode_base64(b64.as_bytes(), &mut out), Some(want.len()));
            assert_eq!(out, want);
        }
    } else {
        assert!(!sdp.contains("sprop-parameter-sets"));
    }
}

/// HTTP request heads (MJPEG/snapshot listener): parsing never panics, a complete request is
/// complete at every longer prefix with the same length, and every prefix of it is incomplete;
/// routing and the response writers never panic.
pub fn http_request(data: &[u8]) {
    use uavstream::http::{self, Parsed};
    let result = http::parse_request(data);
    if let Ok(Parsed::Complete { request, consumed }) = result {
        assert!(consumed <= data.len() && consumed <= http::MAX_HEAD_BYTES, "consumed {consumed}");
        assert!(request.path.starts_with('/'), "path {:?}", request.path);
        for cut in 0..consumed {
            assert!(
                !matches!(http::parse_request(&data[..cut]), Ok(Parsed::Complete { .. })),
                "a {cut}-byte prefix of a {consumed}-byte head is already complete"
            );
        }
        let _ = http::route(&request, ["/live", "/low"]);
        let _ = request.persistence();
    }
    if let Err(e) = result {
        let mut buf = [0u8; 512];
        http::write_error(&mut WBuf::new(&mut buf), e.status(), http::Persistence::Close)
            .expect("an error response fits 512 bytes");
    }
}

/// RTP/JPEG: any input the JPEG parser accepts packetizes at any MTU and depacketizes back to a
/// JPEG with the same scan bytes and quantization tables; the depacketizer never panics on raw
/// payloads. The input's first two bytes pick the packet size.
pub fn rtp_jpeg_roundtrip(data: &[u8]) {
    use uavstream::rtp::jpeg::{self, Depacketizer, Packetizer};
    let (max, jpeg_bytes) = match data {
        [a, b, rest @ ..] => (256 + usize::from(u16::from_le_bytes([*a, *b])) % 1300, rest),
        _ => return,
    };
    let mut de = Depacketizer::new();
    let mut junk = vec![0u8; 4096];
    let _ = de.push(jpeg_bytes, &mut WBuf::new(&mut junk));
    let Ok(frame) = jpeg::parse(jpeg_bytes) else { return };
    let mut pz = Packetizer::new(1, 0, max);
    let mut pkts = pz.push(frame, 0);
    let mut out = vec![0u8; jpeg_bytes.len() + 2048];
    let mut w = WBuf::new(&mut out);
    let mut de = Depacketizer::new();
    let mut buf = vec![0u8; max];
    let mut marker = false;
    while let Some(r) = pkts.next(&mut buf) {
        let info = r.expect("a max_packet buffer always fits a packet");
        assert!(!marker && info.len <= max);
        let (h, payload) = RtpHeader::parse(&buf[..info.len]).expect("valid RTP");
        de.push(payload, &mut w).expect("our own packets depacketize");
        marker = h.marker;
    }
    assert!(marker, "no marker bit on the last packet");
    de.finish(&mut w).expect("EOI fits");
    let len = w.len();
    let back = jpeg::parse(&out[..len]).expect("the rebuilt JPEG parses");
    assert_eq!(back.scan, frame.scan, "scan bytes differ after the round trip");
    assert_eq!(back.qtables, frame.qtables, "quantization tables differ");
    assert_eq!((back.width, back.height, back.rtp_type()), (frame.width, frame.height, frame.rtp_type()));
}

// ---------------------------------------------------------------------------------------------
// fmp4_roundtrip

/// The fMP4 reader on arbitrary bytes (a crashed recorder's file is untrusted input) never
/// panics; then write → parse round trips from structured input: an init segment gives back
/// its track, a fragment its sequence, decode time and samples byte for byte, an Annex B unit
/// its NAL units (less parameter sets, AUD, filler) with 4-byte lengths; every writer refuses
/// a short buffer with an error and never writes past its exact length.
pub fn fmp4_roundtrip(data: &[u8]) {
    // Untrusted bytes: walk them as a recorded file would be walked.
    if let Ok((_, mut rest)) = mp4read::init(data) {
        while let Ok((f, r)) = mp4read::fragment(rest) {
            let total: usize = f.samples().map(|(_, b)| b.len()).sum();
            assert_eq!(total, f.data.len(), "samples cover mdat exactly");
            assert!(r.len() < rest.len());
            rest = r;
        }
    }
    if let Ok(h) = mp4read::header(data) {
        assert!(h.header_len == 8 || h.header_len == 16);
    }
    let _ = mp4read::moof(data);

    let mut c = Cursor::new(data);
    let (width, height) = (c.u16(), c.u16());
    let sps = c.short();
    let pps = c.short();
    let cut = usize::from(c.u16());
    let track = AvcTrack { width, height, sps, pps };
    let len = fmp4::init_len(&track);
    let mut buf = vec![0xa5u8; len + 16];
    match fmp4::write_init(&track, &mut buf) {
        Ok(n) => {
            assert_eq!(n, len, "init_len");
            assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past init_len");
            let (info, rest) = mp4read::init(&buf[..n]).expect("own init segment parses");
            assert!(rest.is_empty());
            assert_eq!((info.width, info.height, info.sps, info.pps), (width, height, sps, pps));
            assert_eq!(info.timescale, fmp4::TIMESCALE);
            if cut < n {
                assert_eq!(fmp4::write_init(&track, &mut buf[..cut]), Err(InitError::Full));
            }
        }
        Err(InitError::BadParameterSets) => assert!(sps.len() < 4 || pps.is_empty()),
        Err(InitError::Full) => panic!("init segment did not fit init_len"),
    }

    let sequence = c.u32();
    let base = c.u64();
    let count = usize::from(c.u8() % 48);
    let mut samples = Vec::new();
    let mut payload = Vec::new();
    for _ in 0..count {
        let duration = c.u32();
        let size = u32::from(c.u8());
        let sync = c.bool();
        samples.push(SampleInfo { duration, size, sync });
        payload.extend((0..size).map(|i| i as u8 ^ sequence as u8));
    }
    let header = fmp4::fragment_header_len(samples.len());
    let mut frag = vec![0xa5u8; header + 8];
    let n = fmp4::write_fragment_header(sequence, base, &samples, &mut frag).expect("fragment header fits its length");
    assert_eq!(n, header);
    assert!(frag[n..].iter().all(|&b| b == 0xa5), "wrote past fragment_header_len");
    if cut < n {
        assert!(fmp4::write_fragment_header(sequence, base, &samples, &mut vec![0; cut]).is_err());
    }
    frag.truncate(n);
    frag.extend_from_slice(&payload);
    let (f, rest) = mp4read::fragment(&frag).expect("own fragment parses");
    assert!(rest.is_empty());
    assert_eq!((f.moof.sequence, f.moof.base_decode_time, f.moof.sample_count), (sequence, base, count));
    let mut at = 0;
    for ((info, bytes), want) in f.samples().zip(&samples) {
        assert_eq!(info, *want);
        assert_eq!(bytes, &payload[at..at + want.size as usize]);
        at += want.size as usize;
    }
    for cut in [0, n / 2, frag.len() - 1] {
        if cut < frag.len() {
            assert!(mp4read::fragment(&frag[..cut]).is_err(), "a cut fragment parses");
        }
    }

    let au = c.bytes(usize::MAX);
    let len = fmp4::avcc_sample_len(au);
    let mut out = vec![0xa5u8; len + 4];
    let n = fmp4::write_avcc_sample(au, &mut out).expect("sample fits avcc_sample_len");
    assert_eq!(n, len);
    let keep: Vec<&[u8]> = annex_b(au).filter(|n| !matches!(nal_unit_type(n), Some(7 | 8 | 9 | 12))).collect();
    let mut rest = &out[..n];
    for nal in keep {
        let l = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert_eq!(&rest[4..4 + l], nal);
        rest = &rest[4 + l..];
    }
    assert!(rest.is_empty());
    if len > 0 {
        assert!(fmp4::write_avcc_sample(au, &mut out[..len - 1]).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// rtcp_feedback

/// RTCP feedback (generic NACK, PLI, FIR) parsed from the raw input: every NACK's sequence
/// numbers, written again with `write_nack`, parse back to the same set;
/// `nacked_seqs` keeps its limit. Then the input drives one session's `Retransmitter` (sends,
/// NACKs, time steps, some backwards): every verdict is consistent with the ring and the
/// counters add up; RTX headers of fuzzed packets never read or write out of bounds.
pub fn rtcp_feedback(data: &[u8]) {
    walk_rtcp(data);
    for p in parse_compound(data).map_while(Result::ok) {
        match p {
            RtcpPacket::Nack { sender_ssrc, media_ssrc, items } => {
                assert!(items.seqs().count() <= 17 * items.count(), "more than 17 numbers per NACK entry");
                let mut seqs: Vec<u16> = items.seqs().collect();
                let mut buf = vec![0xa5u8; 12 + 4 * seqs.len()];
                let n = feedback::write_nack(sender_ssrc, media_ssrc, &seqs, &mut buf).expect("fits");
                let Some(Ok(RtcpPacket::Nack { items: again, media_ssrc: m, .. })) = parse_compound(&buf[..n]).next()
                else {
                    panic!("written NACK does not parse")
                };
                assert_eq!(m, media_ssrc);
                // A NACK names a set: a number repeated within one entry's reach is one bit.
                let mut back: Vec<u16> = again.seqs().collect();
                seqs.sort_unstable();
                seqs.dedup();
                back.sort_unstable();
                back.dedup();
                assert_eq!(back, seqs, "NACK round trip");
                let limit = seqs.len() / 2;
                assert!(nacked_seqs(data, media_ssrc, limit).count() <= limit);
            }
            RtcpPacket::Fir { entries, .. } => assert!(entries.count() * 8 <= data.len()),
            _ => {}
        }
    }

    let mut c = Cursor::new(data);
    let policy = RtxPolicy {
        window: match c.u16() {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        },
        frame_interval: Duration::from_micros(u64::from(c.u16()) * 10),
        rate_bytes: c.u32() % 10_000_000,
        burst_bytes: c.u32() % 1_000_000,
    };
    let mut now = u64::from(c.u32());
    let mut r = Retransmitter::new(policy, c.u16(), Instant::from_micros(now));
    let head = u64::from(c.u32()) + 1;
    let capacity = u64::from(c.u16() % 4096) + 1;
    let ring = RingPos { head, oldest: head.saturating_sub(capacity), newest_seq: c.u16() };
    let seq_at = |i: u64| ring.newest_seq.wrapping_sub((head - 1 - i) as u16);
    let packet = |i: u64| (i >= ring.oldest && i < head).then(|| (seq_at(i), 1200usize));
    while !c.is_empty() {
        match c.u8() % 4 {
            0 => {
                let first = u64::from(c.u32());
                let until = first + u64::from(c.u8());
                r.on_sent(first, until, Instant::from_micros(now));
            }
            1 => {
                let seq = c.u16();
                let rtt = c.bool().then(|| Duration::from_micros(u64::from(c.u32())));
                match r.handle_nack(seq, ring, packet, rtt, Instant::from_micros(now)) {
                    Verdict::Send { index } => {
                        assert!(index >= ring.oldest && index < head, "index {index} outside the ring");
                        assert_eq!(seq_at(index), seq, "wrong packet for the sequence number");
                    }
                    Verdict::TooOld | Verdict::OverBudget | Verdict::Unknown => {}
                }
            }
            2 => now = now.wrapping_add(u64::from(c.u16()) * 100) % (1 << 50),
            _ => now = now.saturating_sub(u64::from(c.u16())),
        }
        let k = r.counters;
        assert_eq!(k.nacked, k.retransmitted + k.too_old + k.over_budget + k.unknown, "counters: {k:?}");
    }
    let pkt = c.long();
    let mut hdr = [0xa5u8; RTX_HEADER_MAX];
    if let Some((n, offset)) = write_rtx_header(pkt, 97, 1, 2, &mut hdr) {
        assert!((14..=RTX_HEADER_MAX).contains(&n) && offset <= pkt.len());
        assert_eq!(&hdr[n - 2..n], &pkt[2..4], "OSN");
    }
}

// ---------------------------------------------------------------------------------------------
// rtsp_client

/// The publishing client's side of RTSP: whatever an upstream server sends (responses,
/// interleaved frames, garbage) is parsed without panicking, a complete response is never
/// complete at a shorter prefix, and the publisher takes any response and writes its next request
/// into a bounded buffer. The first input byte splits off a publish URL to parse too.
pub fn rtsp_client(data: &[u8]) {
    use uavstream::rtsp::client::{parse_response, Parsed, PublishUrl, Publisher, MAX_RESPONSE_HEAD};
    let (url_len, rest) = match data {
        [n, rest @ ..] => (usize::from(*n).min(rest.len()), rest),
        [] => return,
    };
    if let Ok(s) = core::str::from_utf8(&rest[..url_len]) {
        if let Ok(u) = PublishUrl::parse(s) {
            let mut text = String::new();
            core::fmt::write(&mut text, format_args!("{u}")).unwrap();
            // Logs show the URL: its authority is USER@HOST:PORT at most, never the password.
            let authority = text["rtsp://".len()..].split('/').next().unwrap_or("");
            let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
            assert_eq!(userinfo, u.user.as_str(), "{text}");
        }
    }
    let url = PublishUrl::parse("rtsp://pilot:secret@relay:8554/live").unwrap();
    let mut publisher = Publisher::new();
    let mut input = &rest[url_len..];
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        let _ = publisher.write_request(&url, b"v=0\r\n", &mut WBuf::new(&mut buf));
        match parse_response(input) {
            Ok(Parsed::Incomplete) | Err(_) => return,
            Ok(Parsed::Interleaved { consumed }) => {
                assert!(consumed >= 4 && consumed <= input.len());
                input = &input[consumed..];
            }
            Ok(Parsed::Complete { response, consumed }) => {
                assert!(consumed <= input.len() && consumed <= 2 * MAX_RESPONSE_HEAD + 8);
                for cut in 0..consumed {
                    assert!(
                        !matches!(parse_response(&input[..cut]), Ok(Parsed::Complete { .. })),
                        "a {cut}-byte prefix of a {consumed}-byte response is already complete"
                    );
                }
                let _ = publisher.handle_response(&url, &response);
                input = &input[consumed..];
            }
        }
    }
}
