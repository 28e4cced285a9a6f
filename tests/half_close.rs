//! Half-closing clients (`shutdown(SHUT_WR)`, as `nc -N` / `nc -q` and many health-check scripts
//! do): every complete request sent before the FIN is answered, then the server closes; an
//! interleaved session on that connection ends; other clients keep streaming.
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{have, Daemon, RtspClient};

/// Sends `bytes`, half-closes, and reads until the server closes. `None` if it never closes.
fn send_then_half_close(port: u16, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

fn statuses(answer: &str) -> Vec<(String, String)> {
    answer
        .split("RTSP/1.0 ")
        .skip(1)
        .map(|r| {
            let status = r.get(..3).unwrap_or("").to_owned();
            let cseq =
                r.lines().find_map(|l| l.strip_prefix("CSeq: ")).map(|v| v.trim().to_owned()).unwrap_or_default();
            (status, cseq)
        })
        .collect()
}

#[test]
fn one_request_then_fin_is_answered_then_closed() {
    let mut d = Daemon::start(&["--width", "160", "--height", "120"]);
    let url = d.url();
    let answer = send_then_half_close(d.port, format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 7\r\n\r\n").as_bytes());
    let log = d.log_for_failure();
    let answer = answer.unwrap_or_else(|| panic!("the server never closed:\n{log}"));
    assert_eq!(statuses(&answer), [("200".to_owned(), "7".to_owned())], "{answer}\n{log}");
    assert!(answer.contains("Public: "), "{answer}");
}

#[test]
fn pipelined_requests_then_fin_are_all_answered_in_order() {
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let url = d.url();
    // DESCRIBE needs the encoder's SPS/PPS: wait until the stream is up.
    let mut probe = RtspClient::connect(&url);
    for _ in 0..100 {
        if probe.request("DESCRIBE", &url, &[]).status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut bytes = String::new();
    for (i, m) in ["OPTIONS", "DESCRIBE", "GET_PARAMETER", "OPTIONS"].iter().enumerate() {
        bytes.push_str(&format!("{m} {url} RTSP/1.0\r\nCSeq: {}\r\n\r\n", i + 1));
    }
    // An incomplete request after the complete ones can never be answered: dropped at close.
    bytes.push_str("OPTIONS rtsp://");
    let answer = send_then_half_close(d.port, bytes.as_bytes()).expect("closed after the answers");
    let want: Vec<_> = (1..=4).map(|i| ("200".to_owned(), i.to_string())).collect();
    assert_eq!(statuses(&answer), want, "{answer}");
    assert!(answer.contains("m=video"), "DESCRIBE's SDP: {answer}");
}

#[test]
fn interleaved_session_then_fin_ends_the_session_and_others_keep_playing() {
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let url = d.url();
    let mut other = RtspClient::connect(&url);
    let _ = other.play_tcp();
    assert!(other.next_frame().is_some(), "the other client plays");

    let mut c = RtspClient::connect(&url);
    let (session, _) = c.play_tcp();
    assert!(c.next_frame().is_some());
    c.send_raw(format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 90\r\nSession: {session}\r\n\r\n").as_bytes());
    c.stream.shutdown(Shutdown::Write).unwrap();
    // Media may come before the answer; the answer must come, then the close.
    let r = c.read_response().expect("TEARDOWN answered after the FIN");
    assert_eq!((r.status, r.header("CSeq")), (200, Some("90")));
    let mut rest = Vec::new();
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(c.stream.read_to_end(&mut rest).is_ok(), "the server closes the connection");
    d.wait_for_log("ended (TEARDOWN)", Duration::from_secs(5));

    // A player that just half-closes (no TEARDOWN): its session ends with the connection.
    let mut quitter = RtspClient::connect(&url);
    let _ = quitter.play_tcp();
    assert!(quitter.next_frame().is_some());
    quitter.stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    assert!(quitter.stream.read_to_end(&mut rest).is_ok(), "closed after the FIN");
    d.wait_for_log("ended (connection closed)", Duration::from_secs(5));

    // The first client never stopped: 30 more packets arrive on its connection.
    for i in 0..30 {
        assert!(other.next_frame().is_some(), "other client stopped after {i} packets:\n{}", d.log());
    }
}

#[test]
fn netcat_with_half_close_gets_its_answer() {
    assert!(have("nc"), "needs nc (netcat-openbsd, installed by scripts/test)");
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let mut nc = Command::new("nc")
        .args(["-N", "127.0.0.1", &d.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nc.stdin.take().unwrap().write_all(format!("OPTIONS {} RTSP/1.0\r\nCSeq: 3\r\n\r\n", d.url()).as_bytes()).unwrap();
    let out = common::run_with_timeout_child(nc, Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nc: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(statuses(&text), [("200".to_owned(), "3".to_owned())], "{text}");
}
