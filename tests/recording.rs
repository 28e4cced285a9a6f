//! Recording from the daemon itself: a stream recorded to fragmented MP4 while RTSP clients
//! play, switched off and on over HTTP, reported in /status, and SIGKILLed at random moments
//! without leaving anything unplayable behind.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::record::{complete_prefix, ffprobe, parse_complete, segments};
use common::{run_with_timeout, Daemon, RtspClient};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uavstream-recording-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn http(d: &Daemon, method: &str, path: &str) -> (u16, String) {
    let out = run_with_timeout(
        std::process::Command::new("curl").args([
            "-s",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{}{path}", d.http_port),
        ]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn wait_until(what: &str, d: &Daemon, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out waiting for {what}:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every closed segment is made of whole fragments and probes clean; the open one (the newest,
/// while `writing`) plays up to its last whole fragment; `latest_video.mp4` points at a closed
/// one. Returns how many are closed.
fn check_files(dir: &Path, what: &str, writing: bool) -> usize {
    // The link first: a segment closed between the two reads is then one the link may name.
    let latest = fs::read_link(dir.join("latest_video.mp4")).ok().map(|t| dir.join(t));
    let segs = segments(dir);
    let (open, closed) = match segs.split_last() {
        None => return 0,
        // The newest is being written, unless the link already names it (closed meanwhile, the
        // next not opened yet).
        Some((open, closed)) if writing && latest.as_ref() != Some(open) => (Some(open), closed),
        Some(_) => (None, &segs[..]),
    };
    for s in closed {
        let (samples, _) = parse_complete(s);
        let p = ffprobe(&[s.to_str().unwrap()]);
        assert!(
            p.errors.is_empty() && p.frames == samples && samples > 0,
            "{what}: {}: {} {}",
            s.display(),
            p.frames,
            p.errors
        );
    }
    let data = open.map(|o| fs::read(o).unwrap()).unwrap_or_default();
    let (good, samples) = complete_prefix(&data);
    if samples > 0 {
        let prefix = dir.join("prefix.bin");
        fs::write(&prefix, &data[..good]).unwrap();
        let p = ffprobe(&["-f", "mp4", prefix.to_str().unwrap()]);
        fs::remove_file(&prefix).unwrap();
        assert!(
            p.errors.is_empty() && p.frames == samples,
            "{what}: open segment: {} of {samples}: {}",
            p.frames,
            p.errors
        );
    }
    if let Some(target) = latest {
        assert!(closed.contains(&target), "{what}: latest_video.mp4 -> {} is not a closed segment", target.display());
    }
    closed.len()
}

#[test]
fn a_recorded_stream_plays_and_is_switched_off_and_on_over_http_while_clients_play() {
    let dir = temp_dir("http");
    let dir_s = dir.display().to_string();
    let d = Daemon::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--idr-interval",
        "15",
        "--record-dir",
        &dir_s,
        "--record-segment",
        "1",
        "--record-fragment",
        "0.5",
        "--record-min-free",
        "0",
        "--stream2-path",
        "/low",
        "--stream2-width",
        "160",
        "--stream2-height",
        "120",
    ]);
    let mut client = RtspClient::connect(&d.url());
    client.play_tcp();
    wait_until("three closed segments", &d, || segments(&dir).len() >= 4);
    let (code, body) = http(&d, "GET", "/status");
    assert_eq!(code, 200);
    assert!(body.contains("\"recorder\":{\"wanted\":true,\"state\":\"recording\""), "{body}");
    assert!(body.contains("\"path\":\"/low\"") && body.contains("\"recorder\":null"), "/low is not recorded: {body}");

    // Off over HTTP: the open segment is closed, nothing new is written.
    let (code, body) = http(&d, "POST", "/live/record?stop");
    assert_eq!((code, body.trim()), (200, "{\"path\":\"/live\",\"recording\":false}"));
    wait_until("the recorder to stop", &d, || http(&d, "GET", "/status").1.contains("\"state\":\"stopped\""));
    let stopped = segments(&dir).len();
    let closed = check_files(&dir, "after stop", false);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(segments(&dir).len(), stopped, "files written while stopped");
    // Every segment is closed now, so the newest one is what latest_video.mp4 shows.
    assert_eq!(closed, stopped);
    let newest = segments(&dir).pop().unwrap();
    assert_eq!(dir.join(fs::read_link(dir.join("latest_video.mp4")).unwrap()), newest);

    // On again: a new segment, starting at an IDR.
    let (code, _) = http(&d, "POST", "/live/record?start");
    assert_eq!(code, 200);
    wait_until("a new segment", &d, || segments(&dir).len() > stopped + 1);
    // Errors are answered: an unknown action, a stream without a record-dir, a GET.
    assert_eq!(http(&d, "POST", "/live/record?pause").0, 400);
    assert_eq!(http(&d, "POST", "/low/record?start").0, 409);
    assert_eq!(http(&d, "GET", "/live/record").0, 404);
    // The RTSP client never lost a packet meanwhile.
    let mut last = None::<u16>;
    for _ in 0..100 {
        let f = client.next_frame().expect("the RTSP client keeps playing");
        if f.channel == 0 {
            let seq = common::rtp_seq(&f.data);
            if let Some(l) = last {
                assert_eq!(seq, l.wrapping_add(1), "RTP packet lost while recording");
            }
            last = Some(seq);
        }
    }
    check_files(&dir, "at the end", true);
    drop(d);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn sigkill_of_the_daemon_at_twenty_random_moments_leaves_only_playable_files() {
    let dir = temp_dir("kill");
    let dir_s = dir.display().to_string();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut closed = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut d = Daemon::start(&[
            "--width",
            "160",
            "--height",
            "120",
            "--idr-interval",
            "10",
            "--record-dir",
            &dir_s,
            "--record-segment",
            "1",
            "--record-fragment",
            "0.3",
            "--record-min-free",
            "0",
        ]);
        std::thread::sleep(Duration::from_millis(300 + seed % 1700));
        d.signal(9);
        d.wait_exit(Duration::from_secs(5)).expect("SIGKILL ends it");
        closed = check_files(&dir, &format!("round {round}"), true);
    }
    assert!(closed >= 5, "only {closed} closed segments after 20 rounds");
    let _ = fs::remove_dir_all(&dir);
}

/// Reads RTP packets from `client` until `until(packets read so far)`, checking that none is
/// missing.
fn read_until(
    d: &Daemon,
    client: &mut RtspClient,
    last: &mut Option<u16>,
    count: &mut u64,
    until: impl Fn(u64) -> bool,
) {
    let t = Instant::now();
    while !until(*count) {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out:\n{}", d.log());
        let f = client.next_frame().expect("the RTSP client keeps playing");
        if f.channel != 0 {
            continue;
        }
        let seq = common::rtp_seq(&f.data);
        if let Some(l) = *last {
            assert_eq!(seq, l.wrapping_add(1), "an RTP packet was lost around the full disk");
        }
        *last = Some(seq);
        *count += 1;
    }
}

#[test]
fn a_full_disk_pauses_recording_while_rtsp_clients_lose_nothing_and_it_resumes() {
    // Mounting needs root; CI runs as root.
    let disk = common::record::Tmpfs::mount("daemon-full", "2m").expect("cannot mount a tmpfs: this test needs root");
    let dir_s = disk.0.display().to_string();
    let d = Daemon::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--bitrate",
        "2M",
        "--idr-interval",
        "15",
        "--record-dir",
        &dir_s,
        "--record-segment",
        "1",
        "--record-fragment",
        "0.5",
        "--record-min-free",
        "0",
    ]);
    let mut client = RtspClient::connect(&d.url());
    client.play_tcp();
    let (mut last, mut count) = (None, 0u64);
    // 2 MiB at 2 Mbit/s fills in seconds: recording pauses, streaming goes on.
    read_until(&d, &mut client, &mut last, &mut count, |_| d.log().contains("recording paused"));
    let paused_at = count;
    read_until(&d, &mut client, &mut last, &mut count, |n| n >= paused_at + 300);
    // Room again: recording resumes at an IDR.
    for s in segments(&disk.0) {
        let _ = fs::remove_file(s);
    }
    read_until(&d, &mut client, &mut last, &mut count, |_| d.log().contains("recording resumes"));
    read_until(&d, &mut client, &mut last, &mut count, |_| !segments(&disk.0).is_empty());
    eprintln!("figure: {count} RTP packets in sequence through a full disk and back");
    drop(d);
}
