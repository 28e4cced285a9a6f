//! More than 1024 session slots when the open-file limit allows them, and a clear exit 2 when
//! it does not (each slot holds two UDP sockets, bound at start).
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_thousand_session_slots_serve_and_a_too_low_fd_limit_exits_2_naming_max_clients() {
    let port = free_port();
    let args = [
        "--listen",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--http-port",
        "0",
        "--width",
        "320",
        "--height",
        "240",
        "--max-clients",
        "2000",
        // Above the ranges the other test binaries use, with room for 3000 pairs: ports in
        // the kernel's ephemeral range that other processes hold at the time are skipped.
        "--rtp-ports",
        "41000-46999",
    ];
    // A limit too low for 2000 slots: refused before anything is bound.
    let out = common::run_with_timeout(
        Command::new("prlimit")
            .arg("--nofile=1024:1024")
            .arg(env!("CARGO_BIN_EXE_uavstream"))
            .args(args)
            .env("UAVSTREAM_PROC_CMDLINE", ""),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("max-clients 2000") && err.contains("open-file limit is 1024"), "{err}");

    // With room for them: all 4000 sockets bound, and a client plays.
    let mut child = Command::new("prlimit")
        .arg("--nofile=8192:8192")
        .arg(env!("CARGO_BIN_EXE_uavstream"))
        .args(args)
        .env("UAVSTREAM_PROC_CMDLINE", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "the daemon did not start");
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (frames, _, stderr) = common::ffmpeg_decode(&format!("rtsp://127.0.0.1:{port}/live"), "udp", 30);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(frames, 30, "{stderr}");
}
