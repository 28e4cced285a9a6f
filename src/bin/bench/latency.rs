//! `latency`: pattern-to-pixels latency. The test pattern carries its capture time (CLOCK_MONOTONIC,
//! 100 µs units) as a row of blocks (`source::testpattern`); a real client — ffmpeg, or GStreamer
//! `rtspsrc latency=0` — decodes the stream to grey pixels on its stdout, and this program reads
//! the time code back from each decoded frame the moment it arrives: capture → decoded pixels,
//! with the decoder's own buffering included (as a viewer sees it, less the display).
//!
//! The peer, gst-rtsp-server, gets the same pattern with the same time code over a loopback TCP
//! connection into `tcpserversrc` (raw I420 sent at the frame rate, stamped just before the send) and encodes it with
//! x264 (`tune=zerolatency speed-preset=ultrafast`) or `jpegenc`, so both servers are measured
//! from the moment a frame exists to the moment a client has its pixels.
//!
//! Breakdown for uavstream from its `/status`: `encode` (capture → access unit in the loop) and
//! `server` (access unit → last packet sent); the rest is network + client (jitter buffer,
//! depacketizer, decoder, pipe).
//!
//! With `--url` it measures one GStreamer client of a uavstream already running (e.g. across
//! the emulated lossy link of `scripts/bench-lossy`) with a jitter buffer of `--jitter-ms`,
//! retransmission requests on or off, and only frames decoded without error (`avdec_h264
//! output-corrupt=false`), and prints one line: `frames <n> unreadable <n> p50 <ms> p99 <ms>`.
//! The daemon must run on this machine (the time code is CLOCK_MONOTONIC).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use uavstream::source::testpattern::{monotonic_100us, read_time_code, TestPattern};

use super::{free_port, load, peers, uavstream_bin, workdir};

/// capture → decoded pixels latency of the test pattern, with ffmpeg and GStreamer clients
#[derive(FromArgs)]
#[argh(subcommand, name = "latency")]
pub struct LatencyArgs {
    /// seconds measured per run (after a 2 s warm-up)
    #[argh(option, default = "8")]
    seconds: u64,
    /// only 1280x720 H.264 over UDP with one client (both decoders, both servers)
    #[argh(switch)]
    quick: bool,
    /// working directory (kept)
    #[argh(option)]
    workdir: Option<PathBuf>,
    /// measure one GStreamer client of this running uavstream H.264 stream (UDP) and print one
    /// line, instead of the comparison
    #[argh(option)]
    url: Option<String>,
    /// with --url: the stream's size, WxH
    #[argh(option, default = "String::from(\"1280x720\")")]
    size: String,
    /// with --url: rtspsrc latency (jitter buffer), ms
    #[argh(option, default = "300")]
    jitter_ms: u32,
    /// with --url: rtspsrc do-retransmission (NACKs, when the server offers RTX)
    #[argh(option, default = "false")]
    retransmission: bool,
}

impl LatencyArgs {
    /// Whether this is a one-client run (`--url`): its output is one line, no machine header.
    pub fn one_client(&self) -> bool {
        self.url.is_some()
    }
}

/// How a GStreamer client is set up.
#[derive(Debug, Clone, Copy)]
struct GstClient {
    jitter_ms: u32,
    /// `do-retransmission`; `None` leaves rtspsrc's default.
    retransmission: Option<bool>,
    /// H.264 decoded by `avdec_h264 output-corrupt=false`: frames with errors are not output.
    clean_h264: bool,
}

/// The comparison's client: no jitter buffer, whatever the stream's codec.
const LOW_LATENCY: GstClient = GstClient { jitter_ms: 0, retransmission: None, clean_h264: false };

#[derive(Debug, Clone, Copy)]
enum Decoder {
    Ffmpeg,
    Gst(GstClient),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    H264,
    Mjpeg,
}

/// What one measured client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Latencies in ms of frames whose time code read back.
    ms: Vec<f64>,
    frames: usize,
    unreadable: usize,
}

