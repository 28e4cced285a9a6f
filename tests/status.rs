//! `/status` (JSON) and `/metrics` (Prometheus text) on the HTTP port, read with curl while real
//! clients play: the metrics text goes through Prometheus' own Python parser, and the values are
//! checked against what the clients received and what their RTCP receiver reports said.
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{client_udp_pair, run_with_timeout, Daemon, RtspClient};

/// `(status code, content type, body)` of a GET with curl (the last response, after a Digest
/// challenge).
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = run_with_timeout(
        Command::new("curl").args(["-s", "-S", "--max-time", "10", "-w", "\n%{http_code} %{content_type}"]).args(args),
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, ctype) = last.split_once(' ').unwrap_or((last, ""));
    (code.parse().unwrap_or(0), ctype.to_owned(), body.to_owned())
}

/// Every sample of a Prometheus text exposition, parsed by `prometheus_client.parser` (Debian's
/// python3-prometheus-client), keyed by `name{label=value,...}` with labels sorted.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        labels = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))
        print('%s{%s} %r' % (s.name, labels, s.value))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's python3 (scripts/test installs python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = common::run_with_timeout_child(child, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// An RTCP receiver report with one block about `ssrc` (the stream's: a block about another
/// source is not the session's reception): fraction lost 64/256, 17 lost, the given highest
/// sequence, jitter 900 (10 ms at 90 kHz).
fn receiver_report(ssrc: u32, highest: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7, 0, 0, 0x12, 0x34];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[64, 0, 0, 17]);
    p.extend_from_slice(&highest.to_be_bytes());
    p.extend_from_slice(&900u32.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p
}

#[test]
fn status_and_metrics_report_what_the_clients_got_and_said() {
    let d = Daemon::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--stream2-path",
        "/low",
        "--stream2-width",
        "160",
        "--stream2-height",
        "120",
        "--stream2-fps",
        "10",
    ]);
    let base = format!("rtsp://127.0.0.1:{}", d.port);
    // A TCP client of /low counts what it receives.
    let mut tcp = RtspClient::connect(&format!("{base}/low"));
    let (tcp_session, _) = tcp.play_tcp();
    // A UDP client of /live sends a receiver report with known figures.
    let (rtp, _rtcp, p) = client_udp_pair();
    let mut udp = RtspClient::connect(&format!("{base}/live"));
    let s = udp.request(
        "SETUP",
        &format!("{base}/live/trackID=0"),
        &[("Transport", &format!("RTP/AVP;unicast;client_port={p}-{}", p + 1))],
    );
    let server_rtcp: u16 = s
        .header("Transport")
        .and_then(|t| t.split(';').find_map(|f| f.strip_prefix("server_port=")))
        .and_then(|v| v.split('-').nth(1))
        .and_then(|v| v.parse().ok())
        .expect("server_port in the SETUP answer");
    let udp_session = s.session();
    assert_eq!(udp.request("PLAY", &format!("{base}/live"), &[("Session", &udp_session)]).status, 200);
    rtp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..50 {
        rtp.recv_from(&mut buf).expect("RTP over UDP");
    }
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&receiver_report(ssrc, 4242), ("127.0.0.1", server_rtcp)).unwrap();
    let mut got = 0;
    while got < 100 {
        got += usize::from(tcp.next_frame().expect("TCP client plays").channel == 0);
    }
    // Rates are measured over once-a-second samples: let a few pass.
    std::thread::sleep(Duration::from_millis(3500));

    let (code, ctype, body) = curl(&[&format!("http://127.0.0.1:{}/status", d.http_port)]);
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{body}");
    for needle in [
        "\"path\":\"/live\"",
        "\"path\":\"/low\"",
        "\"width\":160,\"height\":120",
        "\"source\":\"testpattern\"",
        "\"state\":\"streaming\"",
        "\"fraction_lost\":0.2500,\"cumulative_lost\":17,\"jitter_s\":0.010000,\"highest_sequence\":4242",
        &format!("\"id\":\"{}\"", tcp_session.to_uppercase()),
    ] {
        assert!(body.contains(needle), "/status lacks {needle}:\n{body}");
    }
    // The JSON parses (Python's parser, a strict one).
    let out = {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", "import json,sys; d=json.load(sys.stdin); print(len(d['cameras']), len(d['streams']), len(d['sessions']))"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        common::run_with_timeout_child(child, Duration::from_secs(20))
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 2 2", "{}", String::from_utf8_lossy(&out.stderr));

    let (code, ctype, body) = curl(&[&format!("http://127.0.0.1:{}/metrics", d.http_port)]);
    assert_eq!((code, ctype.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"), "{body}");
    let m = parse_metrics(&body);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in the metrics:\n{body}"));
    assert_eq!(get("uavstream_camera_up{camera=camera1}"), 1.0);
    assert_eq!(get("uavstream_stream_clients{stream=/low,transport=tcp}"), 1.0);
    assert_eq!(get("uavstream_stream_clients{stream=/live,transport=udp}"), 1.0);
    assert_eq!(get("uavstream_stream_clients{stream=/live,transport=tcp}"), 0.0);
    let live_fps = get("uavstream_stream_fps{stream=/live}");
    let low_fps = get("uavstream_stream_fps{stream=/low}");
    assert!((25.0..=35.0).contains(&live_fps) && (8.0..=12.0).contains(&low_fps), "fps {live_fps} {low_fps}");
    let udp_key = format!("session={},stream=/live,transport=udp}}", udp_session.to_uppercase());
    let lost = m
        .keys()
        .find(|n| n.starts_with("uavstream_session_rtcp_fraction_lost{peer=") && n.ends_with(&udp_key))
        .cloned()
        .unwrap_or_else(|| panic!("no fraction lost of the UDP session:\n{body}"));
    assert_eq!(m[&lost], 0.25);
    assert_eq!(m[&lost.replace("fraction_lost", "cumulative_lost")], 17.0);
    assert_eq!(m[&lost.replace("fraction_lost", "jitter_seconds")], 0.01);
    // The server sent the TCP client at least what it counted.
    let sent = m
        .iter()
        .find(|(k, _)| k.starts_with("uavstream_session_packets_sent_total{") && k.contains("transport=tcp"))
        .map(|(_, v)| *v)
        .expect("the TCP session's packets");
    assert!(sent >= got as f64, "server says {sent} packets, the client counted {got}");
}

#[test]
fn status_and_metrics_need_credentials_when_auth_is_on() {
    let d = Daemon::start_with_env(&["--width", "160", "--height", "120"], &[("UAVSTREAM_AUTH", "pilot:s3cret")]);
    for path in ["/status", "/metrics"] {
        let url = format!("http://127.0.0.1:{}{path}", d.http_port);
        let (code, _, body) = curl(&[&url]);
        assert_eq!(code, 401, "{path} without credentials: {body}");
        assert!(!body.contains("/live"), "{body}");
        let (code, _, body) = curl(&["--digest", "-u", "pilot:s3cret", &url]);
        assert_eq!(code, 200, "{path} with Digest credentials: {body}");
        assert!(body.contains("/live"), "{body}");
    }
}
