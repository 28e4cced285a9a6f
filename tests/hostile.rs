//! Hostile input against the real binary: more than 200 malformed, truncated, oversized or
//! out-of-order requests. Each must get a 4xx/5xx or a closed connection, never a success and
//! never silence; meanwhile well-behaved clients over TCP and UDP keep streaming without losing
//! a single packet (RTP sequence numbers checked).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_udp_pair, rtp_seq, Daemon, RtspClient};

/// How a case is delivered.
enum Delivery {
    /// One write.
    Raw(Vec<u8>),
    /// One byte per write (a valid request: must get its normal answer).
    OneBytePerWrite(Vec<u8>, u16),
    /// A request head that never ends (slowloris).
    Slowloris(Vec<u8>),
    /// A real session first (SETUP, maybe PLAY), then `{SESSION}` substituted into the bytes.
    AfterSetup { play: bool, then: String, expect: u16 },
}

struct Case {
    name: String,
    delivery: Delivery,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn req(method: &str, uri: &str, headers: &str) -> Vec<u8> {
    format!("{method} {uri} RTSP/1.0\r\n{headers}\r\n").into_bytes()
}

fn cases(url: &str) -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: String, delivery: Delivery| v.push(Case { name, delivery });
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    // 1. Garbage bytes of many sizes (40).
    for i in 0..40 {
        let n = 1 + (rng.next() % 3000) as usize;
        let mut b = rng.bytes(n);
        if i % 4 == 0 {
            b.extend_from_slice(b"\r\n\r\n");
        }
        add(format!("garbage {n} bytes"), Delivery::Raw(b));
    }
    // 2. Truncated valid requests followed by a garbage line (15).
    let describe = req("DESCRIBE", url, "CSeq: 2\r\nAccept: application/sdp\r\n");
    for i in 0..15 {
        let cut = 1 + (rng.next() as usize % (describe.len() - 6));
        let mut b = describe[..cut].to_vec();
        b.extend_from_slice(b"\r\n\x00\x01garbage line\r\n\r\n");
        add(format!("truncated DESCRIBE at {cut} ({i})"), Delivery::Raw(b));
    }
    // 3. Missing CSeq, every method (11).
    for m in [
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
    ] {
        add(format!("{m} without CSeq"), Delivery::Raw(req(m, url, "User-Agent: x\r\n")));
    }
    // 4. Content-Length abuse (8).
    for cl in ["99999999", "-5", "abc", "4097", "1e3", "", "18446744073709551616", "10\r\nContent-Length: 5000"] {
        add(
            format!("Content-Length {cl:?}"),
            Delivery::Raw(req("SET_PARAMETER", url, &format!("CSeq: 1\r\nContent-Length: {cl}\r\n"))),
        );
    }
    // 5. Oversized header lines and too many headers (5).
    for n in [9000, 20000, 65000] {
        add(
            format!("header line of {n} bytes"),
            Delivery::Raw(req("OPTIONS", url, &format!("CSeq: 1\r\nX-Long: {}\r\n", "a".repeat(n)))),
        );
    }
    for n in [33, 200] {
        add(
            format!("{n} headers"),
            Delivery::Raw(req("OPTIONS", url, &format!("CSeq: 1\r\n{}", "X: y\r\n".repeat(n)))),
        );
    }
    // 6. Bad request lines and versions (20).
    let lines: [&[u8]; 20] = [
        b"DESCRIBE\r\n\r\n",
        b"DESCRIBE rtsp://h/live\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live HTTP/1.1\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/2.0\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.1\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/10.0\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.0 extra\r\nCSeq: 1\r\n\r\n",
        b" DESCRIBE rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"DESC\x00RIBE rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/li\x01ve RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/\xff\xfe RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE  RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"D(E)SCRIBE rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.0\r\nCSeq 1\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.0\r\n: novalue\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.0\r\n\tfolded: x\r\n\r\n",
        b"DESCRIBE rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\nBad Header: x\r\n\r\n",
    ];
    for l in lines {
        add(format!("bad line {:?}", String::from_utf8_lossy(&l[..l.len().min(30)])), Delivery::Raw(l.to_vec()));
    }
    // 7. Invalid Transport headers (20).
    let transports = [
        "",
        "RTP/AVP",
        "RTP/AVP;unicast",
        "RTP/AVP;unicast;client_port=",
        "RTP/AVP;unicast;client_port=a-b",
        "RTP/AVP;unicast;client_port=0-1",
        "RTP/AVP;unicast;client_port=65535",
        "RTP/AVP;multicast", // 461: this daemon has no --multicast-group (tests/multicast.rs has one)
        "RTP/AVP/TCP;interleaved=1-1",
        "RTP/AVP/TCP;interleaved=300-301",
        "RTP/AVP/TCP;interleaved=x",
        "RTP/AVP/TCP;interleaved=255",
        "RAW/RAW/UDP;unicast;client_port=5000-5001",
        "RTP/SAVP;unicast;client_port=5000-5001",
        "RTP/AVPF;unicast;client_port=x-5001", // RTP/AVPF is served (NACK, RTX): a bad port still is not
        ";;;",
        ",,,",
        "RTP/AVP/SCTP;unicast",
        "rtp/avp/xyz",
        "RTP/AVP;unicast;client_port=70000-70001",
    ];
    for t in transports {
        add(
            format!("Transport {t:?}"),
            Delivery::Raw(req("SETUP", &format!("{url}/trackID=0"), &format!("CSeq: 3\r\nTransport: {t}\r\n"))),
        );
    }
    // 8. Unknown session ids (10) and PLAY/PAUSE/TEARDOWN without SETUP (5).
    for i in 0..10 {
        let id = format!("{:016X}", rng.next());
        let m = ["PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"][i % 5];
        add(format!("{m} unknown session {id}"), Delivery::Raw(req(m, url, &format!("CSeq: 4\r\nSession: {id}\r\n"))));
    }
    for m in ["PLAY", "PAUSE", "TEARDOWN", "PLAY", "PAUSE"] {
        add(format!("{m} without SETUP"), Delivery::Raw(req(m, url, "CSeq: 4\r\n")));
    }
    // 9. Out of order on a real session (8).
    let track = format!("{url}/trackID=0");
    let sequences = [
        (true, format!("SETUP {track} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\nTransport: RTP/AVP/TCP;interleaved=2-3\r\n\r\n"), 455),
        (true, format!("SETUP {track} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\nTransport: RTP/AVP;unicast;client_port=6000-6001\r\n\r\n"), 455),
        (true, format!("SETUP {url}/other RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\nTransport: RTP/AVP/TCP\r\n\r\n"), 404),
        (false, "PLAY rtsp://127.0.0.1/elsewhere RTSP/1.0\r\nCSeq: 9\r\nSession: {SESSION}\r\n\r\n".to_owned(), 404),
        (false, format!("SETUP {track} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\n\r\n"), 461),
        (false, format!("PLAY {url} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}x\r\n\r\n"), 454),
        (true, format!("ANNOUNCE {url} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\n\r\n"), 405),
        (true, format!("RECORD {url} RTSP/1.0\r\nCSeq: 9\r\nSession: {{SESSION}}\r\n\r\n"), 405),
    ];
    for (play, then, expect) in sequences {
        add(
            format!("after SETUP{}: {}", if play { "+PLAY" } else { "" }, &then[..then.find(' ').unwrap()]),
            Delivery::AfterSetup { play, then, expect },
        );
    }
    // 10. Binary interleaved frames from a client with no interleaved session (20).
    for i in 0..20 {
        let ch = (rng.next() % 256) as u8;
        let len = if i % 5 == 0 { 60000 } else { (rng.next() % 1500) as usize };
        let mut b = vec![b'$', ch, (len >> 8) as u8, len as u8];
        b.extend(rng.bytes(len.min(4000)));
        add(format!("interleaved frame channel {ch} len {len}"), Delivery::Raw(b));
    }
    // 11. Unknown methods (10), unsupported Require (2), SET_PARAMETER with a body (3).
    for m in ["FOO", "GET", "POST", "PLAYX", "SETUP2", "DELETE", "PUT", "OPTIONS2", "BREW", "M-SEARCH"] {
        add(format!("method {m}"), Delivery::Raw(req(m, url, "CSeq: 5\r\n")));
    }
    for r in ["play.basic", "com.example.x"] {
        add(format!("Require {r}"), Delivery::Raw(req("OPTIONS", url, &format!("CSeq: 5\r\nRequire: {r}\r\n"))));
    }
    for body in ["a: b\r\n", "x", "\x00\x01\x02"] {
        add(
            format!("SET_PARAMETER body {body:?}"),
            Delivery::Raw(req(
                "SET_PARAMETER",
                url,
                &format!("CSeq: 6\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
            )),
        );
    }
    // 12. Bad URIs and paths (10).
    for u in [
        "rtsp://h/",
        "rtsp://h/live2",
        "rtsp://h/LIVE",
        "http://h/live",
        "rtsp://h/live/../etc/passwd",
        "*",
        "rtsp://h/live/trackID=1",
        "live",
        "rtsp://h/live%00",
        "rtsp://",
    ] {
        add(format!("DESCRIBE {u}"), Delivery::Raw(req("DESCRIBE", u, "CSeq: 7\r\n")));
    }
    // 13. Non-UTF-8 and control bytes in headers (5).
    for h in [
        &b"CSeq: 1\r\nX: \xff\xfe\r\n"[..],
        b"CSeq: \x80\r\n",
        b"CSeq: 1\r\n\xc3\x28: v\r\n",
        b"CSeq: 1\r\nX\x00: v\r\n",
        b"CSeq: 1\r\nSession: \xe2\x82\r\n",
    ] {
        let mut b = format!("OPTIONS {url} RTSP/1.0\r\n").into_bytes();
        b.extend_from_slice(h);
        b.extend_from_slice(b"\r\n");
        add(format!("non-UTF-8 header {:?}", String::from_utf8_lossy(h)), Delivery::Raw(b));
    }
    // 14. Valid requests split one byte per write (10): must get their normal answer.
    for (m, expect) in
        [("OPTIONS", 200), ("DESCRIBE", 200), ("GET_PARAMETER", 200), ("OPTIONS", 200), ("DESCRIBE", 200)]
    {
        for ua in ["LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)", "Lavf59.27.100"] {
            add(
                format!("{m} one byte per write ({ua})"),
                Delivery::OneBytePerWrite(req(m, url, &format!("CSeq: 8\r\nUser-Agent: {ua}\r\n")), expect),
            );
        }
    }
    // 15. Slowloris: a head that never ends (3).
    for n in [1, 50, 500] {
        let mut b = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n").into_bytes();
        b.extend(std::iter::repeat_n(b'a', n));
        add(format!("slowloris after {n} bytes"), Delivery::Slowloris(b));
    }
    v
}

/// What the server did with a case.
#[derive(Debug)]
enum Outcome {
    Status(u16),
    Closed,
    Silent,
}

fn read_outcome(s: &mut TcpStream, limit: Duration) -> Outcome {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while t.elapsed() < limit {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                if buf.starts_with(b"RTSP/1.0 ") && buf.len() >= 12 {
                    return Outcome::Status(String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0));
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    if t.elapsed() >= limit {
        Outcome::Silent
    } else {
        Outcome::Closed
    }
}

fn run_case(url: &str, port: u16, case: &Case) -> Outcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    match &case.delivery {
        Delivery::Raw(b) => {
            // The server may close mid-write on oversized input: that is a valid outcome.
            let _ = s.write_all(b);
            read_outcome(&mut s, Duration::from_secs(5))
        }
        Delivery::OneBytePerWrite(b, _) => {
            for byte in b {
                s.write_all(std::slice::from_ref(byte)).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
            read_outcome(&mut s, Duration::from_secs(5))
        }
        Delivery::Slowloris(b) => {
            let _ = s.write_all(b);
            // --request-timeout is 2 s: expect 408 or a close well within 6 s.
            read_outcome(&mut s, Duration::from_secs(6))
        }
        Delivery::AfterSetup { play, then, .. } => {
            drop(s);
            let mut c = RtspClient::connect(url);
            let r = c.request(
                "SETUP",
                &format!("{url}/trackID=0"),
                &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
            );
            assert_eq!(r.status, 200, "{}", case.name);
            let session = r.session();
            if *play {
                assert_eq!(c.request("PLAY", url, &[("Session", &session)]).status, 200);
            }
            c.send_raw(then.replace("{SESSION}", &session).as_bytes());
            match c.read_response() {
                Some(r) => Outcome::Status(r.status),
                None => Outcome::Closed,
            }
        }
    }
}

#[test]
fn two_hundred_hostile_requests_while_good_clients_lose_nothing() {
    let d = Daemon::start_with_env(
        &["--width", "160", "--height", "120", "--request-timeout", "2", "--max-clients", "8"],
        &[("RUST_LOG", "uavstream=warn")],
    );
    let url = d.url();
    let cases = cases(&url);
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    // Good clients: one over TCP, one over UDP, recording RTP sequence numbers throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let tcp_seqs = {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = RtspClient::connect(&url);
            c.play_tcp();
            let mut seqs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let f = c.next_frame().expect("good TCP client kept receiving");
                if f.channel == 0 {
                    seqs.push(rtp_seq(&f.data));
                }
            }
            seqs
        })
    };
    let udp_seqs = {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (rtp, _rtcp, port) = client_udp_pair();
            let mut c = RtspClient::connect(&url);
            let s = c.request(
                "SETUP",
                &format!("{url}/trackID=0"),
                &[("Transport", &format!("RTP/AVP;unicast;client_port={port}-{}", port + 1))],
            );
            let session = s.session();
            assert_eq!(c.request("PLAY", &url, &[("Session", &session)]).status, 200);
            let mut seqs = Vec::new();
            let mut buf = [0u8; 2048];
            let mut last_keepalive = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let (n, _) = rtp.recv_from(&mut buf).expect("good UDP client kept receiving");
                seqs.push(rtp_seq(&buf[..n]));
                if last_keepalive.elapsed() > Duration::from_secs(5) {
                    assert_eq!(c.request("GET_PARAMETER", &url, &[("Session", &session)]).status, 200);
                    last_keepalive = Instant::now();
                }
            }
            seqs
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // Run the cases, eight at a time.
    let mut failures = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for chunk in cases.chunks(8) {
        let results: Vec<(String, Outcome, Option<u16>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|case| {
                    let url = url.clone();
                    scope.spawn(move || {
                        let expect = match &case.delivery {
                            Delivery::OneBytePerWrite(_, e) => Some(*e),
                            Delivery::AfterSetup { expect, .. } => Some(*expect),
                            _ => None,
                        };
                        (case.name.clone(), run_case(&url, d.port, case), expect)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, outcome, expect) in results {
            let ok = match (&outcome, expect) {
                (Outcome::Status(s), Some(e)) => *s == e,
                (Outcome::Status(s), None) => (400..600).contains(s),
                (Outcome::Closed, None) => true,
                _ => false,
            };
            let key = match &outcome {
                Outcome::Status(s) => format!("{s}"),
                other => format!("{other:?}"),
            };
            *outcomes.entry(key).or_default() += 1;
            if !ok {
                failures.push(format!("{name}: {outcome:?} (expected {expect:?})"));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let tcp = tcp_seqs.join().unwrap();
    let udp = udp_seqs.join().unwrap();
    eprintln!(
        "figure: {} hostile cases, outcomes {outcomes:?}; good TCP client got {} packets, UDP {}",
        cases.len(),
        tcp.len(),
        udp.len()
    );
    assert!(failures.is_empty(), "{} cases misbehaved:\n{}", failures.len(), failures.join("\n"));
    for (name, seqs) in [("TCP", &tcp), ("UDP", &udp)] {
        assert!(seqs.len() > 100, "{name}: only {} packets", seqs.len());
        let gaps: Vec<_> = seqs.windows(2).filter(|w| w[1] != w[0].wrapping_add(1)).collect();
        assert!(gaps.is_empty(), "{name} client lost packets: {gaps:?}");
    }
    // The daemon is still healthy: a new client can play.
    let mut c = RtspClient::connect(&url);
    c.play_tcp();
    assert!(c.next_frame().is_some());
}