fn decoder_cmd(d: Decoder, url: &str, udp: bool) -> Command {
    match d {
        Decoder::Ffmpeg => {
            let mut c = Command::new("ffmpeg");
            c.args(["-hide_banner", "-loglevel", "error", "-fflags", "nobuffer", "-flags", "low_delay"])
                .args(["-probesize", "32", "-analyzeduration", "0", "-rtsp_transport", if udp { "udp" } else { "tcp" }])
                .args(["-i", url, "-f", "rawvideo", "-pix_fmt", "gray", "-vsync", "passthrough", "pipe:1"]);
            c
        }
        Decoder::Gst(g) => {
            let mut c = Command::new("gst-launch-1.0");
            c.arg("-q")
                .args(["rtspsrc", &format!("location={url}"), &format!("latency={}", g.jitter_ms)])
                .arg(format!("protocols={}", if udp { "udp" } else { "tcp" }));
            if let Some(r) = g.retransmission {
                c.arg(format!("do-retransmission={r}"));
            }
            if g.clean_h264 {
                c.args(["!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "output-corrupt=false"]);
            } else {
                c.args(["!", "decodebin"]);
            }
            c.args(["!", "videoconvert", "!", "video/x-raw,format=GRAY8", "!"]).args(["fdsink", "fd=1", "sync=false"]);
            c
        }
    }
}

/// Runs one decoder for `warmup + seconds`, reading the time code of every frame on arrival.
fn watch(d: Decoder, url: &str, udp: bool, (w, h): (usize, usize), warmup: Duration, seconds: u64) -> Seen {
    let mut child = decoder_cmd(d, url, udp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the decoder");
    let mut out = child.stdout.take().expect("stdout");
    let start = Instant::now();
    let end = start + warmup + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        let pid = child.id();
        std::thread::spawn(move || {
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        })
    };
    let mut frame = vec![0u8; w * h];
    let mut seen = Seen::default();
    while out.read_exact(&mut frame).is_ok() {
        let now = monotonic_100us();
        if Instant::now() < start + warmup {
            continue;
        }
        seen.frames += 1;
        match read_time_code(&frame, w, h, w) {
            Some(t) => seen.ms.push(f64::from(now.wrapping_sub(t) as i32) / 10.0),
            None => seen.unreadable += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = killer.join();
    let _ = child.wait();
    seen
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Sends the stamped pattern as raw I420 to the peer's `tcpserversrc` on `port` at `fps` until
/// `stop` (the peer's camera). The peer listens while its media is prepared: connect again
/// whenever it goes away.
fn feed_peer(port: u16, (w, h): (usize, usize), fps: u32, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut p = TestPattern::new(w, h);
        let mut buf = Vec::with_capacity(w * h * 3 / 2);
        let period = Duration::from_secs_f64(1.0 / f64::from(fps));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let t0 = Instant::now();
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep((t0 + period * k).saturating_duration_since(Instant::now()));
                p.render(n);
                p.stamp(monotonic_100us());
                buf.clear();
                buf.extend_from_slice(&p.y);
                buf.extend_from_slice(&p.u);
                buf.extend_from_slice(&p.v);
                if s.write_all(&buf).is_err() {
                    break;
                }
                n += 1;
                k += 1;
            }
        }
    });
}

fn status_pair(status: &str, key: &str) -> Option<(f64, f64)> {
    let at = status.find(&format!("\"{key}\":{{\"p50\":"))? + key.len() + 11;
    let rest = &status[at..];
    let (p50, rest) = rest.split_once(",\"p99\":")?;
    let p99 = rest.split_once('}')?.0;
    Some((p50.parse::<f64>().ok()? / 1e3, p99.parse::<f64>().ok()? / 1e3))
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

struct Run {
    codec: Codec,
    size: (usize, usize),
    udp: bool,
    clients: usize,
}

fn serve(which: &str, run: &Run, script: &Path, stop: &Arc<AtomicBool>) -> (peers::Server, Option<u16>) {
    let (w, h) = run.size;
    let bitrate = if h >= 1080 { 8_000 } else { 4_000 };
    let port = free_port();
    if which == "uavstream" {
        let http = free_port();
        let args = [
            "--width".to_owned(),
            w.to_string(),
            "--height".to_owned(),
            h.to_string(),
            "--codec".to_owned(),
            if run.codec == Codec::H264 { "h264" } else { "mjpeg" }.to_owned(),
            "--bitrate".to_owned(),
            format!("{bitrate}k"),
            "--http-port".to_owned(),
            http.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (peers::Server::uavstream(&uavstream_bin(), port, &args), Some(http))
    } else {
        let feed = free_port();
        let enc = match run.codec {
            Codec::H264 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate} key-int-max=30 ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"
            ),
            Codec::Mjpeg => "jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26".to_owned(),
        };
        // A FIFO will not do: the media seeks its source on PLAY.
        let launch = format!(
            "( tcpserversrc host=127.0.0.1 port={feed} ! rawvideoparse width={w} height={h} format=i420 framerate=30/1 ! {enc} )"
        );
        let server = peers::Server::gst(script, port, &launch);
        feed_peer(feed, (w, h), 30, Arc::clone(stop));
        (server, None)
    }
}

/// `--url`: one GStreamer client of a running daemon; one line of figures.
fn one_client(a: &LatencyArgs, url: &str) {
    let size = a.size.split_once('x').and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))).expect("--size WxH");
    let client = GstClient { jitter_ms: a.jitter_ms, retransmission: Some(a.retransmission), clean_h264: true };
    let mut seen = watch(Decoder::Gst(client), url, true, size, Duration::from_secs(2), a.seconds);
    let (p50, p99) = (percentile(&mut seen.ms, 0.5), percentile(&mut seen.ms, 0.99));
    println!("frames {} unreadable {} p50 {p50:.1} p99 {p99:.1}", seen.frames, seen.unreadable);
}

