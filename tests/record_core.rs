//! The recorder end to end: the real writer thread fed with real H.264 access units (OpenH264,
//! test pattern) into a temporary directory, then checked by ffprobe/ffmpeg, which nobody here
//! wrote. Also crash safety: a child process recording is SIGKILLed at random moments, and
//! every file left behind must play.
#![cfg(feature = "software")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::record::{complete_prefix, ffprobe, parse_complete, segments, Tmpfs};
use uavstream::encode::software::{encode_frame, new_encoder, EncoderSettings};
use uavstream::media::h264::{annex_b, nal_type, nal_unit_type};
use uavstream::record::naming::parse_segment_name;
use uavstream::record::repair::{repair, Repair};
use uavstream::record::writer::LATEST;
use uavstream::record::{FsyncPolicy, Recorder, RecorderSettings, RecorderState};
use uavstream::source::testpattern::TestPattern;

const FPS: u64 = 30;

/// `n` access units of the moving test pattern, an IDR every `gop` frames.
fn encode_units(width: u32, height: u32, gop: u32, n: u64) -> Vec<(Vec<u8>, bool)> {
    let s = EncoderSettings { width, height, fps: FPS as u32, bitrate: 500_000, idr_period: gop, frame_skip: false };
    let mut enc = new_encoder(&s).unwrap();
    let mut pattern = TestPattern::new(width as usize, height as usize);
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        pattern.render(i);
        let mut au = Vec::new();
        encode_frame(&mut enc, &pattern, Duration::from_millis(i * 1000 / FPS), false, &mut au).unwrap();
        assert!(!au.is_empty(), "frame {i} skipped by the encoder");
        let idr = annex_b(&au).any(|n| nal_unit_type(n) == Some(nal_type::IDR));
        out.push((au, idr));
    }
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uavstream-record-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 20 s of the test pattern into 5 s segments: every segment probes clean and plays in
/// GStreamer, durations add up within a frame, and ffmpeg's concat demuxer decodes across
/// segments with no gap.
#[test]
fn twenty_seconds_in_five_second_segments_play_back_to_back() {
    let dir = temp_dir("segments");
    let units = encode_units(320, 240, 30, 20 * FPS);
    let mut settings = RecorderSettings::new(&dir);
    settings.segment = Duration::from_secs(5);
    settings.min_free = None;
    let mut rec = Recorder::start(settings, true).unwrap();
    let t0 = Instant::now();
    for (i, (au, idr)) in units.iter().enumerate() {
        rec.push(au, t0 + Duration::from_micros(i as u64 * 1_000_000 / FPS), *idr);
        // Faster than real time, but never more than ~2 fragments (60 units) ahead of the
        // writer, so the queue (96) cannot overflow however slow fsync is on a loaded machine.
        let gops_pushed = (i as u64 + 1) / FPS;
        if (i as u64 + 1) % FPS == 0 && gops_pushed >= 2 {
            wait_for("the writer to catch up", || rec.status().fragments >= gops_pushed - 2);
        }
    }
    wait_for("three closed segments", || rec.status().segments >= 3);
    let status = rec.status();
    assert_eq!(status.state, RecorderState::Recording);
    assert_eq!(status.dropped_units, 0);
    drop(rec); // closes the last segment

    let segs = segments(&dir);
    assert_eq!(segs.len(), 4, "{segs:?}");
    let latest = fs::read_link(dir.join(LATEST)).unwrap();
    assert_eq!(latest, Path::new(segs[3].file_name().unwrap()));
    let mut total = 0.0;
    let mut total_frames = 0;
    for s in &segs {
        let (samples, ticks) = parse_complete(s);
        assert_eq!(samples, 5 * FPS, "{}", s.display());
        let p = ffprobe(&[s.to_str().unwrap()]);
        assert!(p.errors.is_empty(), "{}: {}", s.display(), p.errors);
        assert_eq!(p.frames, 5 * FPS, "{}", s.display());
        assert!((p.duration - ticks as f64 / 90_000.0).abs() < 0.002, "{}: {}", s.display(), p.duration);
        total += p.duration;
        total_frames += p.frames;
        // GStreamer's demuxer too (the stack inside QGroundControl).
        let out = Command::new("gst-launch-1.0")
            .args(["-q", "filesrc", &format!("location={}", s.display()), "!", "qtdemux", "!", "h264parse"])
            .args(["!", "avdec_h264", "!", "fakesink"])
            .output()
            .expect("gst-launch-1.0 (scripts/test installs GStreamer)");
        assert!(out.status.success(), "{}: {}", s.display(), String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(total_frames, 20 * FPS);
    assert!((total - 20.0).abs() <= 1.0 / FPS as f64 + 1e-6, "durations add up to {total}");

    // Across segments: concat decodes every frame, no errors, timestamps one frame apart.
    let list = dir.join("list.txt");
    let body: String = segs.iter().map(|s| format!("file '{}'\n", s.display())).collect();
    fs::write(&list, body).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "concat", "-safe", "0", "-i", list.to_str().unwrap(), "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-f", "concat", "-safe", "0", "-i", list.to_str().unwrap()])
        .args(["-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .output()
        .unwrap();
    let pts: Vec<f64> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pts.len() as u64, 20 * FPS);
    for w in pts.windows(2) {
        assert!((w[1] - w[0] - 1.0 / FPS as f64).abs() < 0.002, "gap between frames at {}: {}", w[0], w[1] - w[0]);
    }
    let _ = fs::remove_dir_all(&dir);
}

/// A file cut at any point (a power cut) is repaired to its last whole fragment, which plays.
#[test]
fn repair_cuts_any_truncation_back_to_the_last_whole_fragment() {
    let dir = temp_dir("repair");
    let units = encode_units(160, 120, 15, 3 * FPS);
    let mut settings = RecorderSettings::new(&dir);
    settings.fragment = Duration::from_millis(250);
    settings.min_free = None;
    settings.fsync = FsyncPolicy::Off;
    let mut rec = Recorder::start(settings, true).unwrap();
    let t0 = Instant::now();
    for (i, (au, idr)) in units.iter().enumerate() {
        rec.push(au, t0 + Duration::from_micros(i as u64 * 1_000_000 / FPS), *idr);
    }
    drop(rec);
    let seg = segments(&dir).pop().unwrap();
    let whole = fs::read(&seg).unwrap();
    let cut_path = dir.join("cut.mp4");
    let mut cuts: Vec<usize> = (0..40).map(|k| k * whole.len() / 40).collect();
    cuts.extend([whole.len() - 1, whole.len()]);
    for cut in cuts {
        fs::write(&cut_path, &whole[..cut]).unwrap();
        let (good, samples) = complete_prefix(&whole[..cut]);
        let r = repair(&cut_path).unwrap();
        match r {
            Repair::Intact => assert_eq!(good, cut),
            Repair::Unplayable => assert_eq!(samples, 0, "cut {cut}"),
            Repair::Truncated { to, .. } => {
                assert_eq!(to as usize, good, "cut {cut}");
                assert_eq!(fs::read(&cut_path).unwrap(), &whole[..good]);
            }
        }
        if samples > 0 && cut % 3 == 0 {
            let p = ffprobe(&[cut_path.to_str().unwrap()]);
            assert!(p.errors.is_empty(), "cut {cut}: {}", p.errors);
            assert_eq!(p.frames, samples, "cut {cut}");
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

const CHILD_ENV: &str = "UAVSTREAM_TEST_RECORD_CHILD_DIR";

/// Not a test on its own: the body of the child process of the crash test (runs only when the
/// environment names a directory), recording until it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let units = encode_units(160, 120, 15, 2 * FPS);
    let mut settings = RecorderSettings::new(&dir);
    settings.segment = Duration::from_secs(1);
    settings.fragment = Duration::from_millis(250);
    settings.min_free = None;
    let mut rec = Recorder::start(settings, true).unwrap();
    let t0 = Instant::now();
    for i in 0.. {
        let (au, idr) = &units[i % units.len()];
        rec.push(au, t0 + Duration::from_micros(i as u64 * 1_000_000 / FPS), *idr);
        std::thread::sleep(Duration::from_millis(8));
    }
}

/// A cheap random number without a crate: the std hasher is randomly keyed per process.
fn random_below(n: u64, salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish() % n
}

/// SIGKILL a recording process at random moments (once with slow fsyncs, so the kill lands
/// inside a fragment's fsync): after each kill every closed segment plays, the open one plays
/// up to its last whole fragment, and latest_video.mp4 points at a complete segment.
#[test]
fn sigkill_at_random_moments_leaves_only_playable_files() {
    let dir = temp_dir("crash");
    let exe = std::env::current_exe().unwrap();
    let mut probed_closed = std::collections::HashSet::new();
    let rounds = 12;
    for round in 0..rounds {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let slow = round == rounds - 1;
        if slow {
            cmd.env("UAVSTREAM_RECORD_FSYNC_DELAY_MS", "300");
        }
        let mut child = cmd.spawn().unwrap();
        let wait = Duration::from_millis(400 + random_below(1600, round));
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let segs = segments(&dir);
        // A child slow to start on a loaded machine may be killed before its first segment.
        let Some((open, closed)) = segs.split_last() else { continue };
        for s in closed {
            parse_complete(s);
            if probed_closed.insert(s.clone()) {
                let p = ffprobe(&[s.to_str().unwrap()]);
                assert!(p.errors.is_empty() && p.frames > 0, "round {round}: {}: {}", s.display(), p.errors);
            }
        }
        // The open one: whatever whole fragments it has play; the next child cuts off the rest.
        let data = fs::read(open).unwrap();
        let (good, samples) = complete_prefix(&data);
        if samples > 0 {
            let prefix = dir.join("prefix.bin");
            fs::write(&prefix, &data[..good]).unwrap();
            let p = ffprobe(&["-f", "mp4", prefix.to_str().unwrap()]);
            assert!(p.errors.is_empty(), "round {round}: open segment: {}", p.errors);
            assert_eq!(p.frames, samples, "round {round}: open segment");
            fs::remove_file(&prefix).unwrap();
        }
        if let Ok(target) = fs::read_link(dir.join(LATEST)) {
            let target = dir.join(target);
            assert!(closed.contains(&target) || target == *open, "round {round}: latest -> {}", target.display());
            let (samples, _) = parse_complete(&target);
            assert!(samples > 0);
        } else {
            assert!(closed.is_empty(), "round {round}: closed segments but no {LATEST}");
        }
        let _ = wait;
    }
    assert!(probed_closed.len() >= 5, "only {} closed segments in {rounds} rounds", probed_closed.len());
    let _ = fs::remove_dir_all(&dir);
}

/// Disk full: recording pauses (the segment being written is cut back to its last whole
/// fragment and closed, so it plays) while units keep being pushed, and recording resumes at
/// an IDR once files are removed.
#[test]
fn disk_full_pauses_and_resumes_when_space_returns() {
    let Some(fs_) = Tmpfs::mount("full", "3m") else { return };
    let dir = fs_.0.clone();
    let s = EncoderSettings { width: 320, height: 240, fps: 30, bitrate: 4_000_000, idr_period: 15, frame_skip: false };
    let units = {
        let mut enc = new_encoder(&s).unwrap();
        let mut pattern = TestPattern::new(320, 240);
        (0..60u64)
            .map(|i| {
                pattern.render(i * 7);
                let mut au = Vec::new();
                encode_frame(&mut enc, &pattern, Duration::from_millis(i * 33), false, &mut au).unwrap();
                let idr = annex_b(&au).any(|n| nal_unit_type(n) == Some(nal_type::IDR));
                (au, idr)
            })
            .collect::<Vec<_>>()
    };
    let mut settings = RecorderSettings::new(&dir);
    settings.segment = Duration::from_secs(1);
    settings.fragment = Duration::from_millis(250);
    settings.min_free = None;
    let mut rec = Recorder::start(settings, true).unwrap();
    let t0 = Instant::now();
    let mut i = 0usize;
    let mut push_until = |rec: &mut Recorder, what: &str, f: &dyn Fn(&Recorder) -> bool| {
        let start = Instant::now();
        while !f(rec) {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}: {:?}", rec.status());
            let (au, idr) = &units[i % units.len()];
            rec.push(au, t0 + Duration::from_micros(i as u64 * 1_000_000 / FPS), *idr);
            i += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
    };
    push_until(&mut rec, "a disk-full pause", &|r| r.status().state == RecorderState::PausedDiskFull);
    let status = rec.status();
    assert!(status.last_error.as_deref().unwrap_or("").contains("disk full"), "{status:?}");
    let closed_before = status.segments;
    assert!(closed_before >= 1, "{status:?}");
    for s in segments(&dir) {
        let (samples, _) = parse_complete(&s);
        assert!(samples > 0, "{}", s.display());
    }
    let latest = dir.join(fs::read_link(dir.join(LATEST)).unwrap());
    parse_complete(&latest);

    // Make room: recording resumes and closes new segments.
    for s in segments(&dir) {
        fs::remove_file(s).unwrap();
    }
    push_until(&mut rec, "recording to resume", &|r| r.status().segments >= closed_before + 2);
    assert_eq!(rec.status().state, RecorderState::Recording);
    drop(rec);
    for s in segments(&dir) {
        let p = ffprobe(&[s.to_str().unwrap()]);
        assert!(p.errors.is_empty() && p.frames > 0, "{}: {}", s.display(), p.errors);
    }
}

/// `record-min-free`: retention deletes the oldest segments to keep the floor, recording goes
/// on, and the newest closed segment is never deleted.
#[test]
fn free_space_floor_deletes_oldest_segments() {
    let Some(fs_) = Tmpfs::mount("floor", "4m") else { return };
    let dir = fs_.0.clone();
    let units = encode_units(320, 240, 15, 2 * FPS);
    let mut settings = RecorderSettings::new(&dir);
    settings.segment = Duration::from_millis(500);
    settings.fragment = Duration::from_millis(250);
    settings.min_free = Some(3 * 1024 * 1024);
    let mut rec = Recorder::start(settings, true).unwrap();
    let t0 = Instant::now();
    let mut i = 0usize;
    while rec.status().deleted_segments < 3 {
        assert!(i < 20_000, "no deletion: {:?}", rec.status());
        let (au, idr) = &units[i % units.len()];
        rec.push(au, t0 + Duration::from_micros(i as u64 * 1_000_000 / FPS), *idr);
        i += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = rec.status();
    assert_eq!(status.state, RecorderState::Recording, "{status:?}");
    drop(rec);
    let segs = segments(&dir);
    let first = parse_segment_name(segs[0].file_name().unwrap().to_str().unwrap()).unwrap().sequence;
    assert!(first >= 3, "oldest deleted first: {segs:?}");
    assert!(dir.join(fs::read_link(dir.join(LATEST)).unwrap()).exists());
}

/// CPU time (user + system) of this process so far, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ = 100
}

/// Figures for the closing note, not a timed test: recording a 1920x1080 30 fps 8 Mbit/s
/// stream (real SPS/PPS from OpenH264, slices of the sizes such a stream has: a 120 KB IDR per
/// second and ~30 KB P-frames) in real time for 10 s per fsync policy.
/// `cargo test --release --test record_core -- --ignored --nocapture figures`
#[test]
#[ignore]
fn figures_1080p30_8mbit() {
    let s =
        EncoderSettings { width: 1920, height: 1080, fps: 30, bitrate: 8_000_000, idr_period: 30, frame_skip: false };
    let mut enc = new_encoder(&s).unwrap();
    let mut first = Vec::new();
    encode_frame(&mut enc, &TestPattern::new(1920, 1080), Duration::ZERO, true, &mut first).unwrap();
    let params: Vec<u8> = annex_b(&first)
        .filter(|n| matches!(nal_unit_type(n), Some(7 | 8)))
        .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
        .collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut slice = |nal_header: u8, len: usize| {
        let mut v = vec![0, 0, 0, 1, nal_header];
        v.extend((0..len).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        }));
        v
    };
    let idr = [params.clone(), slice(0x65, 120_000)].concat();
    let ps: Vec<Vec<u8>> = (0..29).map(|_| slice(0x41, 30_300)).collect();
    let bytes_per_s: usize = idr.len() + ps.iter().map(Vec::len).sum::<usize>();
    eprintln!("stream: {:.2} Mbit/s", bytes_per_s as f64 * 8.0 / 1e6);
    for policy in [FsyncPolicy::Fragment, FsyncPolicy::Segment, FsyncPolicy::Off] {
        let dir = temp_dir("figures");
        let mut settings = RecorderSettings::new(&dir);
        settings.segment = Duration::from_secs(5);
        settings.fsync = policy;
        let mut rec = Recorder::start(settings, true).unwrap();
        let (cpu0, t0) = (cpu_time(), Instant::now());
        let frames = 10 * FPS;
        for i in 0..frames {
            let at = t0 + Duration::from_micros(i * 1_000_000 / FPS);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let au = if i % FPS == 0 { &idr } else { &ps[(i % FPS - 1) as usize] };
            rec.push(au, at, i % FPS == 0);
        }
        std::thread::sleep(Duration::from_millis(100));
        let st = rec.status();
        drop(rec);
        let wall = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        let written: u64 = segments(&dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        eprintln!(
            "fsync={policy:?}: {:.1} s, {:.2} MB/s written, CPU {:.1} % of one core, dropped {}, \
             {} fsyncs: mean {:.2} ms, max {:.2} ms",
            wall.as_secs_f64(),
            written as f64 / wall.as_secs_f64() / 1e6,
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
            st.dropped_units,
            st.fsyncs,
            st.fsync_total_us as f64 / st.fsyncs.max(1) as f64 / 1000.0,
            st.fsync_max_us as f64 / 1000.0
        );
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Start and stop at run time: nothing is written while stopped, start records from the next
/// IDR, stop closes the segment at once (playable, latest_video.mp4 updated), and counters say so.
#[test]
fn start_and_stop_at_run_time() {
    let dir = temp_dir("startstop");
    let units = encode_units(160, 120, 15, 2 * FPS);
    let mut settings = RecorderSettings::new(&dir);
    settings.min_free = None;
    let mut rec = Recorder::start(settings, false).unwrap();
    let t0 = Instant::now();
    let mut i = 0u64;
    let mut feed = |rec: &mut Recorder, n: u64| {
        for _ in 0..n {
            let (au, idr) = &units[(i % units.len() as u64) as usize];
            rec.push(au, t0 + Duration::from_micros(i * 1_000_000 / FPS), *idr);
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    feed(&mut rec, 20);
    assert_eq!(rec.status().state, RecorderState::Stopped);
    assert!(segments(&dir).is_empty());

    rec.set_recording(true);
    wait_for("recording", || rec.status().state == RecorderState::Recording);
    feed(&mut rec, 40);
    wait_for("a fragment", || rec.status().fragments >= 1);
    rec.set_recording(false);
    wait_for("stopped", || rec.status().state == RecorderState::Stopped);
    let st = rec.status();
    assert_eq!((st.segments, st.current.as_deref()), (1, None), "{st:?}");
    let segs = segments(&dir);
    assert_eq!(segs.len(), 1);
    let (samples, _) = parse_complete(&segs[0]);
    // From the first IDR after start (frame 30) to the last unit pushed (frame 59).
    assert_eq!(samples, 30);
    assert_eq!(dir.join(fs::read_link(dir.join(LATEST)).unwrap()), segs[0]);
    feed(&mut rec, 20);
    rec.set_recording(true);
    feed(&mut rec, 40);
    drop(rec);
    assert_eq!(segments(&dir).len(), 2);
    let _ = fs::remove_dir_all(&dir);
}
