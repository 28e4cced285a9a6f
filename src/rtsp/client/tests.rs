use super::*;
use crate::rtsp::auth::{Auth, Credential, Verdict};

fn url(s: &str) -> PublishUrl {
    PublishUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn text(buf: &[u8]) -> &str {
    core::str::from_utf8(buf).unwrap()
}

#[test]
fn urls_parse_with_and_without_credentials() {
    let u = url("rtsp://pilot:p%40ss:w@relay.example:8554/drone/cam1");
    assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("relay.example", 8554, "/drone/cam1"));
    assert_eq!((u.user.as_str(), u.password.as_str()), ("pilot", "p@ss:w"));
    let mut shown = heapless::String::<128>::new();
    core::fmt::write(&mut shown, format_args!("{u}")).unwrap();
    assert_eq!(shown, "rtsp://pilot@relay.example:8554/drone/cam1", "never the password");
    let u = url("rtsp://[fd00::1]/x");
    assert_eq!((u.host.as_str(), u.port), ("fd00::1", 554));
    let mut uri = heapless::String::<64>::new();
    u.write_uri(&mut uri).unwrap();
    assert_eq!(uri, "rtsp://[fd00::1]:554/x");
    assert_eq!(url("rtsp://10.0.0.2:8554").path, "/");
    for bad in [
        "http://x/y",
        "rtsp://",
        "rtsp://:8554/x",
        "rtsp://h:0/x",
        "rtsp://h:99999/x",
        "rtsp://h/a b",
        "rtsp://u:%zz@h/x",
        "rtsp://h o/x",
    ] {
        assert!(PublishUrl::parse(bad).is_err(), "{bad}");
    }
}

/// ffmpeg 5.1 in listen mode (`-rtsp_flags listen`), its answers to uavstream's requests.
const FFMPEG_SETUP: &[u8] = b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: Lavf59.27.100\r\nTransport: RTP/AVP/TCP;unicast;mode=record;interleaved=0-1\r\nSession: 6DB8EB5F8D1E2B9A\r\n\r\n";

