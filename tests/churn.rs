//! Churn: 10,000 connect/SETUP/PLAY/TEARDOWN cycles and 10,000 abrupt disconnects (mid-request,
//! after SETUP, mid-PLAY) against the real binary. Afterwards every slot is free and the
//! daemon's RSS grew by less than 1 MiB.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, RtspClient};

const CYCLES: usize = 10_000;
const ABRUPT: usize = 10_000;
const WORKERS: usize = 4;

fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut tmp = [0u8; 8192];
    loop {
        // Skip interleaved RTP that may precede or follow responses.
        while buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.drain(..4 + len);
        }
        if buf.first() != Some(&b'$') {
            if let Some(end) = common::find(buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let clen: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < end + 4 + clen {
                    let n = s.read(&mut tmp).ok().filter(|&n| n > 0)?;
                    buf.extend_from_slice(&tmp[..n]);
                }
                buf.drain(..end + 4 + clen);
                return Some(head);
            }
        }
        let n = s.read(&mut tmp).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn one_cycle(port: u16, url: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut exchange = |req: String, what: &str| -> Result<String, String> {
        s.write_all(req.as_bytes()).map_err(|e| format!("{what} write: {e}"))?;
        let t = Instant::now();
        let head = read_head(&mut s, &mut buf).ok_or_else(|| format!("{what}: no answer after {:?}", t.elapsed()))?;
        if head.starts_with("RTSP/1.0 200") {
            Ok(head)
        } else {
            Err(format!("{what}: {head}"))
        }
    };
    let head = exchange(
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        "SETUP",
    )?;
    let session = head.lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap().to_owned();
    exchange(format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n"), "PLAY")?;
    exchange(format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"), "TEARDOWN")?;
    Ok(())
}

fn one_abrupt(port: u16, url: &str, i: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    match i % 4 {
        // Connect and vanish.
        0 => {}
        // Vanish mid-request.
        1 => {
            let _ = s.write_all(format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAcc").as_bytes());
        }
        // Vanish after SETUP.
        2 => {
            s.write_all(format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n").as_bytes()).unwrap();
            let _ = read_head(&mut s, &mut buf);
        }
        // Vanish mid-PLAY, with a reset rather than a FIN.
        _ => {
            s.write_all(format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n").as_bytes()).unwrap();
            if let Some(head) = read_head(&mut s, &mut buf) {
                if let Some(session) = head.lines().find_map(|l| l.strip_prefix("Session: ")) {
                    let session = session.split(';').next().unwrap();
                    let _ =
                        s.write_all(format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n").as_bytes());
                    let _ = read_head(&mut s, &mut buf);
                }
            }
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::Linger,
                &libc::linger { l_onoff: 1, l_linger: 0 },
            );
        }
    }
}

#[test]
fn churn_leaves_every_slot_free_and_memory_flat() {
    let d = Daemon::start_with_env(
        &[
            "--width",
            "160",
            "--height",
            "120",
            "--max-clients",
            "16",
            "--max-pending-connections",
            "64",
            "--max-request-rate",
            "1000",
        ],
        &[("RUST_LOG", "uavstream=warn")],
    );
    let (port, url) = (d.port, d.url());
    // Warm up, then take the baseline.
    for _ in 0..200 {
        one_cycle(port, &url).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss_before, fds_before) = (d.rss_kib(), d.fds());
    let t = Instant::now();
    // Phase 1: orderly cycles; phase 2: abrupt disconnects (a flood of sessionless connections
    // may, by policy, evict the oldest sessionless one, which would be an orderly client here).
    let errors: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let url = url.clone();
                scope.spawn(move || -> Result<(), String> {
                    for i in 0..CYCLES / WORKERS {
                        one_cycle(port, &url).map_err(|e| format!("cycle {i} of worker {w}: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().filter_map(|h| h.join().unwrap().err()).collect()
    });
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let url = url.clone();
            scope.spawn(move || {
                for i in 0..ABRUPT / WORKERS {
                    one_abrupt(port, &url, i * WORKERS + w);
                }
            });
        }
    });
    let log = d.log();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| {
            !l.contains(": connected (")
                && !l.contains(": disconnected (")
                && !l.contains("PLAY session")
                && !l.contains(" ended (")
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{errors:?}\ndaemon log, notable lines:\n{}",
        notable[notable.len().saturating_sub(40)..].join("\n")
    );
    let elapsed = t.elapsed();
    // Let the loop notice every close.
    std::thread::sleep(Duration::from_millis(1500));
    let (rss_after, fds_after) = (d.rss_kib(), d.fds());
    eprintln!(
        "figure: {CYCLES} cycles + {ABRUPT} abrupt disconnects in {:.1} s; RSS {rss_before} -> {rss_after} KiB; fds {fds_before} -> {fds_after}",
        elapsed.as_secs_f64()
    );
    assert!(rss_after < rss_before + 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    assert!(fds_after <= fds_before, "fds grew from {fds_before} to {fds_after}");
    // Every slot is free: 16 new sessions fit, the 17th gets 503.
    let mut clients = Vec::new();
    for i in 0..16 {
        let mut c = RtspClient::connect(&url);
        let r =
            c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
        assert_eq!(r.status, 200, "slot {i} was not free after the churn");
        clients.push(c);
    }
    let mut extra = RtspClient::connect(&url);
    let r =
        extra.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(r.status, 503);
}
