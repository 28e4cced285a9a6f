//! Adaptive bitrate on an emulated link (network namespace, veth, `tc tbf`; see
//! `common/link_abr.rs`): a GStreamer `rtspsrc` receiver (it sends RTCP receiver reports) plays
//! a stream that is more than the link carries, and the encoder comes down under the cap.
//!
//! `bench_abr_*` (ignored; `scripts/bench-abr` runs them) print the figures of the README.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::link_abr::{json_number, unavailable, Link};

/// A GStreamer receiver over UDP, decoding, counting rendered frames (`fpsdisplaysink`).
struct Gst {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Gst {
    fn start(url: &str) -> Gst {
        let location = format!("location={url}");
        let mut child = Command::new("gst-launch-1.0")
            .args(["-v", "rtspsrc", &location, "protocols=udp", "latency=0", "!", "rtph264depay", "!", "h264parse"])
            .args(["!", "avdec_h264", "!", "fpsdisplaysink", "video-sink=fakesink", "text-overlay=false", "sync=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gst-launch-1.0 (gstreamer1.0-tools)");
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    // Keep the tail only: fpsdisplaysink reports twice a second.
                    if o.len() > 1 << 20 {
                        let cut = o.len() - (1 << 19);
                        o.drain(..cut);
                    }
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Gst { child, out }
    }

    /// Frames rendered so far, as `fpsdisplaysink` last said.
    fn rendered(&self) -> u64 {
        let o = self.out.lock().unwrap();
        o.rfind("rendered: ")
            .and_then(|i| o[i + 10..].split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn output(&self) -> String {
        let o = self.out.lock().unwrap();
        o[o.len().saturating_sub(4000)..].to_owned()
    }
}

impl Drop for Gst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What /status says of the stream's ABR and its one session.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    target: f64,
    playing: bool,
    reports: f64,
    lost: f64,
    highest: f64,
}

fn snapshot(link: &Link) -> Snapshot {
    let s = link.http_get("/status");
    let num = |after: &str, key: &str| json_number(&s, after, key).unwrap_or(0.0);
    Snapshot {
        target: num("\"abr\":", "target_bps"),
        playing: s.contains("\"state\":\"playing\""),
        reports: num("\"sessions\":", "reports"),
        lost: num("\"sessions\":", "cumulative_lost"),
        highest: num("\"sessions\":", "highest_sequence"),
    }
}

/// Polls /status every 250 ms until `f` holds; `None` after `limit`.
fn wait_for(link: &Link, limit: Duration, f: impl Fn(&Snapshot) -> bool) -> Option<(Snapshot, Instant)> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let s = snapshot(link);
        if f(&s) {
            return Some((s, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

#[test]
fn a_4_mbit_stream_settles_under_a_3_mbit_cap_within_10_s_and_then_loses_under_1_percent() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let link = Link::create().expect("emulated link");
    link.set_rate(Some(3000)).unwrap();
    let mut d = link.start_daemon(&["--bitrate", "4M", "--abr", "on", "--width", "1280", "--height", "720"]);
    let mut gst = Gst::start(&link.url("/live"));
    let Some((_, playing)) = wait_for(&link, Duration::from_secs(20), |s| s.playing) else {
        panic!("no session playing:\n{}\nserver:\n{}", gst.output(), d.log_for_failure());
    };
    let settled = wait_for(&link, Duration::from_secs(10), |s| s.target > 0.0 && s.target < 3_000_000.0);
    let Some((at_settle, settled_at)) = settled else {
        panic!("ABR target not under 3000 kbit/s within 10 s of PLAY: {:?}\nserver:\n{}", snapshot(&link), d.log());
    };
    eprintln!("settled {:.1} s after PLAY at {} kbit/s", (settled_at - playing).as_secs_f64(), at_settle.target / 1e3);
    // Loss measured from the second receiver report after settling on (the first may still
    // cover the time before the cut), over two more reports.
    let from = wait_for(&link, Duration::from_secs(20), |s| s.reports >= at_settle.reports + 2.0)
        .unwrap_or_else(|| panic!("no receiver reports after settling:\n{}", d.log()))
        .0;
    let frames_from = gst.rendered();
    let to = wait_for(&link, Duration::from_secs(25), |s| s.reports >= from.reports + 2.0)
        .unwrap_or_else(|| panic!("receiver reports stopped:\n{}", d.log()))
        .0;
    let frames = gst.rendered() - frames_from;
    let packets = to.highest - from.highest;
    let lost = to.lost - from.lost;
    eprintln!(
        "after settling: {packets} packets, {lost} lost, {frames} frames rendered; target {} kbit/s",
        to.target / 1e3
    );
    assert!(packets > 1000.0, "too few packets between reports: {from:?} {to:?}");
    assert!(lost / packets < 0.01, "loss after settling {:.2} %:\n{}", 100.0 * lost / packets, d.log());
    assert!(to.target < 3_000_000.0, "the target went back over the cap: {to:?}\n{}", d.log());
    assert!(gst.running() && frames > 60, "the receiver stopped playing ({frames} frames):\n{}", gst.output());
    assert!(d.log().contains("abr: /live 4000 → "), "the cut is logged with its reason:\n{}", d.log());
}