pub fn latency_bench(a: &LatencyArgs) {
    if let Some(url) = &a.url {
        one_client(a, url);
        return;
    }
    let dir = workdir(&a.workdir, "latency");
    let gst = peers::gst_available();
    if !gst {
        println!("gst-rtsp-server is not installed: uavstream only (run scripts/bench for the peer)");
    }
    let script = peers::gst_script(&dir);
    let mut runs = Vec::new();
    let sizes: &[(usize, usize)] = if a.quick { &[(1280, 720)] } else { &[(1280, 720), (1920, 1080)] };
    for &size in sizes {
        for codec in [Codec::H264, Codec::Mjpeg] {
            for udp in [true, false] {
                for clients in [1, 100] {
                    if a.quick && (codec != Codec::H264 || !udp || clients != 1) {
                        continue;
                    }
                    runs.push(Run { codec, size, udp, clients });
                }
            }
        }
    }
    println!(
        "test pattern → decoded pixels, 30 fps, {} s per run after a 2 s warm-up; H.264 4 Mbit/s at 720p, 8 at 1080p; MJPEG quality 80",
        a.seconds
    );
    println!(
        "{:<16} {:<6} {:<10} {:<4} {:>4} {:<7} {:>8} {:>8} {:>7} {:>10} {:>10}",
        "server", "codec", "size", "tx", "N", "client", "p50 ms", "p99 ms", "frames", "encode ms", "server ms"
    );
    for run in &runs {
        for which in ["uavstream", "gst-rtsp-server"] {
            if which != "uavstream" && !gst {
                continue;
            }
            for decoder in [Decoder::Ffmpeg, Decoder::Gst(LOW_LATENCY)] {
                let stop = Arc::new(AtomicBool::new(false));
                let (server, http) = serve(which, run, &script, &stop);
                std::thread::sleep(Duration::from_millis(300));
                // The other N-1 clients: our own load client, for the whole run.
                let load = (run.clients > 1).then(|| {
                    let url = server.url.clone();
                    let tx = if run.udp { load::Transport::Udp } else { load::Transport::Tcp };
                    let n = run.clients - 1;
                    let now = Instant::now();
                    let window =
                        load::Window { start: now, end: now + Duration::from_secs(a.seconds + 4 + n as u64 / 20) };
                    std::thread::spawn(move || load::run(&url, n, tx, window))
                });
                if load.is_some() {
                    std::thread::sleep(Duration::from_millis(1500 + 20 * run.clients as u64));
                }
                let mut seen = watch(decoder, &server.url, run.udp, run.size, Duration::from_secs(2), a.seconds);
                let breakdown = http.and_then(|p| {
                    let s = http_get(p, "/status");
                    Some((status_pair(&s, "encode_latency_us")?, status_pair(&s, "server_latency_us")?))
                });
                stop.store(true, Ordering::Relaxed);
                drop(server);
                if let Some(l) = load {
                    let _ = l.join();
                }
                let (p50, p99) = (percentile(&mut seen.ms, 0.5), percentile(&mut seen.ms, 0.99));
                let (enc, srv) = breakdown.map_or(("-".to_owned(), "-".to_owned()), |(e, s)| {
                    (format!("{:.1}/{:.1}", e.0, e.1), format!("{:.2}/{:.2}", s.0, s.1))
                });
                println!(
                    "{:<16} {:<6} {:<10} {:<4} {:>4} {:<7} {:>8.1} {:>8.1} {:>7} {:>10} {:>10}",
                    which,
                    if run.codec == Codec::H264 { "h264" } else { "mjpeg" },
                    format!("{}x{}", run.size.0, run.size.1),
                    if run.udp { "udp" } else { "tcp" },
                    run.clients,
                    if matches!(decoder, Decoder::Ffmpeg) { "ffmpeg" } else { "gst" },
                    p50,
                    p99,
                    if seen.unreadable > 0 {
                        format!("{}({}?)", seen.frames, seen.unreadable)
                    } else {
                        seen.frames.to_string()
                    },
                    enc,
                    srv
                );
                let _ = std::io::stdout().flush();
            }
        }
    }
    println!("encode and server: uavstream's own p50/p99 from /status (capture → access unit; access unit → last packet sent)");
    if a.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
