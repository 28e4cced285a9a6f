//! RTSP input: the request parser, transports, paths, credentials, and the client's
//! response parser.

use super::*;

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
pub(super) fn check_prefixes_incomplete(unit: &[u8]) {
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

pub(super) fn check_request(r: &Request<'_>) {
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
pub(super) fn check_multicast_transport(header: &str) {
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

pub(super) const USERS: &[Credential<'static>] = &[
    Credential { user: "pilot", password: "s3cret", path: None },
    Credential { user: "viewer", password: "", path: Some("/live") },
];

pub(super) fn check_authorization(header: &str, method: &str, uri: &str) {
    let auth = Auth { users: USERS, secret: [7; 16] };
    let path = uri_path(uri).unwrap_or("/live");
    for now_s in [0, 1_000, u64::from(u32::MAX) + 5] {
        let _ = auth.verify(Some(header), method, path, now_s);
    }
    let _ = uavstream::rtsp::auth::DigestParams::parse(header);
}

// ---------------------------------------------------------------------------------------------
// rtsp_session

pub(super) const SPS_X264_720P: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f,
    0x23, 0xc6, 0x0c, 0xa8,
];
pub(super) const PPS_X264: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

/// Verbatim requests and Transport headers of real clients, for the request builder.
pub(super) const TRANSPORTS: &[&str] = &[
    "RTP/AVP/TCP;unicast;interleaved=0-1",         // ffmpeg -rtsp_transport tcp
    "RTP/AVP;unicast;client_port=45486-45487",     // GStreamer rtspsrc, VLC
    "RTP/AVP/UDP;unicast;client_port=50620-50621", // WinTAK
    "RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1",
    "RTP/AVP/TCP;unicast;interleaved=3-4",
    "RTP/AVP;unicast;client_port=5000",
    "RTP/AVP;unicast",
];
pub(super) const METHODS: &[&str] = &[
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
pub(super) const MAX_SLOTS: usize = 4;
pub(super) const CONNS: u64 = 4;

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
