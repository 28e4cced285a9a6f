//! Benchmarks that print figures side by side with a peer, in the same run. Not a test: nothing
//! here asserts on time.
//!
//! - `encoder`: the software H.264 encoder (OpenH264, as the daemon configures it) against
//!   ffmpeg's libx264 `-preset ultrafast -tune zerolatency`, both single-threaded, on the same raw
//!   clip at the same bitrate: frames/s, PSNR, bitrate.
//! - `server`: uavstream's `file:` source against gst-rtsp-server (shared media factory) serving
//!   the same 1080p30 8 Mbit/s 1-s-GOP clip, with N = 1, 10, 50, 100, 300 UDP and 1, 10, 50 TCP
//!   clients of our own load client: server CPU %, RSS, loss, time to first IDR, server-added
//!   latency, and the uavstream/peer ratios; for each UDP N also the kernel's floor (the same
//!   packets sent with the daemon's send call alone, `bench/floor.rs`) and the ratio to it.
//! - `join`: late joiners against a live encoder on both servers, and against a passthrough
//!   (file) stream: time from PLAY to the first IDR packet, and P-slices before it.
//! - `mjpeg`: 720p30 MJPEG vs H.264 on the test pattern: bytes per frame and encoder CPU time per
//!   frame (jpeg-encoder at `--jpeg-quality` vs OpenH264 at the daemon's default bitrate), then
//!   the whole daemon's CPU with `--codec mjpeg` and `--codec h264`.
//! - `delivery`: the live software encoders as a client sees them, per size and bitrate: frames
//!   read over RTSP/TCP with ffprobe, missing frames (from RTP timestamp gaps), the bitrate
//!   against the target, and the daemon's own dropped-frame counter.
//! - `scale`: the software scaler against ffmpeg's swscale (`flags=area`): ms per frame.
//! - `latency`: capture → decoded pixels of the time-coded test pattern, read back from frames
//!   decoded by ffmpeg and GStreamer, against gst-rtsp-server fed the same pattern (see
//!   `bench/latency.rs`); with `--url`, one client of a running daemon (`scripts/bench-lossy`).
//! - `raw`: the raw-frame socket, capture → consumer latency p50/p99/max with 1 and 10
//!   consumers at 1920x1080 30 fps, frames each consumer was skipped, and the daemon's CPU.
//!   No peer: the figure is against the issue's 10 ms target.
//! - `all`: the first three, in one run.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/latency.rs"]
mod latency;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/peers.rs"]
mod peers;
#[path = "bench/raw.rs"]
mod raw;
#[path = "bench/scale.rs"]
mod scale;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use uavstream::encode::software::{encode_frame_i420, new_encoder, EncoderSettings};

/// uavstream benchmarks
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Encoder(EncoderArgs),
    Server(ServerArgs),
    Join(JoinArgs),
    All(AllArgs),
    Soak(SoakArgs),
    Mjpeg(MjpegArgs),
    Delivery(DeliveryArgs),
    Scale(scale::ScaleArgs),
    Latency(latency::LatencyArgs),
    Raw(raw::RawArgs),
}

/// frames delivered and bitrate of the live encoders, per size and bitrate
#[derive(FromArgs)]
#[argh(subcommand, name = "delivery")]
struct DeliveryArgs {
    /// comma-separated WxH sizes [320x240,640x360,1280x720,1920x1080]
    #[argh(option, default = "String::from(\"320x240,640x360,1280x720,1920x1080\")")]
    sizes: String,
    /// comma-separated bitrates in bit/s [300000,1000000,2000000,8000000]
    #[argh(option, default = "String::from(\"300000,1000000,2000000,8000000\")")]
    bitrates: String,
    /// codec: h264, or mjpeg (one run per size; the bitrate does not apply) [h264]
    #[argh(option, default = "String::from(\"h264\")")]
    codec: String,
    /// frames per second [30]
    #[argh(option, default = "30")]
    fps: u32,
    /// seconds read per stream, after 2 s of warm-up [20]
    #[argh(option, default = "20")]
    seconds: u32,
}

/// 720p30 MJPEG vs H.264: bytes per frame and CPU
#[derive(FromArgs)]
#[argh(subcommand, name = "mjpeg")]
struct MjpegArgs {
    /// frames encoded per codec [150]
    #[argh(option, default = "150")]
    frames: u32,
    /// JPEG quality [80]
    #[argh(option, default = "80")]
    quality: u8,
    /// bitrate of the H.264 encoder in bit/s, the daemon's default [2000000]
    #[argh(option, default = "2_000_000")]
    bitrate: u32,
    /// seconds each daemon runs for its CPU figure [10]
    #[argh(option, default = "10")]
    seconds: u64,
}

/// long run: 16 clients plus churn; RSS, fds and slot use every minute
#[derive(FromArgs)]
#[argh(subcommand, name = "soak")]
struct SoakArgs {
    /// minutes to run [30]
    #[argh(option, default = "30")]
    minutes: u64,
    /// seconds between reports [60]
    #[argh(option, default = "60")]
    report_every: u64,
}

