//! Benchmarks that print figures side by side with a peer, in the same run. Not a test: nothing
//! here asserts on time.
//!
//! `uavstream-bench encoder`: the software H.264 encoder (OpenH264, as the daemon configures it)
//! against ffmpeg's libx264 `-preset ultrafast -tune zerolatency`, both single-threaded, on the
//! same raw clip at the same bitrate: frames/s and PSNR.
#![allow(clippy::print_stdout, clippy::print_stderr)]

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
}

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
