//! Publishing (`publish=rtsp://…`) to a real RTSP server that accepts RECORD: ffmpeg's RTSP
//! server in listen mode decodes what uavstream announces and records; when it goes away and
//! comes back, uavstream reconnects and it decodes again from an IDR; an upstream that is dead
//! or takes nothing never disturbs a local RTSP client.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, RtspClient};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// ffmpeg as an RTSP server in listen mode, decoding `frames` frames of what is published to it.
fn ffmpeg_listen(port: u16, frames: usize) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "info", "-rtsp_flags", "listen", "-timeout", "60"])
        .arg("-i")
        .arg(format!("rtsp://127.0.0.1:{port}/up"))
        .args(["-frames:v", &frames.to_string(), "-f", "null", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

/// Waits for ffmpeg to finish; its stderr, and the number of frames it decoded.
fn ffmpeg_result(child: Child, d: &Daemon) -> (String, usize) {
    let out = common::run_with_timeout_child(child, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg failed: {text}\nserver:\n{}", d.log());
    let frames = text
        .rsplit("frame=")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (text, frames)
}

/// Whether a decoder complained: what starting mid-GOP or a broken stream looks like.
fn decode_errors(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["error", "non-existing pps", "no frame!", "corrupt", "missing"].iter().any(|e| l.contains(e))
        })
        .collect()
}

#[test]
fn ffmpeg_listen_receives_decodable_h264_and_again_after_it_restarts() {
    let port = free_port();
    let ff = ffmpeg_listen(port, 60);
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("rtsp://127.0.0.1:{port}/up");
    let d = Daemon::start(&["--width", "640", "--height", "360", "--publish", &url]);
    let (text, frames) = ffmpeg_result(ff, &d);
    assert!(frames >= 60, "ffmpeg decoded {frames} frames:\n{text}\nserver:\n{}", d.log());
    assert!(text.contains("h264 (Constrained Baseline)"), "{text}");
    assert!(decode_errors(&text).is_empty(), "decoder errors: {:?}", decode_errors(&text));
    // ffmpeg has gone (the upstream died); a new one on the same port gets the stream again,
    // from an IDR (a mid-GOP start would show as decoder errors).
    let ff = ffmpeg_listen(port, 60);
    let (text, frames) = ffmpeg_result(ff, &d);
    assert!(frames >= 60, "after the restart ffmpeg decoded {frames} frames:\n{text}\nserver:\n{}", d.log());
    assert!(decode_errors(&text).is_empty(), "decoder errors after the restart: {:?}", decode_errors(&text));
    assert!(d.log().matches("recording (RTP over TCP").count() >= 2, "{}", d.log());
}

#[test]
fn gst_rtsp_server_in_record_mode_decodes_the_published_stream() {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gst_record_server.py");
    let server = Command::new("/usr/bin/python3")
        .args([script, &port.to_string(), "60", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with gi (python3-gi, gir1.2-gst-rtsp-server-1.0)");
    std::thread::sleep(Duration::from_millis(1500));
    let url = format!("rtsp://127.0.0.1:{port}/up");
    let d = Daemon::start(&["--width", "640", "--height", "360", "--publish", &url]);
    let out = common::run_with_timeout_child(server, Duration::from_secs(60));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("decoded 60\n"), "gst-rtsp-server: {text}\nserver:\n{}", d.log());
}

/// A local RTSP client over TCP gets every packet in order for `secs` seconds; the count.
fn local_client_sees_no_loss(d: &Daemon, secs: u64) -> usize {
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    let (mut last, mut n) = (None::<u16>, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        let f = c.next_frame().expect("RTP after PLAY");
        if f.channel != 0 {
            continue;
        }
        let seq = common::rtp_seq(&f.data);
        if let Some(l) = last {
            assert_eq!(seq, l.wrapping_add(1), "a local packet was lost while the upstream was bad:\n{}", d.log());
        }
        last = Some(seq);
        n += 1;
    }
    n
}

#[test]
fn a_dead_or_stuck_upstream_never_disturbs_a_local_rtsp_client() {
    // Dead: nothing listens there (connection refused, retried with backoff).
    let dead = format!("rtsp://127.0.0.1:{}/up", free_port());
    let d = Daemon::start(&["--width", "640", "--height", "360", "--publish", &dead]);
    let n = local_client_sees_no_loss(&d, 3);
    assert!(n > 100, "{n} packets in 3 s");
    assert!(d.log().contains("retrying in"), "{}", d.log());
    drop(d);

    // Stuck: a server that accepts the connection and never reads or answers (its socket
    // buffers fill). The handshake times out and is retried; local clients are untouched.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rtsp://127.0.0.1:{}/up", stuck.local_addr().unwrap().port());
    let d = Daemon::start(&["--width", "640", "--height", "360", "--publish", &url]);
    let n = local_client_sees_no_loss(&d, 7);
    assert!(n > 200, "{n} packets in 7 s");
    assert!(d.log().contains("no answer within"), "{}", d.log());
    drop(stuck);

    // Slow: a server that accepts RECORD and then takes nothing more. Its TCP window and our
    // send buffer fill; what does not fit is dropped (counted), never queued.
    let slow = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small window, as over a thin radio link (inherited by the accepted socket).
    nix::sys::socket::setsockopt(&slow, nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
    let url = format!("rtsp://127.0.0.1:{}/up", slow.local_addr().unwrap().port());
    let server = std::thread::spawn(move || {
        let (s, _) = slow.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        loop {
            let (mut cseq, mut len, mut method) = (String::new(), 0usize, String::new());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_owned();
                line.clear();
                if l.is_empty() {
                    break;
                }
                if method.is_empty() {
                    method = l.split(' ').next().unwrap_or("").to_owned();
                } else if let Some(v) = l.strip_prefix("CSeq: ") {
                    cseq = v.to_owned();
                } else if let Some(v) = l.strip_prefix("Content-Length: ") {
                    len = v.parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let session = if method == "SETUP" { "Session: 1234\r\n" } else { "" };
            write!(w, "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{session}\r\n").unwrap();
            if method == "RECORD" {
                // Keep the connection open, read nothing more.
                std::thread::sleep(Duration::from_secs(12));
                return;
            }
        }
    });
    let d = Daemon::start(&["--width", "1280", "--height", "720", "--bitrate", "4000000", "--publish", &url]);
    let n = local_client_sees_no_loss(&d, 8);
    assert!(n > 300, "{n} packets in 8 s");
    let (code, body) = http_get_status(d.http_port);
    assert_eq!(code, 200);
    assert!(body.contains("\"state\":\"recording\""), "{body}");
    let dropped: u64 = body
        .split("\"packets_dropped\":")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "a full upstream should drop packets, not queue them: {body}");
    let _ = server.join();
}

fn http_get_status(port: u16) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /status HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), out)
}