/// uavstream vs gst-rtsp-server serving the same clip to many clients
#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
struct ServerArgs {
    /// seconds counted per run [6]
    #[argh(option, default = "6")]
    seconds: u64,
    /// working directory [a temporary directory]
    #[argh(option)]
    workdir: Option<PathBuf>,
    /// only the UDP runs (N = 1, 10, 50, 100, 300), not TCP
    #[argh(switch)]
    udp_only: bool,
    /// uavstream's fanout-threads, one uavstream row each, comma-separated, e.g. 1,2 [1]
    #[argh(option, default = "String::from(\"1\")")]
    fanout_threads: String,
    /// only these client counts, comma-separated, e.g. 100,300 [all]
    #[argh(option)]
    clients: Option<String>,
}

impl ServerArgs {
    fn defaults() -> ServerArgs {
        ServerArgs { seconds: 6, workdir: None, udp_only: false, fanout_threads: "1".into(), clients: None }
    }
}

/// A comma-separated list of numbers; exits 2 naming the option on a bad one.
fn number_list(option: &str, v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| {
            x.trim().parse().unwrap_or_else(|_| {
                eprintln!("--{option}: {x:?} is not a number");
                std::process::exit(2)
            })
        })
        .collect()
}

/// time from PLAY to the first IDR for late joiners, both servers
#[derive(FromArgs)]
#[argh(subcommand, name = "join")]
struct JoinArgs {
    /// joiners per server [12]
    #[argh(option, default = "12")]
    joiners: usize,
    /// working directory [a temporary directory]
    #[argh(option)]
    workdir: Option<PathBuf>,
}

/// encoder, server and join benchmarks in one run
#[derive(FromArgs)]
#[argh(subcommand, name = "all")]
struct AllArgs {}

/// software encoder vs libx264 ultrafast/zerolatency
#[derive(FromArgs)]
#[argh(subcommand, name = "encoder")]
struct EncoderArgs {
    /// comma-separated WxH sizes [1280x720,1920x1080]
    #[argh(option, default = "String::from(\"1280x720,1920x1080\")")]
    sizes: String,
    /// frames per clip [150]
    #[argh(option, default = "150")]
    frames: u32,
    /// bitrate in bit/s for both encoders [4000000]
    #[argh(option, default = "4_000_000")]
    bitrate: u32,
    /// working directory for the clips [a temporary directory]
    #[argh(option)]
    workdir: Option<PathBuf>,
}

