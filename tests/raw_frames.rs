//! Raw frames for local processes (issue 13, item 6), against the real binary and its test
//! pattern: the Python example and the crate's Rust client receive frames of the right size and
//! format with strictly increasing sequence numbers and test-pattern pixels; a consumer that
//! stops reading slows neither the camera, nor RTSP (judged by RTP timestamps, never the clock),
//! nor other consumers; ten consumers at once; one beyond `raw-clients` is refused cleanly; bad
//! values exit with status 2 naming key, value and origin.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ffprobe_tcp, have, run_with_timeout, Daemon};
use uavstream::raw::client::{RawClient, Received};

const W: u32 = 320;
const H: u32 = 240;
const I420_BYTES: u64 = (W * H * 3 / 2) as u64;

/// Luma and Cb of the test pattern's colour bars (`source::testpattern`).
const BAR_Y: [u8; 8] = [180, 162, 131, 112, 84, 65, 35, 16];
const BAR_U: [u8; 8] = [128, 44, 156, 72, 184, 100, 212, 128];

fn socket_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uavstream-raw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One daemon at a time: the question is what a consumer does to the others, not what four
/// daemons on two cores do to each other.
static ONE_DAEMON_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_DAEMON_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test-pattern daemon at 320x240 with a raw-frame socket in a fresh directory.
fn start(name: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let sock = socket_dir(name).join("raw.sock");
    let mut args = vec!["--width", "320", "--height", "240", "--raw-socket", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "no socket at {}:\n{}", sock.display(), d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    (d, sock)
}

fn connect(sock: &Path) -> RawClient {
    let c = RawClient::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// The daemon's log, for failure messages from threads that do not own the daemon.
type Log = Arc<Mutex<String>>;

fn next(c: &RawClient, log: &Log) -> Received {
    match c.recv() {
        Ok(Some(f)) => f,
        other => {
            std::thread::sleep(Duration::from_millis(500));
            panic!("no frame: {other:?}\n{}", log.lock().unwrap())
        }
    }
}

/// The frame is the 320x240 I420 test pattern as its header describes it.
fn check_frame(f: &Received) {
    let h = f.header;
    assert_eq!((&h.fourcc, h.width, h.height, h.planes, h.size), (b"YU12", W, H, 3, I420_BYTES));
    assert_eq!((h.stride, h.offset), ([W, W / 2, W / 2], [0, W * H, W * H + W * H / 4]));
    assert!(f.is_sealed().unwrap(), "the memfd is sealed");
    let data = f.read().unwrap();
    assert_eq!(data.len() as u64, I420_BYTES);
    assert!(data.iter().any(|&b| b != 0), "not all zero");
    // The top row is the scrolling colour bars, in the luma plane and in the Cb plane at
    // the offset the header gives.
    let y0 = &data[..W as usize];
    let u0 = &data[h.offset[1] as usize..][..(W / 2) as usize];
    let bars_y = y0.iter().filter(|p| BAR_Y.contains(p)).count();
    let bars_u = u0.iter().filter(|p| BAR_U.contains(p)).count();
    assert!(bars_y * 10 >= y0.len() * 9 && bars_u * 10 >= u0.len() * 9, "not the colour bars: {y0:?} {u0:?}");
    let distinct = BAR_Y.iter().filter(|v| y0.contains(v)).count();
    assert!(distinct >= 5, "bars across the row: {distinct}");
}

/// Frames from `c`: sequences strictly increase and each frame's `skipped` covers its gaps.
fn receive(c: &RawClient, log: &Log, frames: usize, check_pixels: bool) -> Vec<Received> {
    let mut got: Vec<Received> = Vec::with_capacity(frames);
    for _ in 0..frames {
        let f = next(c, log);
        if check_pixels {
            check_frame(&f);
        }
        if let Some(prev) = got.last() {
            let (a, b) = (prev.header, f.header);
            assert!(b.sequence > a.sequence, "sequence {} after {}", b.sequence, a.sequence);
            assert!(b.capture_ns > a.capture_ns, "capture times increase");
            assert!(b.skipped >= a.skipped, "skipped counts up");
            assert!(b.sequence - a.sequence - 1 <= b.skipped - a.skipped, "a gap is counted as skipped");
        }
        got.push(f);
    }
    got
}

fn python_ready() -> bool {
    let ok = Command::new("/usr/bin/python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped the Python example: no /usr/bin/python3 with numpy (Debian: python3-numpy)");
    }
    ok
}

#[test]
fn the_python_example_and_the_rust_client_receive_the_test_pattern() {
    let _one = one_at_a_time();
    let (mut d, sock) = start("clients", &[]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "raw-socket-mode's default");

    let c = connect(&sock);
    let frames = receive(&c, &d.log, 30, true);
    assert_ne!(frames[0].read().unwrap(), frames[29].read().unwrap(), "the pattern moves");
    drop(frames);
    drop(c);

    if python_ready() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/raw_frames.py");
        let out = run_with_timeout(
            Command::new("/usr/bin/python3").args([example, sock.to_str().unwrap(), "30"]),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}\n{}", String::from_utf8_lossy(&out.stderr), d.log_for_failure());
        let mut last_seq = 0;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 30, "{text}");
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            // seq N YU12 320x240 planes 3 size S skipped K latency L ms luma M
            assert_eq!((w[0], w[2], w[3], w[5], w[7]), ("seq", "YU12", "320x240", "3", "115200"), "{line}");
            let seq: u64 = w[1].parse().unwrap();
            assert!(seq > last_seq, "{text}");
            last_seq = seq;
            let luma: f64 = w[14].parse().unwrap();
            assert!((16.0..=235.0).contains(&luma) && luma > 40.0, "a picture, not black: {line}");
        }
    }
    let status = status_json(&d);
    assert!(status.contains("\"raw_socket\":{\"path\":"), "{status}");
}

