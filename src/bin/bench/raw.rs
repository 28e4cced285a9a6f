//! Capture → consumer latency of the raw-frame socket (`raw-socket`): the daemon runs the test
//! pattern at the given size and rate (and encodes its H.264 stream as usual), N consumers
//! (threads of this process, the crate's `RawClient`) receive every frame they can, and the
//! latency of each frame is CLOCK_MONOTONIC at receipt minus the header's capture time.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use argh::FromArgs;
use uavstream::raw::client::RawClient;

use super::peers::Server;

/// raw-frame socket: capture → consumer latency with 1 and 10 consumers
#[derive(FromArgs)]
#[argh(subcommand, name = "raw")]
pub struct RawArgs {
    /// comma-separated consumer counts [1,10]
    #[argh(option, default = "String::from(\"1,10\")")]
    consumers: String,
    /// frame size WxH [1920x1080]
    #[argh(option, default = "String::from(\"1920x1080\")")]
    size: String,
    /// frames per second [30]
    #[argh(option, default = "30")]
    fps: u32,
    /// seconds measured per run, after 1 s of warm-up [10]
    #[argh(option, default = "10")]
    seconds: u64,
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

/// (latencies in µs, frames skipped) of one consumer over `seconds` after a warm-up.
fn consume(sock: &Path, seconds: u64) -> (Vec<u32>, u64) {
    let Ok(c) = RawClient::connect(sock) else { return (Vec::new(), 0) };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let start = Instant::now();
    let (mut lat, mut first_skipped, mut last_skipped) = (Vec::new(), None, 0);
    while start.elapsed() < Duration::from_secs(1 + seconds) {
        let Ok(Some(f)) = c.recv() else { break };
        let now = monotonic_ns();
        if start.elapsed() < Duration::from_secs(1) {
            continue;
        }
        first_skipped.get_or_insert(f.header.skipped);
        last_skipped = f.header.skipped;
        lat.push((now.saturating_sub(f.header.capture_ns) / 1000) as u32);
    }
    (lat, last_skipped - first_skipped.unwrap_or(last_skipped))
}

pub fn run_args(bin: &Path, a: &RawArgs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "raw-frame socket, test pattern {} @ {} fps (H.264 stream encoded alongside), {} s per run",
        a.size, a.fps, a.seconds
    );
    let _ = writeln!(
        out,
        "{:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "consumers", "frames", "p50 ms", "p99 ms", "max ms", "skipped", "cpu %"
    );
    let Some((w, h)) = a.size.split_once('x') else {
        return format!("bad size {:?}: want WxH\n", a.size);
    };
    for n in a.consumers.split(',').filter_map(|n| n.trim().parse::<usize>().ok()) {
        let dir = std::env::temp_dir().join(format!("uavstream-bench-raw-{}-{n}", std::process::id()));
        let sock = dir.join("raw.sock");
        let fps = a.fps.to_string();
        let clients = n.to_string();
        let port = super::free_port();
        let server = Server::uavstream(
            bin,
            port,
            &["--width", w, "--height", h, "--fps", &fps, "--raw-socket", sock.to_str().unwrap_or_default()]
                .into_iter()
                .chain(["--raw-clients", &clients])
                .collect::<Vec<_>>(),
        );
        let t = Instant::now();
        while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let cpu0 = server.cpu_ticks();
        let t0 = Instant::now();
        let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n).map(|_| s.spawn(|| consume(&sock, a.seconds))).collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let cpu = (server.cpu_ticks() - cpu0) as f64 / t0.elapsed().as_secs_f64();
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
        let mut all: Vec<u32> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
        let skipped: u64 = results.iter().map(|(_, s)| s).sum();
        all.sort_unstable();
        let pick = |q: f64| all.get(((all.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{n:>9} {:>10} {:>9.2} {:>9.2} {:>9.2} {skipped:>9} {cpu:>8.0}",
            all.len(),
            f64::from(pick(0.5)) / 1000.0,
            f64::from(pick(0.99)) / 1000.0,
            f64::from(all.last().copied().unwrap_or(0)) / 1000.0
        );
    }
    out
}