fn main() {
    let args: Args = argh::from_env();
    match args.cmd {
        Cmd::Encoder(a) => encoder_bench(&a),
        Cmd::Server(a) => server_bench(&a),
        Cmd::Join(a) => join_bench(&a),
        Cmd::Soak(a) => soak(&a),
        Cmd::Mjpeg(a) => mjpeg_bench(&a),
        Cmd::Delivery(a) => delivery_bench(&a),
        Cmd::Scale(a) => print!("{}", scale::run_args(&a)),
        Cmd::Latency(a) => {
            if !a.one_client() {
                print_machine();
            }
            latency::latency_bench(&a);
        }
        Cmd::Raw(a) => print!("{}", raw::run_args(&uavstream_bin(), &a)),
        Cmd::All(_) => {
            print_machine();
            encoder_bench(&EncoderArgs {
                sizes: "1280x720,1920x1080".into(),
                frames: 150,
                bitrate: 4_000_000,
                workdir: None,
            });
            println!();
            server_bench(&ServerArgs::defaults());
            println!();
            join_bench(&JoinArgs { joiners: 12, workdir: None });
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

fn mjpeg_bench(a: &MjpegArgs) {
    use uavstream::encode::jpeg::encode_pattern;
    use uavstream::source::testpattern::TestPattern;
    print_machine();
    let (w, h, fps) = (1280usize, 720usize, 30u32);
    let mut pattern = TestPattern::new(w, h);
    let (mut jpeg_bytes, mut jpeg_cpu, mut h264_bytes, mut h264_cpu, mut idrs) =
        (0usize, Duration::ZERO, 0usize, Duration::ZERO, 0);
    let mut out = Vec::new();
    let settings = EncoderSettings {
        width: w as u32,
        height: h as u32,
        fps,
        bitrate: a.bitrate,
        idr_period: fps,
        frame_skip: false,
    };
    let mut enc = new_encoder(&settings).expect("OpenH264");
    let mut i420 = vec![0u8; w * h * 3 / 2];
    for n in 0..a.frames {
        pattern.render(u64::from(n));
        let t = thread_cpu();
        encode_pattern(&pattern, a.quality, &mut out).expect("JPEG");
        jpeg_cpu += thread_cpu() - t;
        jpeg_bytes += out.len();
        i420[..w * h].copy_from_slice(&pattern.y);
        i420[w * h..w * h * 5 / 4].copy_from_slice(&pattern.u);
        i420[w * h * 5 / 4..].copy_from_slice(&pattern.v);
        out.clear();
        let t = thread_cpu();
        encode_frame_i420(
            &mut enc,
            &i420,
            (w, h),
            Duration::from_millis(u64::from(n) * 1000 / u64::from(fps)),
            false,
            &mut out,
        )
        .expect("H.264");
        h264_cpu += thread_cpu() - t;
        h264_bytes += out.len();
        idrs += usize::from(
            uavstream::media::h264::annex_b(&out).any(|u| uavstream::media::h264::nal_unit_type(u) == Some(5)),
        );
    }
    let n = a.frames.max(1) as usize;
    let per = |b: usize| b / n;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
    let pct = |d: Duration| ms(d) * f64::from(fps) / 10.0;
    println!("720p30 test pattern, {} frames, encoder thread CPU time (one core):", a.frames);
    println!(
        "  MJPEG  jpeg-encoder q{:<3}      {:>7} bytes/frame  {:>6.0} kbit/s  {:>5.2} ms/frame  {:>5.1} % of a core at 30 fps",
        a.quality,
        per(jpeg_bytes),
        per(jpeg_bytes) as f64 * 8.0 * f64::from(fps) / 1e3,
        ms(jpeg_cpu),
        pct(jpeg_cpu)
    );
    println!(
        "  H.264  OpenH264 {:>5} kbit/s  {:>7} bytes/frame  {:>6.0} kbit/s  {:>5.2} ms/frame  {:>5.1} % of a core at 30 fps ({idrs} IDRs)",
        a.bitrate / 1000,
        per(h264_bytes),
        per(h264_bytes) as f64 * 8.0 * f64::from(fps) / 1e3,
        ms(h264_cpu),
        pct(h264_cpu)
    );
    println!("  MJPEG/H.264: {:.1}x the bytes", jpeg_bytes as f64 / h264_bytes.max(1) as f64);
    let bin = uavstream_bin();
    println!(
        "whole daemon, 1280x720@30 test pattern, {} s each (render + encode + packetize; no RTSP clients):",
        a.seconds
    );
    let q = a.quality.to_string();
    let br = a.bitrate.to_string();
    let http_port = free_port().to_string();
    for (name, args, http_client) in [
        ("--codec mjpeg", vec!["--codec", "mjpeg", "--jpeg-quality", &q], false),
        ("--codec h264", vec!["--codec", "h264", "--bitrate", &br], false),
        ("--codec h264 + 1 HTTP MJPEG client", vec!["--codec", "h264", "--bitrate", &br, "--jpeg-quality", &q], true),
    ] {
        let mut all = vec!["--width", "1280", "--height", "720", "--fps", "30", "--http-port", &http_port];
        all.extend(args);
        let server = peers::Server::uavstream(&bin, free_port(), &all);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = http_client.then(|| {
            let (stop, port) = (std::sync::Arc::clone(&stop), http_port.clone());
            std::thread::spawn(move || mjpeg_reader(&port, &stop))
        });
        std::thread::sleep(Duration::from_secs(2));
        let (c0, t0) = (server.cpu_ticks(), Instant::now());
        std::thread::sleep(Duration::from_secs(a.seconds));
        let (c1, t1) = (server.cpu_ticks(), Instant::now());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let parts = reader.map(|r| r.join().unwrap_or(0));
        let cpu = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
        let http = parts.map_or(String::new(), |p| {
            format!("  (HTTP client got {:.1} JPEG parts/s)", p as f64 / (a.seconds as f64 + 2.0))
        });
        println!("  {name:<36} {cpu:>5.1} % CPU  RSS {} KiB{http}", server.rss_kib());
    }
}

/// Reads `packets` video packets of `url` over RTSP/TCP with ffprobe: (pts at 90 kHz, bytes).
/// The first packet, which ffmpeg gives before it has a timestamp, is left out.
fn probe_packets(url: &str, packets: u32) -> Vec<(i64, usize)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts,size", "-of", "csv=p=0", "-read_intervals"])
        .arg(format!("%+#{packets}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.trim().parse().ok()?, f.next()?.trim().parse().ok()?))
        })
        .collect()
}

fn delivery_bench(a: &DeliveryArgs) {
    print_machine();
    let bin = uavstream_bin();
    let jpeg = a.codec == "mjpeg";
    let fps = a.fps.max(1);
    let interval = 90_000 / i64::from(fps);
    let bitrates: Vec<&str> = if jpeg { vec!["2000000"] } else { a.bitrates.split(',').collect() };
    println!(
        "{} test pattern at {fps} fps, {} s read per stream with ffprobe over RTSP/TCP after 2 s of warm-up",
        if jpeg { "software JPEG (--codec mjpeg)" } else { "software H.264 (OpenH264)" },
        a.seconds
    );
    println!("  size       target    frames  fps     missing  largest gap  kbit/s  vs target  per-second kbit/s  daemon dropped  CPU    warnings: behind, over bitrate");
    for size in a.sizes.split(',') {
        let Some((w, h)) = size.split_once('x') else { continue };
        for bitrate in &bitrates {
            let fps_arg = fps.to_string();
            let args = ["--codec", &a.codec, "--width", w, "--height", h, "--bitrate", bitrate, "--fps", &fps_arg];
            let server = peers::Server::uavstream(&bin, free_port(), &args);
            std::thread::sleep(Duration::from_secs(2));
            let c0 = server.cpu_ticks();
            let t0 = Instant::now();
            let packets = probe_packets(&server.url, a.seconds * fps + 1);
            let cpu = (server.cpu_ticks() - c0) as f64 / t0.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_millis(1100));
            let dropped = server.last_log_field("stats: pipeline frames dropped ").unwrap_or_else(|| "?".into());
            let behind = server.log_count("fell behind");
            let over = server.log_count("does not fit the bitrate");
            if packets.len() < 2 {
                println!("  {size:<10} no stream read");
                continue;
            }
            let (first, last) = (packets[0].0, packets[packets.len() - 1].0);
            let span = (last - first + interval) as f64 / 90_000.0;
            let gaps = packets.windows(2).map(|p| (p[1].0 - p[0].0) as f64 / interval as f64);
            let (missing, largest) = gaps.fold((0i64, 0f64), |(m, l), g| (m + g.round() as i64 - 1, l.max(g)));
            let bits: usize = packets.iter().map(|p| p.1 * 8).sum();
            let kbps = bits as f64 / span / 1000.0;
            let mut per_second = std::collections::BTreeMap::<i64, usize>::new();
            for (pts, bytes) in &packets {
                *per_second.entry((pts - first) / 90_000).or_default() += bytes * 8;
            }
            let whole: Vec<f64> =
                per_second.range(..(last - first) / 90_000).map(|(_, b)| *b as f64 / 1000.0).collect();
            let (lo, hi) = whole.iter().fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
            let target: f64 = bitrate.parse().unwrap_or(0.0) / 1000.0;
            let (target_col, vs) = if jpeg {
                ("-".to_owned(), "-".to_owned())
            } else {
                (format!("{target:.0}k"), format!("{:+.1} %", (kbps / target - 1.0) * 100.0))
            };
            println!(
                "  {size:<10} {target_col:<9} {:>6}  {:>6.2}  {missing:>7}  {largest:>11.2}  {kbps:>6.0}  {vs:>9}  {:>7.0}..{:<7.0}  {dropped:>14}  {cpu:>4.0} %  {behind:>8}, {over}",
                packets.len(),
                packets.len() as f64 / span,
                if whole.is_empty() { 0.0 } else { lo },
                hi,
            );
        }
    }
}

/// One `GET /live.jpg` on its own connection: a 200 with a whole JPEG.
fn snapshot(port: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(b"GET /live.jpg HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all.starts_with(b"HTTP/1.1 200 ") && all.ends_with(&[0xff, 0xd9])
}

/// Reads `/live.mjpeg` until `stop`, returning how many parts arrived.
fn mjpeg_reader(port: &str, stop: &std::sync::atomic::AtomicBool) -> usize {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.write_all(b"GET /live.mjpeg HTTP/1.1\r\nHost: bench\r\n\r\n");
    let (mut buf, mut parts) = (vec![0u8; 1 << 16], 0);
    let needle = b"--uavstreamframe\r\n";
    let mut tail: Vec<u8> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                parts += tail.windows(needle.len()).filter(|w| w == needle).count();
                let keep = tail.len().saturating_sub(needle.len() - 1);
                tail.drain(..keep);
            }
            Err(_) => {}
        }
    }
    parts
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpu.lines().find_map(|l| l.strip_prefix("model name")).map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("machine: {model}, {cores} cores, Linux {}", kernel.trim());
}