fn status_json(d: &Daemon) -> String {
    let out = run_with_timeout(
        Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/status", d.http_port)]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// RTP timestamps (90 kHz) of `packets` video packets of `url`, read with ffprobe over TCP.
fn rtp_pts(url: &str, packets: usize) -> Vec<i64> {
    ffprobe_tcp(url, "packet=pts", false, packets)
        .0
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn a_consumer_that_stops_reading_slows_neither_the_camera_nor_rtsp_nor_other_consumers() {
    let _one = one_at_a_time();
    let (mut d, sock) = start("stuck", &["--stats-interval", "1"]);
    let stuck = connect(&sock);
    let reader = connect(&sock);
    let reading = std::thread::scope(|s| {
        let probe = have("ffprobe").then(|| {
            let url = d.url();
            s.spawn(move || rtp_pts(&url, 90))
        });
        let frames: Vec<_> = receive(&reader, &d.log, 90, false).into_iter().map(|f| f.header).collect();
        (frames, probe.map(|p| p.join().unwrap()))
    });
    let (headers, pts) = reading;
    // The reader got 90 frames with increasing numbers while the other one read nothing.
    let span = headers[89].sequence - headers[0].sequence;
    let reader_skipped = headers[89].skipped - headers[0].skipped;
    assert_eq!(span - 89, reader_skipped, "the reader's gaps are exactly what it was skipped");
    if let Some(pts) = pts {
        assert!(pts.len() >= 60, "ffprobe read {} packets:\n{}", pts.len(), d.log_for_failure());
        let missing: i64 = pts.windows(2).map(|w| ((w[1] - w[0]) as f64 / 3000.0).round() as i64 - 1).sum();
        // A frame may be missing only where the machine could not keep up and the camera or
        // encoder counted it (as tests/frame_delivery allows), never because of a consumer.
        let dropped = d.frames_dropped_next_stats();
        assert!(
            missing as u64 <= dropped,
            "RTP timestamps have {missing} frames missing, {dropped} counted: {pts:?}\n{}",
            d.log_for_failure()
        );
        if missing > 0 {
            eprintln!(
                "the CPU did not keep up here: {missing} frames missing, {dropped} counted by the camera/encoder"
            );
        }
    } else {
        eprintln!("no ffprobe: the RTSP half of this test is skipped");
    }
    // Newest wins: the stuck consumer holds one unread message (its first frame), not a queue;
    // after it, it gets the current frame and learns how many it missed.
    let old = next(&stuck, &d.log).header;
    let new = next(&stuck, &d.log).header;
    assert!(old.sequence <= headers[0].sequence + 1, "its one message is from when it stopped: {old:?}");
    assert!(new.sequence >= headers[89].sequence, "then the newest frame: {new:?} after {:?}", headers[89]);
    assert_eq!(new.skipped, new.sequence - old.sequence - 1, "every frame in between counted as skipped");
    assert!(new.skipped >= 80, "{new:?}");
    // The counters say so too.
    let status = status_json(&d);
    let skipped: u64 = status
        .split("\"skipped\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(skipped >= new.skipped, "{status}");
}

#[test]
fn ten_consumers_at_once_and_the_one_beyond_raw_clients_is_refused() {
    let _one = one_at_a_time();
    let (mut d, sock) = start("ten", &["--raw-clients", "10"]);
    let clients: Vec<RawClient> = (0..10).map(|_| connect(&sock)).collect();
    d.wait_for_log("10 of 10 slots taken", Duration::from_secs(10));
    let extra = connect(&sock);
    match extra.recv() {
        Ok(None) => {}
        other => panic!("the 11th consumer got {other:?}:\n{}", d.log_for_failure()),
    }
    d.wait_for_log("refused: all 10 slots are taken (raw-clients)", Duration::from_secs(10));
    std::thread::scope(|s| {
        for c in &clients {
            let log = &d.log;
            s.spawn(move || {
                let frames = receive(c, log, 30, false);
                check_frame(&frames[29]);
            });
        }
    });
    // A consumer that leaves frees its slot for the next one.
    drop(clients);
    d.wait_for_log("0 of 10 slots taken", Duration::from_secs(10));
    let again = connect(&sock);
    check_frame(&next(&again, &d.log));
}

#[test]
fn bad_raw_socket_values_exit_2_naming_key_value_and_origin() {
    let bin = env!("CARGO_BIN_EXE_uavstream");
    /// (flags, environment, what stderr says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--raw-socket", "raw.sock"], &[], "invalid raw-socket value \"raw.sock\" (--raw-socket from the command-line flag)"),
        (
            &[],
            &[("UAVSTREAM_RAW_SOCKET", "/run/x.sock"), ("UAVSTREAM_RAW_SOCKET_MODE", "rw")],
            "invalid raw-socket-mode value \"rw\" (UAVSTREAM_RAW_SOCKET_MODE from the environment)",
        ),
        (&["--raw-clients", "0"], &[], "invalid raw-clients value \"0\""),
        (
            &["--stream2-camera", "2"],
            &[("UAVSTREAM_PROC_CMDLINE", "uavstream.raw-socket=/run/a.sock uavstream.camera2.raw-socket=/run/a.sock")],
            "invalid camera2.raw-socket value \"/run/a.sock\" (uavstream.camera2.raw-socket from the kernel command line): camera1 already serves raw frames",
        ),
    ];
    for (args, env, want) in cases {
        let mut cmd = Command::new(bin);
        cmd.args(*args).env("UAVSTREAM_PROC_CMDLINE", "");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(want), "{args:?} {env:?}: {err}");
    }
    // A path that is taken by something else is a start-up error naming it, never deleted.
    let dir = socket_dir("taken");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (a, b) = common::rtp_range(40);
    let out = run_with_timeout(
        Command::new(bin)
            .args(["--raw-socket", file.to_str().unwrap(), "--listen", "127.0.0.1", "--port", &port])
            .args(["--http-port", "0", "--max-clients", "1", "--rtp-ports", &format!("{a}-{b}")])
            .env("UAVSTREAM_PROC_CMDLINE", ""),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
