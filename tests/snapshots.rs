//! Snapshots from the daemon itself: one JPEG of the camera per `snapshot-interval`,
//! `latest_image.jpg` always a complete JPEG for a reader polling it in a tight loop, retention,
//! and a full disk that pauses snapshots while RTSP streams on.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run_with_timeout, Daemon, RtspClient};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uavstream-snapshots-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn status(d: &Daemon) -> String {
    let out = run_with_timeout(
        std::process::Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/status", d.http_port)]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A number from the camera's `"snapshots":{…}` object of `/status`.
fn snapshot_figure(status: &str, key: &str) -> Option<f64> {
    let obj = &status[status.find("\"snapshots\":{")?..];
    let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
    let end = obj[at..].find([',', '}'])?;
    obj[at..at + end].trim().parse().ok()
}

fn uptime(status: &str) -> f64 {
    let at = status.find("\"uptime_s\":").unwrap() + 11;
    let end = status[at..].find(',').unwrap();
    status[at..at + end].parse().unwrap()
}

fn snapshots(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    v.sort();
    v
}

/// A whole baseline JPEG of `w`x`h`: SOI, a SOF0 with that size, EOI at the end.
fn check_jpeg(data: &[u8], w: u16, h: u16) -> Result<(), String> {
    if !data.starts_with(&[0xff, 0xd8]) || !data.ends_with(&[0xff, 0xd9]) {
        return Err(format!("not a complete JPEG ({} bytes)", data.len()));
    }
    let sof = data.windows(2).position(|p| p == [0xff, 0xc0]).ok_or("no SOF0")?;
    let size = data.get(sof + 5..sof + 9).ok_or("short SOF0")?;
    let (fh, fw) = (u16::from_be_bytes([size[0], size[1]]), u16::from_be_bytes([size[2], size[3]]));
    if (fw, fh) != (w, h) {
        return Err(format!("{fw}x{fh}, expected {w}x{h}"));
    }
    Ok(())
}

#[test]
fn one_snapshot_per_interval_and_latest_image_is_always_complete() {
    let dir = temp_dir("rate");
    let dir_s = dir.display().to_string();
    let d = Daemon::start(&["--width", "640", "--height", "360", "--snapshot-dir", &dir_s]);

    // A reader polls latest_image.jpg as fast as it can while snapshots are switched under it.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, latest) = (Arc::clone(&stop), dir.join("latest_image.jpg"));
        std::thread::spawn(move || {
            let (mut reads, mut distinct, mut last_len) = (0u64, 0u64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let Ok(data) = fs::read(&latest) else { continue };
                if let Err(e) = check_jpeg(&data, 640, 360) {
                    return Err(format!("read {reads}: {e}"));
                }
                reads += 1;
                if data.len() != last_len {
                    distinct += 1;
                    last_len = data.len();
                }
            }
            Ok((reads, distinct))
        })
    };

    let t = Instant::now();
    let first = loop {
        let s = status(&d);
        if snapshot_figure(&s, "written").is_some_and(|n| n >= 1.0) {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no snapshot:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(10));
    let last = status(&d);
    stop.store(true, Ordering::Relaxed);
    let (reads, distinct) = reader.join().unwrap().unwrap_or_else(|e| panic!("{e}\n{}", d.log()));

    // The daemon's own clock: snapshots written against its uptime, one per second ±10 %.
    let written = snapshot_figure(&last, "written").unwrap() - snapshot_figure(&first, "written").unwrap();
    let elapsed = uptime(&last) - uptime(&first);
    let rate = written / elapsed;
    eprintln!("figure: {written} snapshots in {elapsed:.1} s ({rate:.3}/s); {reads} reads of latest_image.jpg, {distinct} changes seen");
    assert!((0.9..=1.1).contains(&rate), "{written} snapshots in {elapsed:.1} s\n{}", d.log());
    assert_eq!(snapshot_figure(&last, "dropped"), Some(0.0), "{last}");
    assert!(reads > 100, "the reader hardly read: {reads}");

    // Every file is a whole JPEG at the camera's size, named in recording order; the link
    // points at the newest.
    let files = snapshots(&dir);
    assert!(files.len() as f64 >= written, "{files:?}");
    for f in &files {
        check_jpeg(&fs::read(dir.join(f)).unwrap(), 640, 360).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let target = fs::read_link(dir.join("latest_image.jpg")).unwrap();
    let newest = snapshots(&dir).pop().unwrap();
    assert!(target.to_str() == Some(newest.as_str()) || files.contains(&target.display().to_string()));

    // /metrics carries the same counters.
    let out = run_with_timeout(
        std::process::Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/metrics", d.http_port)]),
        Duration::from_secs(10),
    );
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("uavstream_snapshots_written_total{camera=\"camera1\"}"), "{metrics}");
    drop(d);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn retention_keeps_the_snapshot_directory_under_its_size_and_numbering_continues_after_a_restart() {
    let dir = temp_dir("retention");
    let dir_s = dir.display().to_string();
    let args = [
        "--width",
        "320",
        "--height",
        "240",
        "--snapshot-dir",
        &dir_s,
        "--snapshot-interval",
        "0.1",
        "--snapshot-max-size",
        "100k",
    ];
    let d = Daemon::start(&args);
    let t = Instant::now();
    while snapshot_figure(&status(&d), "deleted").unwrap_or(0.0) < 5.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "retention never deleted:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(d);
    let files = snapshots(&dir);
    let total: u64 = files.iter().map(|f| fs::metadata(dir.join(f)).unwrap().len()).sum();
    let largest = files.iter().map(|f| fs::metadata(dir.join(f)).unwrap().len()).max().unwrap();
    // Retention runs before each write (the unit test covers the rule): at most one file over.
    assert!(total <= 100 * 1024 + largest, "{total} bytes in {} files", files.len());
    let before: u64 = files.last().unwrap()[..10].parse().unwrap();

    let d = Daemon::start(&args);
    let t = Instant::now();
    while snapshot_figure(&status(&d), "written").unwrap_or(0.0) < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no snapshot after restart:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    let after: u64 = snapshots(&dir).last().unwrap()[..10].parse().unwrap();
    assert!(after > before, "numbering went from {before} to {after}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_pauses_snapshots_while_rtsp_streams_on_and_they_resume() {
    let disk =
        common::record::Tmpfs::mount("snapshots-full", "1m").expect("cannot mount a tmpfs: this test needs root");
    let dir_s = disk.0.display().to_string();
    let d = Daemon::start(&[
        "--width",
        "640",
        "--height",
        "360",
        "--snapshot-dir",
        &dir_s,
        "--snapshot-interval",
        "0.1",
        "--snapshot-min-free",
        "0",
    ]);
    let mut client = RtspClient::connect(&d.url());
    client.play_tcp();
    let (mut last_seq, mut packets) = (None::<u16>, 0u64);
    let mut read_until = |what: &str, done: &mut dyn FnMut() -> bool| {
        let t = Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {what}:\n{}", d.log());
            let f = client.next_frame().unwrap_or_else(|| panic!("stream ended:\n{}", d.log()));
            if f.channel != 0 {
                continue;
            }
            let seq = common::rtp_seq(&f.data);
            if let Some(l) = last_seq {
                assert_eq!(seq, l.wrapping_add(1), "RTP packet lost while the disk was full");
            }
            last_seq = Some(seq);
            packets += 1;
        }
    };
    read_until("the pause", &mut || d.log().contains("snapshots paused"));
    let st = status(&d);
    assert_eq!(snapshot_figure(&st, "paused"), None, "paused is a boolean: {st}");
    assert!(st.contains("\"paused\":true"), "{st}");
    let written = snapshot_figure(&st, "written").unwrap();
    // Room again.
    for f in snapshots(&disk.0) {
        let _ = fs::remove_file(disk.0.join(f));
    }
    read_until("the resume", &mut || d.log().contains("snapshots resumed"));
    read_until("new snapshots", &mut || snapshot_figure(&status(&d), "written").unwrap_or(0.0) > written + 2.0);
    let data = fs::read(disk.0.join("latest_image.jpg")).unwrap();
    check_jpeg(&data, 640, 360).unwrap();
    eprintln!("figure: {packets} RTP packets in sequence through a full disk and back");
    drop(d);
}

#[test]
fn bad_snapshot_settings_exit_2_naming_the_key() {
    for (args, key) in [
        (&["--snapshot-dir", "/tmp/x", "--snapshot-interval", "0"][..], "snapshot-interval"),
        (&["--snapshot-dir", "/tmp/x", "--snapshot-max-size", "lots"][..], "snapshot-max-size"),
        (&["--snapshot-dir", "/tmp/x", "--snapshot-quality", "0"][..], "snapshot-quality"),
        (&["--source", "file:/nonexistent.h264", "--snapshot-dir", "/tmp/x"][..], "snapshot-dir"),
    ] {
        let out = run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_uavstream")).args(args).env("UAVSTREAM_PROC_CMDLINE", ""),
            Duration::from_secs(10),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err}");
    }
}