fn workdir(given: &Option<PathBuf>, what: &str) -> PathBuf {
    let d = given
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("uavstream-bench-{what}-{}", std::process::id())));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uavstream_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let bin = me.with_file_name("uavstream");
    assert!(bin.exists(), "build the daemon first: cargo build --release (looked for {})", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A 1080p30, ~8 Mbit/s, 1-s-GOP H.264 clip, as Annex B (uavstream) and MP4 (gst-rtsp-server).
fn make_clip(dir: &Path, seconds: u32) -> (PathBuf, PathBuf) {
    let h264 = dir.join("clip-1080p30.h264");
    let mp4 = dir.join("clip-1080p30.mp4");
    if !h264.exists() {
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t"])
            .arg(seconds.to_string())
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-b:v",
                "8M",
                "-maxrate",
                "8M",
                "-bufsize",
                "8M",
                "-g",
                "30",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "h264",
            ])
            .arg(&h264));
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-framerate", "30", "-i"])
            .arg(&h264)
            .args(["-c", "copy"])
            .arg(&mp4));
    }
    (h264, mp4)
}

struct RunResult {
    cpu_pct: f64,
    /// The kernel's part of it (system time).
    sys_pct: f64,
    rss_mib: f64,
    loss_pct: f64,
    packets: u64,
    idr_median_ms: f64,
    idr_max_ms: f64,
    errors: usize,
    latency: Option<(u64, u64, u64)>,
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// Starts `n` clients now; counts from `join` seconds after start for `seconds`.
fn measure(server: &peers::Server, n: usize, transport: load::Transport, seconds: u64) -> RunResult {
    let join = Duration::from_millis(1500 + 20 * n as u64);
    let start = Instant::now() + join;
    let window = load::Window { start, end: start + Duration::from_secs(seconds) };
    let url = server.url.clone();
    let clients = std::thread::spawn(move || load::run(&url, n, transport, window));
    std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
    let (c0, s0, t0) = (server.cpu_ticks(), server.sys_ticks(), Instant::now());
    std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
    let (c1, s1, t1) = (server.cpu_ticks(), server.sys_ticks(), Instant::now());
    let rss = server.rss_kib();
    let stats = clients.join().unwrap();
    let received: u64 = stats.iter().map(|s| s.packets).sum();
    let lost: u64 = stats.iter().map(|s| s.lost).sum();
    let (idr_median_ms, idr_max_ms) =
        median_max(stats.iter().filter_map(|s| s.first_idr).map(|d| d.as_secs_f64() * 1e3).collect());
    let errors = stats.iter().filter(|s| s.error.is_some()).count();
    if let Some(e) = stats.iter().find_map(|s| s.error.clone()) {
        eprintln!("  ({} of {n} {} clients failed, e.g.: {e})", errors, server.name);
    }
    RunResult {
        cpu_pct: (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64(),
        sys_pct: (s1 - s0) as f64 / t1.duration_since(t0).as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        loss_pct: if received + lost == 0 { f64::NAN } else { lost as f64 * 100.0 / (received + lost) as f64 },
        packets: received,
        idr_median_ms,
        idr_max_ms,
        errors,
        latency: server.latency_us(window.start, window.end + Duration::from_millis(1500)),
    }
}

fn server_bench(a: &ServerArgs) {
    let dir = workdir(&a.workdir, "server");
    if !peers::gst_available() {
        println!("gst-rtsp-server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good gstreamer1.0-plugins-bad); run scripts/bench");
        return;
    }
    let (h264, mp4) = make_clip(&dir, 60);
    let script = peers::gst_script(&dir);
    let bin = uavstream_bin();
    let launch = format!(
        "( filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
        mp4.display()
    );
    println!("1080p30 ~8 Mbit/s 1-s GOP clip served by uavstream (file: source) and gst-rtsp-server (shared factory), {} s counted per run", a.seconds);
    println!(
        "{:<16} {:<4} {:>4} {:>7} {:>7} {:>8} {:>7} {:>9} {:>17} {:>22} {:>6}",
        "server",
        "tx",
        "N",
        "cpu %",
        "sys %",
        "RSS MiB",
        "loss %",
        "packets",
        "1st IDR med/max ms",
        "latency p50/p99/max us",
        "failed"
    );
    let runs = [
        (load::Transport::Udp, 1),
        (load::Transport::Udp, 10),
        (load::Transport::Udp, 50),
        (load::Transport::Udp, 100),
        (load::Transport::Udp, 300),
        (load::Transport::Tcp, 1),
        (load::Transport::Tcp, 10),
        (load::Transport::Tcp, 50),
    ];
    let fanouts = number_list("fanout-threads", &a.fanout_threads);
    let only = a.clients.as_deref().map(|c| number_list("clients", c));
    // One row per uavstream variant, then gst-rtsp-server's.
    let names: Vec<String> = fanouts
        .iter()
        .map(|&t| if t == 1 { "uavstream".to_owned() } else { format!("uavstream x{t}") })
        .chain(["gst-rtsp-server".to_owned()])
        .collect();
    let mut ratios = Vec::new();
    let mut floors = Vec::new();
    for (tx, n) in runs {
        if a.udp_only && tx != load::Transport::Udp || only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        let mut row = Vec::new();
        for (k, which) in names.iter().enumerate() {
            let port = free_port();
            let server = match fanouts.get(k) {
                Some(t) => peers::Server::uavstream(
                    &bin,
                    port,
                    &[
                        "--source",
                        &format!("file:{}", h264.display()),
                        "--fps",
                        "30",
                        "--fanout-threads",
                        &t.to_string(),
                    ],
                ),
                None => peers::Server::gst(&script, port, &launch),
            };
            std::thread::sleep(Duration::from_millis(500));
            let load = load_average();
            let r = measure(&server, n, tx, a.seconds);
            let lat = r.latency.map_or("-".to_owned(), |(p50, p99, max)| format!("{p50}/{p99}/{max}"));
            println!(
                "{:<16} {:<4} {:>4} {:>7.1} {:>7.1} {:>8.1} {:>7.3} {:>9} {:>17} {:>22} {:>6}  load {load}",
                which,
                if tx == load::Transport::Udp { "udp" } else { "tcp" },
                n,
                r.cpu_pct,
                r.sys_pct,
                r.rss_mib,
                r.loss_pct,
                r.packets,
                format!("{:.0}/{:.0}", r.idr_median_ms, r.idr_max_ms),
                lat,
                r.errors
            );
            row.push(r);
        }
        let gst = row.last().expect("gst-rtsp-server's run");
        if tx == load::Transport::Udp {
            // The same packets sent with the daemon's own send call and nothing else, by as
            // many threads as each uavstream row.
            let mut floor_of = Vec::new();
            for &t in &fanouts {
                let load = load_average();
                let f = floor::run(n, a.seconds, t);
                println!(
                    "{:<16} {:<4} {:>4} {:>7.1} {:>7} {:>8} {:>7} {:>9} {:>17} {:>22} {:>6}  load {load}",
                    if t == 1 { "kernel floor".to_owned() } else { format!("kernel floor x{t}") },
                    "udp",
                    n,
                    f.cpu_pct,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    format!("{}/{}/-", f.p50_us, f.p99_us),
                    "-"
                );
                floor_of.push(f);
            }
            for ((name, r), f) in names.iter().zip(&row[..fanouts.len()]).zip(&floor_of) {
                floors.push((name.clone(), n, f.p50_us, f.p99_us, f.cpu_pct, r.latency));
            }
        }
        for (name, r) in names.iter().zip(&row[..fanouts.len()]) {
            ratios.push((name.clone(), tx, n, r.cpu_pct / gst.cpu_pct, r.rss_mib / gst.rss_mib));
        }
    }
    println!(
        "uavstream's server-added latency / the kernel floor (same packets, the daemon's send call alone, as many threads as the row):"
    );
    for (name, n, f50, f99, fcpu, lat) in &floors {
        if let Some((p50, p99, _)) = lat {
            println!(
                "  {name:<14} udp  N={n:<4} p50 {:.2}  p99 {:.2}  (floor cpu {fcpu:.1} %)",
                *p50 as f64 / (*f50).max(1) as f64,
                *p99 as f64 / (*f99).max(1) as f64,
            );
        }
    }
    println!("uavstream / gst-rtsp-server:");
    for (name, tx, n, cpu, rss) in ratios {
        println!(
            "  {name:<14} {:<4} N={:<4} cpu {:.2}  rss {:.2}",
            if tx == load::Transport::Udp { "udp" } else { "tcp" },
            n,
            cpu,
            rss
        );
    }
    if a.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The 1-minute load average and the machine's CPU count (`uptime`'s figure), as `1.23/2`.
fn load_average() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{}/{cpus}", avg.split_whitespace().next().unwrap_or("?"))
}

/// One client plays throughout; `joiners` join one after another at varying phases.
fn join_times(server: &peers::Server, joiners: usize) -> (Vec<f64>, usize) {
    let window = load::Window { start: Instant::now(), end: Instant::now() + Duration::from_secs(3 + joiners as u64) };
    let url = server.url.clone();
    let steady = std::thread::spawn(move || load::client(&url, load::Transport::Udp, window));
    std::thread::sleep(Duration::from_millis(1000));
    let mut times = Vec::new();
    let mut p_first = 0;
    for i in 0..joiners {
        std::thread::sleep(Duration::from_millis(300 + 37 * (i as u64 % 7)));
        let w = load::Window { start: Instant::now(), end: Instant::now() + Duration::from_millis(1500) };
        let s = load::client(&server.url, load::Transport::Udp, w);
        if let Some(t) = s.first_idr {
            times.push(t.as_secs_f64() * 1e3);
        }
        p_first += usize::from(s.p_before_idr);
    }
    let _ = steady.join();
    (times, p_first)
}

fn join_bench(a: &JoinArgs) {
    let dir = workdir(&a.workdir, "join");
    if !peers::gst_available() {
        println!("gst-rtsp-server is not installed; run scripts/bench");
        return;
    }
    let script = peers::gst_script(&dir);
    let bin = uavstream_bin();
    println!(
        "late joiners: time from PLAY to the first IDR packet ({} joiners, one client already playing)",
        a.joiners
    );
    println!("{:<34} {:>10} {:>10} {:>18}", "server / stream", "median ms", "max ms", "P-slice before IDR");
    let live_gst = "( videotestsrc is-live=true pattern=smpte ! video/x-raw,width=1280,height=720,framerate=30/1 ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=4000 key-int-max=30 ! rtph264pay name=pay0 pt=96 config-interval=-1 )";
    let (h264, mp4) = make_clip(&dir, 60);
    let file_gst = format!(
        "( filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
        mp4.display()
    );
    let file_arg = format!("file:{}", h264.display());
    type Start<'a> = Box<dyn Fn(u16) -> peers::Server + 'a>;
    let cases: [(&str, Start<'_>); 4] = [
        (
            "uavstream, live encoder 720p30",
            Box::new(|p| peers::Server::uavstream(&bin, p, &["--width", "1280", "--height", "720", "--bitrate", "4M"])),
        ),
        ("gst-rtsp-server, x264enc 720p30", Box::new(|p| peers::Server::gst(&script, p, live_gst))),
        (
            "uavstream, passthrough 1080p 1-s GOP",
            Box::new(|p| peers::Server::uavstream(&bin, p, &["--source", &file_arg])),
        ),
        ("gst-rtsp-server, file 1080p 1-s GOP", Box::new(|p| peers::Server::gst(&script, p, &file_gst))),
    ];
    for (name, start) in cases {
        let server = start(free_port());
        std::thread::sleep(Duration::from_millis(500));
        let (times, p_first) = join_times(&server, a.joiners);
        let (median, max) = median_max(times.clone());
        println!("{name:<34} {median:>10.1} {max:>10.1} {:>18}", format!("{p_first} of {}", a.joiners));
    }
    if a.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{err}");
    err
}

/// Average PSNR of `encoded` (H.264) against the raw I420 clip, via ffmpeg's psnr filter, frame by
/// frame (timestamps reset to the frame index: x264 writes a VUI frame rate, OpenH264 does not).
fn psnr(encoded: &Path, raw: &Path, size: &str) -> f64 {
    let err = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(encoded)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-i"])
        .arg(raw)
        .args(["-lavfi", "[0:v]settb=1/30,setpts=N[a];[1:v]settb=1/30,setpts=N[b];[a][b]psnr", "-f", "null", "-"]));
    err.lines()
        .rev()
        .filter_map(|l| l.split("average:").nth(1))
        .find_map(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn encoder_bench(a: &EncoderArgs) {
    let dir = a
        .workdir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("uavstream-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    println!("software H.264 encoder vs libx264 (-preset ultrafast -tune zerolatency), one thread each, {} frames, {} kbit/s", a.frames, a.bitrate / 1000);
    println!(
        "{:<10} {:>13} {:>8} {:>9} {:>12} {:>8} {:>9} {:>14}",
        "size", "openh264 fps", "PSNR dB", "kbit/s", "libx264 fps", "PSNR dB", "kbit/s", "fps ratio"
    );
    for size in a.sizes.split(',') {
        let (w, h) = size.split_once('x').expect("WxH");
        let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
        let raw = dir.join(format!("clip-{size}.yuv"));
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-frames:v", &a.frames.to_string(), "-pix_fmt", "yuv420p", "-f", "rawvideo"])
            .arg(&raw));

        // OpenH264 as the daemon runs it (but without rate-control frame skipping, so PSNR compares
        // frame by frame), timing only the encode calls.
        let settings =
            EncoderSettings { width: w, height: h, fps: 30, bitrate: a.bitrate, idr_period: 30, frame_skip: false };
        let mut enc = new_encoder(&settings).unwrap();
        let frame_len = (w * h * 3 / 2) as usize;
        let mut frame = vec![0u8; frame_len];
        let mut f = std::fs::File::open(&raw).unwrap();
        let mut out = Vec::new();
        let mut elapsed = Duration::ZERO;
        let mut n = 0u32;
        while f.read_exact(&mut frame).is_ok() {
            let t = Instant::now();
            encode_frame_i420(
                &mut enc,
                &frame,
                (w as usize, h as usize),
                Duration::from_millis(u64::from(n) * 33),
                false,
                &mut out,
            )
            .unwrap();
            elapsed += t.elapsed();
            n += 1;
        }
        let ours = dir.join(format!("openh264-{size}.h264"));
        std::fs::write(&ours, &out).unwrap();
        let ours_fps = f64::from(n) / elapsed.as_secs_f64();

        let x264 = dir.join(format!("x264-{size}.h264"));
        let t = Instant::now();
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-r", "30", "-i"])
            .arg(&raw)
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-threads",
                "1",
                "-b:v",
                &a.bitrate.to_string(),
                "-g",
                "30",
                "-f",
                "h264",
            ])
            .arg(&x264));
        // Includes ffmpeg's start-up and raw read: a slight handicap for x264, noted.
        let x264_fps = f64::from(a.frames) / t.elapsed().as_secs_f64();
        let (p_ours, p_x264) = (psnr(&ours, &raw, size), psnr(&x264, &raw, size));
        let kbps =
            |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 * 8.0 * 30.0 / f64::from(a.frames) / 1e3);
        println!(
            "{:<10} {:>13.1} {:>8.2} {:>9.0} {:>12.1} {:>8.2} {:>9.0} {:>14.2}",
            size,
            ours_fps,
            p_ours,
            kbps(&ours),
            x264_fps,
            p_x264,
            kbps(&x264),
            ours_fps / x264_fps
        );
        let _ = std::fs::remove_file(&raw);
    }
    println!("(libx264 time is ffmpeg's wall time including start-up and reading the raw clip)");
    if a.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One RTSP connect/SETUP/PLAY/TEARDOWN cycle, or (every other call) an abrupt disconnect after
