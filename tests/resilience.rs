//! Self-healing, proven by fault injection on the real binary (`UAVSTREAM_FAULT_INJECTION=1`):
//! a stalled pipeline is rebuilt without dropping RTSP sessions, and systemd watchdog pings stop
//! while the loop itself hangs (so systemd would restart the process).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{rtp_nal_type, Daemon, RtspClient};

fn fault_daemon(extra_env: &[(&str, &str)]) -> Daemon {
    let mut env = vec![("UAVSTREAM_FAULT_INJECTION", "1")];
    env.extend_from_slice(extra_env);
    Daemon::start_with_env(&["--width", "160", "--height", "120", "--stall-timeout", "1"], &env)
}

/// Reads frames until one on channel 0 arrives; returns it and its arrival time.
fn next_rtp(c: &mut RtspClient) -> (Vec<u8>, Instant) {
    loop {
        let f = c.next_frame().expect("stream continues");
        if f.channel == 0 {
            return (f.data, f.at);
        }
    }
}

#[test]
fn stalled_pipeline_is_rebuilt_and_sessions_keep_playing() {
    let d = fault_daemon(&[]);
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    for _ in 0..20 {
        next_rtp(&mut c);
    }
    d.signal(10); // SIGUSR1: the pipeline's output is discarded from now on
    let t0 = Instant::now();
    // Frames stop, the watchdog notices after --stall-timeout (1 s), rebuilds the pipeline, and
    // the same session receives a fresh SPS/PPS/IDR.
    let mut gap = Duration::ZERO;
    let mut last = Instant::now();
    let resumed_with = loop {
        let (pkt, at) = next_rtp(&mut c);
        gap = gap.max(at.duration_since(last));
        last = at;
        if gap >= Duration::from_millis(900) {
            break rtp_nal_type(&pkt);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no stall seen");
    };
    assert_eq!(resumed_with, 7, "after the restart the client starts again at SPS/PPS/IDR");
    d.wait_for_log("restarting source and encoder", Duration::from_secs(5));
    d.wait_for_log("source restarted", Duration::from_secs(5));
    for _ in 0..30 {
        next_rtp(&mut c);
    }
    assert!(!d.log().contains(" ended ("), "a session was dropped:\n{}", d.log());
    eprintln!("figure: stall → frames again after {:.2} s (stall-timeout 1 s)", t0.elapsed().as_secs_f64());
}

#[test]
fn sighup_reopens_the_source_and_keeps_sessions() {
    let d = fault_daemon(&[]);
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    next_rtp(&mut c);
    d.signal(1);
    d.wait_for_log("SIGHUP: reopening", Duration::from_secs(5));
    d.wait_for_log("source restarted", Duration::from_secs(5));
    for _ in 0..30 {
        next_rtp(&mut c);
    }
}

#[test]
fn watchdog_pings_stop_while_the_loop_hangs() {
    let dir = std::env::temp_dir().join(format!("uavstream-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let d = fault_daemon(&[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")]);
    let mut buf = [0u8; 256];
    let mut messages: Vec<(Instant, String)> = Vec::new();
    let mut collect = |until: Duration, messages: &mut Vec<(Instant, String)>| {
        let t = Instant::now();
        while t.elapsed() < until {
            if let Ok(n) = sock.recv(&mut buf) {
                messages.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    };
    collect(Duration::from_millis(1500), &mut messages);
    assert!(messages.iter().any(|(_, m)| m == "READY=1"), "{messages:?}");
    let before = messages.iter().filter(|(_, m)| m == "WATCHDOG=1").count();
    assert!(before >= 3, "pings every 200 ms expected, got {before}");
    d.signal(12); // SIGUSR2: the loop hangs for 5 s
    let hang_start = Instant::now();
    messages.clear();
    collect(Duration::from_millis(7000), &mut messages);
    let pings: Vec<Duration> =
        messages.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| t.duration_since(hang_start)).collect();
    // No ping between 0.5 s and 4.5 s into the hang; pings again afterwards (a real systemd
    // with WatchdogSec would have killed and restarted the process by then).
    assert!(
        !pings.iter().any(|p| *p > Duration::from_millis(500) && *p < Duration::from_millis(4500)),
        "pings during the hang: {pings:?}"
    );
    assert!(pings.iter().any(|p| *p > Duration::from_secs(5)), "pings did not resume: {pings:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
