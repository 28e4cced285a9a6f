//! RTSP authentication against real clients: ffmpeg and GStreamer with `rtsp://user:pass@…`
//! play; wrong or missing credentials get 401 and never a single RTP packet.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{client_udp_pair, run_with_timeout, Daemon, RtspClient};

fn daemon() -> Daemon {
    Daemon::start_with_env(&["--width", "320", "--height", "240"], &[("UAVSTREAM_AUTH", "pilot:s3cr3t,ground:station")])
}

fn authed(d: &Daemon, user: &str, pass: &str) -> String {
    format!("rtsp://{user}:{pass}@127.0.0.1:{}/live", d.port)
}

fn ffmpeg_frames(url: &str, transport: &str) -> (usize, String) {
    let (frames, _, stderr) = common::ffmpeg_decode(url, transport, 30);
    (frames, stderr)
}

#[test]
fn ffmpeg_with_credentials_plays_and_without_gets_401() {
    let d = daemon();
    for transport in ["tcp", "udp"] {
        let (frames, err) = ffmpeg_frames(&authed(&d, "pilot", "s3cr3t"), transport);
        assert_eq!(frames, 30, "{transport}: {err}");
    }
    let (frames, err) = ffmpeg_frames(&authed(&d, "pilot", "wrong"), "tcp");
    assert_eq!(frames, 0);
    assert!(err.contains("401"), "{err}");
    let (frames, err) = ffmpeg_frames(&d.url(), "tcp");
    assert_eq!(frames, 0);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn gstreamer_with_credentials_plays() {
    let mut d = daemon();
    let url = d.url();
    common::gst_rtspsrc_decode_from(&mut d, &url, &["user-id=ground", "user-pw=station", "protocols=tcp"], 30);
    // And with the credentials in the URL, as QGroundControl users write them.
    let url = authed(&d, "pilot", "s3cr3t");
    common::gst_rtspsrc_decode_from(&mut d, &url, &["protocols=tcp"], 30);
}

#[test]
fn wrong_or_missing_credentials_never_get_an_rtp_packet() {
    let d = daemon();
    let (rtp, _rtcp, port) = client_udp_pair();
    rtp.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
    let cases: [Option<&str>; 5] = [
        None,
        Some("Basic cGlsb3Q6d3Jvbmc="), // pilot:wrong
        Some("Basic bm9ib2R5OnMzY3IzdA=="), // nobody:s3cr3t
        Some("Digest username=\"pilot\", realm=\"uavstream\", nonce=\"00000000aaaaaaaaaaaaaaaa\", uri=\"rtsp://127.0.0.1/live\", response=\"00000000000000000000000000000000\""),
        Some("Negotiate abc"),
    ];
    for auth in cases {
        let mut c = RtspClient::connect(&d.url());
        let url = c.url.clone();
        let mut headers = vec![("Transport", transport.as_str())];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let r = c.request("SETUP", &format!("{url}/trackID=0"), &headers);
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.header("WWW-Authenticate").is_some());
        // PLAY with a made-up session is refused too.
        let mut headers = vec![("Session", "0123456789ABCDEF")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        assert_eq!(c.request("PLAY", &url, &headers).status, 401);
        assert!(c.frames.is_empty());
    }
    let mut buf = [0u8; 2048];
    assert!(rtp.recv_from(&mut buf).is_err(), "an RTP packet reached an unauthenticated client");
}

#[test]
fn credentials_on_the_kernel_command_line_are_refused() {
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_uavstream"))
            .env("UAVSTREAM_PROC_CMDLINE", "quiet uavstream.auth=pilot:s3cr3t"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uavstream.auth") && err.contains("refused"), "{err}");
    assert!(!err.contains("s3cr3t"), "the password leaked into the message: {err}");
}

/// `curl` against the daemon's HTTP port: (status, Content-Type, body).
fn curl(d: &Daemon, path: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    let url = format!("http://127.0.0.1:{}{path}", d.http_port);
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-s", "--max-time", "20", "-w", "\n%{http_code} %{content_type}"])
            .args(args)
            .arg(&url),
        Duration::from_secs(30),
    );
    let text = out.stdout;
    let split = text.iter().rposition(|&b| b == b'\n').expect("curl's -w line");
    let tail = String::from_utf8_lossy(&text[split + 1..]).into_owned();
    let (code, ctype) = tail.split_once(' ').unwrap_or((&tail, ""));
    (code.parse().unwrap_or(0), ctype.to_owned(), text[..split].to_vec())
}

#[test]
fn http_pictures_and_page_need_the_same_credentials_as_rtsp() {
    let d = daemon();
    for path in ["/live.jpg", "/live.mjpeg", "/"] {
        let (code, _, _) = curl(&d, path, &["--max-time", "3"]);
        assert_eq!(code, 401, "{path} without credentials");
    }
    // The challenge offers Digest and Basic, like RTSP's.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /live.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut head = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut head);
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert!(head.contains("WWW-Authenticate: Digest realm=\"uavstream\", nonce=\""), "{head}");
    assert!(head.contains("WWW-Authenticate: Basic realm=\"uavstream\""), "{head}");
    // Right credentials, either scheme: the JPEG.
    for (scheme, user) in [("--digest", "pilot:s3cr3t"), ("--basic", "ground:station")] {
        let (code, ctype, body) = curl(&d, "/live.jpg", &[scheme, "-u", user]);
        assert_eq!((code, ctype.as_str()), (200, "image/jpeg"), "{scheme} {user}");
        assert!(body.starts_with(&[0xff, 0xd8]) && body.ends_with(&[0xff, 0xd9]), "{scheme}: not a JPEG");
    }
    // Wrong password, unknown user: refused, and no picture.
    for (scheme, user) in [("--digest", "pilot:wrong"), ("--basic", "pilot:wrong"), ("--basic", "nobody:s3cr3t")] {
        let (code, _, body) = curl(&d, "/live.jpg", &[scheme, "-u", user]);
        assert_eq!(code, 401, "{scheme} {user}");
        assert!(!body.starts_with(&[0xff, 0xd8]), "{scheme} {user} got a picture");
    }
}