/// PLAY. Errors are counted, not fatal.
fn churn_once(url: &str, abrupt: bool) -> bool {
    let w = load::Window {
        start: Instant::now(),
        end: Instant::now() + Duration::from_millis(if abrupt { 50 } else { 200 }),
    };
    let s = load::client(url, if abrupt { load::Transport::Tcp } else { load::Transport::Udp }, w);
    s.error.is_none()
}

fn soak(a: &SoakArgs) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    print_machine();
    let bin = uavstream_bin();
    let port = free_port();
    let http_port = free_port().to_string();
    let server =
        peers::Server::uavstream(&bin, port, &["--width", "640", "--height", "360", "--http-port", &http_port]);
    let url = server.url.clone();
    let end = Instant::now() + Duration::from_secs(a.minutes * 60);
    let stop = Arc::new(AtomicBool::new(false));
    // HTTP: an MJPEG viewer for 3 s and a snapshot, then 8 s of quiet, over and over, so the
    // on-demand JPEG encoder starts and stops all through the soak.
    let (http_parts, http_snapshots, http_failures) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let http = {
        let (stop, port) = (Arc::clone(&stop), http_port.clone());
        let (parts, snaps, fails) = (Arc::clone(&http_parts), Arc::clone(&http_snapshots), Arc::clone(&http_failures));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let viewing = Arc::new(AtomicBool::new(false));
                let (v, p) = (Arc::clone(&viewing), port.clone());
                let viewer = std::thread::spawn(move || mjpeg_reader(&p, &v));
                std::thread::sleep(Duration::from_secs(3));
                viewing.store(true, Ordering::Relaxed);
                let got = viewer.join().unwrap_or(0);
                parts.fetch_add(got as u64, Ordering::Relaxed);
                let ok = snapshot(&port);
                if got == 0 || !ok {
                    fails.fetch_add(1, Ordering::Relaxed);
                } else {
                    snaps.fetch_add(1, Ordering::Relaxed);
                }
                for _ in 0..80 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    // 16 steady clients, half UDP, half TCP, reconnecting if dropped.
    let steady: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let tx = if i % 2 == 0 { load::Transport::Udp } else { load::Transport::Tcp };
                let mut total = load::ClientStats::default();
                while Instant::now() < end {
                    let s = load::client(&url, tx, load::Window { start: Instant::now(), end });
                    total.packets += s.packets;
                    total.lost += s.lost;
                    if s.error.is_some() {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                total
            })
        })
        .collect();
    // Churn: cycles and abrupt disconnects, continuously.
    let (cycles, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let churn = {
        let (url, stop, cycles, failures) =
            (url.clone(), Arc::clone(&stop), Arc::clone(&cycles), Arc::clone(&failures));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !churn_once(&url, i % 2 == 1) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                cycles.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    println!(
        "soak: {} min, 16 steady clients (8 UDP, 8 TCP), continuous churn, an HTTP MJPEG viewer on and off; uavstream 640x360 test pattern",
        a.minutes
    );
    println!(
        "{:>6} {:>9} {:>5} {:>14} {:>13} {:>15}",
        "min", "RSS KiB", "fds", "sessions", "churn cycles", "churn failures"
    );
    let t0 = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(a.report_every).min(end.saturating_duration_since(Instant::now())));
        let sessions = server.last_log_field("stats: sessions ").unwrap_or_default();
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).map_or(0, |d| d.count());
        println!(
            "{:>6.1} {:>9} {:>5} {:>14} {:>13} {:>15}",
            t0.elapsed().as_secs_f64() / 60.0,
            server.rss_kib(),
            fds,
            sessions,
            cycles.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    let _ = http.join();
    println!(
        "http: {} MJPEG parts, {} snapshot rounds ok, {} failed; on-demand JPEG encoder started {} times",
        http_parts.load(Ordering::Relaxed),
        http_snapshots.load(Ordering::Relaxed),
        http_failures.load(Ordering::Relaxed),
        server.log_count("http: JPEG encoder started")
    );
    let (mut packets, mut lost) = (0, 0);
    for h in steady {
        let s = h.join().unwrap_or_default();
        packets += s.packets;
        lost += s.lost;
    }
    println!(
        "steady clients: {packets} packets, {lost} lost ({:.4} %)",
        lost as f64 * 100.0 / (packets + lost).max(1) as f64
    );
}