#[test]
fn responses_parse_at_every_split_point_and_interleaved_frames_are_skipped() {
    let mut input = [0u8; 256];
    input[..4].copy_from_slice(&[b'$', 1, 0, 3]);
    input[4..7].copy_from_slice(b"abc");
    input[7..7 + FFMPEG_SETUP.len()].copy_from_slice(FFMPEG_SETUP);
    let all = &input[..7 + FFMPEG_SETUP.len()];
    for cut in 0..4 {
        assert_eq!(parse_response(&all[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
    }
    assert_eq!(parse_response(all), Ok(Parsed::Interleaved { consumed: 7 }));
    let rest = &all[7..];
    for cut in 0..rest.len() {
        assert_eq!(parse_response(&rest[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
    }
    let Ok(Parsed::Complete { response, consumed }) = parse_response(rest) else { panic!() };
    assert_eq!(consumed, rest.len());
    assert_eq!((response.status, response.cseq, response.session), (200, Some(3), Some("6DB8EB5F8D1E2B9A")));
    // A body is consumed with its head.
    let with_body = b"RTSP/1.0 454 Session Not Found\r\nCSeq: 9\r\nContent-Length: 4\r\n\r\nnopeRTSP";
    let Ok(Parsed::Complete { response, consumed }) = parse_response(with_body) else { panic!() };
    assert_eq!((response.status, consumed), (454, with_body.len() - 4));
    for bad in [
        &b"HTTP/1.1 200 OK\r\n\r\n"[..],
        b"RTSP/1.0 2000 OK\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nno colon\r\n\r\n",
        b"GARBAGE",
        b"RTSP/1.0 200 OK\r\nContent-Length: 99999999\r\n\r\n",
    ] {
        assert!(parse_response(bad).is_err(), "{:?}", core::str::from_utf8(bad));
    }
    assert_eq!(parse_response(&[b'R'; MAX_RESPONSE_HEAD]), Err(ResponseError::TooLarge));
    assert_eq!(parse_response(b"RTSP/1."), Ok(Parsed::Incomplete));
}

/// Feeds a publisher the answers of a server that wants `auth` (or none).
fn exchange(
    u: &PublishUrl,
    server: Option<&Auth<'_>>,
) -> (Result<Progress, PublishError>, heapless::Vec<heapless::String<16>, 12>) {
    let mut p = Publisher::new();
    let mut methods = heapless::Vec::new();
    let mut buf = [0xa5u8; 2048];
    for _ in 0..10 {
        let mut w = WBuf::new(&mut buf);
        p.write_request(u, b"v=0\r\n", &mut w).unwrap();
        let req = text(w.written());
        let method = req.split(' ').next().unwrap();
        let _ = methods.push(heapless::String::try_from(method).unwrap());
        let cseq: u32 = req.split("CSeq: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        let mut uri = heapless::String::<128>::new();
        u.write_uri(&mut uri).unwrap();
        let authorized = match server {
            None => true,
            Some(a) => {
                let h = req.lines().find_map(|l| l.strip_prefix("Authorization: "));
                matches!(a.verify(h, method, &u.path, 0), Verdict::Allowed { .. })
            }
        };
        let mut resp = heapless::String::<512>::new();
        if !authorized {
            let mut chal = [0u8; 400];
            let mut cw = WBuf::new(&mut chal);
            server.unwrap().write_challenge(&mut cw, 0, false).unwrap();
            core::fmt::write(
                &mut resp,
                format_args!("RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n{}\r\n", text(cw.written())),
            )
            .unwrap();
        } else {
            let session = if method == "SETUP" { "Session: 12345678;timeout=60\r\n" } else { "" };
            core::fmt::write(&mut resp, format_args!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{session}\r\n")).unwrap();
        }
        let Ok(Parsed::Complete { response, .. }) = parse_response(resp.as_bytes()) else { panic!("{resp}") };
        match p.handle_response(u, &response) {
            Ok(Progress::Send) => {}
            other => return (other, methods),
        }
    }
    (Err(PublishError::OutOfOrder), methods)
}

#[test]
fn a_publisher_walks_announce_setup_record_with_digest_or_basic_or_nothing() {
    let users = [Credential { user: "pilot", password: "s3cr3t", path: None }];
    let auth = Auth { users: &users, secret: [3; 16] };
    let (result, methods) = exchange(&url("rtsp://relay:8554/live"), None);
    assert_eq!(result, Ok(Progress::Recording));
    assert_eq!(methods, ["OPTIONS", "ANNOUNCE", "SETUP", "RECORD"]);
    // Our own server's Digest (and Basic) challenge is answered, and its verifier accepts it.
    let (result, methods) = exchange(&url("rtsp://pilot:s3cr3t@relay:8554/live"), Some(&auth));
    assert_eq!(result, Ok(Progress::Recording));
    assert_eq!(
        methods,
        ["OPTIONS", "OPTIONS", "ANNOUNCE", "SETUP", "RECORD"],
        "one 401, then credentials on every request"
    );
    let (result, _) = exchange(&url("rtsp://pilot:wrong@relay:8554/live"), Some(&auth));
    assert_eq!(result, Err(PublishError::Unauthorized));
    let (result, _) = exchange(&url("rtsp://relay:8554/live"), Some(&auth));
    assert_eq!(result, Err(PublishError::Unauthorized), "no credentials to offer");
}

#[test]
fn requests_are_what_servers_expect() {
    let u = url("rtsp://relay:8554/cam");
    let mut p = Publisher::new();
    let mut buf = [0xa5u8; 1024];
    let ok = |cseq: u32, extra: &str| {
        let mut s = heapless::String::<128>::new();
        core::fmt::write(&mut s, format_args!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n")).unwrap();
        s
    };
    let mut expect = |p: &mut Publisher, start: &str, has: &[&str]| {
        let mut w = WBuf::new(&mut buf);
        p.write_request(&u, b"v=0\r\nm=video 0 RTP/AVP 96\r\n", &mut w).unwrap();
        let req = text(w.written());
        assert!(req.starts_with(start), "{req}");
        for h in has {
            assert!(req.contains(h), "{h} in {req}");
        }
    };
    expect(&mut p, "OPTIONS rtsp://relay:8554/cam RTSP/1.0\r\nCSeq: 1\r\n", &[]);
    let r = ok(1, "");
    let Ok(Parsed::Complete { response, .. }) = parse_response(r.as_bytes()) else { panic!() };
    assert_eq!(p.handle_response(&u, &response), Ok(Progress::Send));
    expect(
        &mut p,
        "ANNOUNCE rtsp://relay:8554/cam RTSP/1.0\r\n",
        &["Content-Type: application/sdp\r\nContent-Length: 27\r\n\r\nv=0\r\nm=video 0 RTP/AVP 96\r\n"],
    );
    let r = ok(2, "");
    let Ok(Parsed::Complete { response, .. }) = parse_response(r.as_bytes()) else { panic!() };
    p.handle_response(&u, &response).unwrap();
    expect(
        &mut p,
        "SETUP rtsp://relay:8554/cam/trackID=0 RTSP/1.0\r\n",
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"],
    );
    let r = ok(3, "");
    let Ok(Parsed::Complete { response, .. }) = parse_response(r.as_bytes()) else { panic!() };
    assert_eq!(p.handle_response(&u, &response), Err(PublishError::NoSession));
    let r = b"RTSP/1.0 406 Not Acceptable\r\nCSeq: 4\r\n\r\n";
    let mut p2 = Publisher::new();
    let mut w = WBuf::new(&mut buf);
    p2.write_request(&u, b"", &mut w).unwrap();
    let first = ok(1, "");
    let Ok(Parsed::Complete { response, .. }) = parse_response(first.as_bytes()) else { panic!() };
    p2.handle_response(&u, &response).unwrap();
    let mut w = WBuf::new(&mut buf);
    p2.write_request(&u, b"", &mut w).unwrap();
    let Ok(Parsed::Complete { response, .. }) = parse_response(&r[..]) else { panic!() };
    assert_eq!(p2.handle_response(&u, &response), Err(PublishError::OutOfOrder), "CSeq 4 answers no request");
}
