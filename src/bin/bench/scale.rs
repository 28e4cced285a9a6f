//! The software scaler (`uavstream::media::scale`) against ffmpeg's swscale with `flags=area`,
//! same picture, same sizes, same run, one thread each: milliseconds per frame for NV12, YU12
//! and YUYV input to I420, and how close the two outputs are (luma PSNR).
//!
//! ffmpeg's figure is (CPU time of `-vf scale=…:flags=area,format=yuv420p` − CPU time of the same
//! run with `-vf null`) / frames, both from `-benchmark`, so reading the raw input and ffmpeg's
//! start-up are not charged to swscale.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use argh::FromArgs;
use uavstream::media::scale::{Input, PixelFormat, Scaler};

/// software scaler vs ffmpeg swscale (flags=area): ms per frame
#[derive(FromArgs)]
#[argh(subcommand, name = "scale")]
pub struct ScaleArgs {
    /// conversions, comma-separated WxH:WxH [1920x1080:640x360,1920x1080:1280x720,1280x720:640x360]
    #[argh(option, default = "String::from(\"1920x1080:640x360,1920x1080:1280x720,1280x720:640x360\")")]
    sizes: String,
    /// frames per measurement [300]
    #[argh(option, default = "300")]
    frames: u32,
}

/// Every conversion of `a.sizes`, one table each.
pub fn run_args(a: &ScaleArgs) -> String {
    let mut out = String::new();
    for spec in a.sizes.split(',') {
        match parse_spec(spec) {
            Some((w, h, ow, oh)) => out += &run(w, h, ow, oh, a.frames),
            None => writeln!(out, "bad size {spec:?}: want WxH:WxH").unwrap(),
        }
    }
    out
}

fn parse_spec(spec: &str) -> Option<(u32, u32, u32, u32)> {
    let size = |s: &str| s.split_once('x').and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    let (from, to) = spec.split_once(':')?;
    let ((w, h), (ow, oh)) = (size(from)?, size(to)?);
    Some((w, h, ow, oh))
}

/// One conversion, `width`x`height` to `out_w`x`out_h`, for each input format.
pub fn run(width: u32, height: u32, out_w: u32, out_h: u32, frames: u32) -> String {
    let mut report = format!(
        "scale {width}x{height} -> {out_w}x{out_h} I420, {frames} frames, ms per frame (CPU of one thread)\n\
         {:<6} {:>10} {:>10} {:>10} {:>12} {:>10}\n",
        "input", "uavstream", "(min)", "swscale", "uav/swscale", "PSNR-Y dB"
    );
    let dir = std::env::temp_dir().join(format!("uavstream-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for format in [PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Yuyv] {
        let (input, frame) = test_frame(format, width, height);
        let mut scaler = match Scaler::new(input, out_w, out_h) {
            Ok(s) => Box::new(s),
            Err(e) => {
                writeln!(report, "{:<6} {e}", name(format)).unwrap();
                continue;
            }
        };
        let mut ours = vec![0u8; scaler.output_bytes()];
        for _ in 0..5 {
            scaler.scale(&frame, &mut ours).unwrap();
        }
        let (mut total, mut best) = (Duration::ZERO, Duration::MAX);
        for _ in 0..frames {
            let cpu0 = thread_cpu();
            scaler.scale(std::hint::black_box(&frame), &mut ours).unwrap();
            let cpu = thread_cpu() - cpu0;
            total += cpu;
            best = best.min(cpu);
        }
        let ours_ms = ms(total) / f64::from(frames.max(1));

        let raw = dir.join(format!("in-{}.raw", name(format)));
        std::fs::write(&raw, &frame).unwrap();
        let peer = swscale_ms(&raw, format, width, height, out_w, out_h, frames);
        let theirs = swscale_frame(&raw, format, width, height, out_w, out_h, &dir);
        let psnr = theirs.as_ref().map(|t| psnr(&ours[..(out_w * out_h) as usize], &t[..(out_w * out_h) as usize]));
        let fmt_opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        writeln!(
            report,
            "{:<6} {:>10.3} {:>10.3} {:>10} {:>12} {:>10}",
            name(format),
            ours_ms,
            ms(best),
            fmt_opt(peer, 3),
            fmt_opt(peer.map(|p| ours_ms / p), 2),
            fmt_opt(psnr, 1),
        )
        .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    report
}

fn name(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Nv12 => "NV12",
        PixelFormat::Yu12 => "YU12",
        PixelFormat::Yuyv => "YUYV",
    }
}

fn ffmpeg_pix_fmt(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Nv12 => "nv12",
        PixelFormat::Yu12 => "yuv420p",
        PixelFormat::Yuyv => "yuyv422",
    }
}

/// A zone plate in luma (fine detail that aliases when sampled) over colour ramps in chroma,
/// tightly packed in `format`.
fn test_frame(format: PixelFormat, width: u32, height: u32) -> (Input, Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    let luma = |x: usize, y: usize| {
        let (dx, dy) = (x as f64 - w as f64 / 2.0, y as f64 - h as f64 / 2.0);
        (128.0 + 110.0 * ((dx * dx + dy * dy) * std::f64::consts::PI / w as f64).cos()) as u8
    };
    let u = |x: usize, _y: usize| (x * 255 / w) as u8;
    let v = |_x: usize, y: usize| (y * 255 / h) as u8;
    let stride = if format == PixelFormat::Yuyv { 2 * w } else { w };
    let input = Input { format, width, height, stride: stride as u32 };
    let mut f = vec![0u8; input.frame_bytes().unwrap_or(0)];
    if f.is_empty() {
        return (input, f);
    }
    match format {
        PixelFormat::Yuyv => {
            for y in 0..h {
                for x in 0..w {
                    f[y * stride + 2 * x] = luma(x, y);
                    f[y * stride + 2 * x + 1] = if x % 2 == 0 { u(x, y) } else { v(x, y) };
                }
            }
        }
        PixelFormat::Nv12 | PixelFormat::Yu12 => {
            for y in 0..h {
                for x in 0..w {
                    f[y * w + x] = luma(x, y);
                }
            }
            let (c, cw, ch) = (w * h, w / 2, h / 2);
            for y in 0..ch {
                for x in 0..cw {
                    let (cu, cv) = (u(2 * x, 2 * y), v(2 * x, 2 * y));
                    if format == PixelFormat::Nv12 {
                        f[c + y * w + 2 * x] = cu;
                        f[c + y * w + 2 * x + 1] = cv;
                    } else {
                        f[c + y * cw + x] = cu;
                        f[c + cw * ch + y * cw + x] = cv;
                    }
                }
            }
        }
    }
    (input, f)
}

fn ffmpeg_input(cmd: &mut Command, format: PixelFormat, w: u32, h: u32) {
    cmd.args(["-hide_banner", "-nostdin", "-threads", "1", "-filter_threads", "1"]).args([
        "-f",
        "rawvideo",
        "-pix_fmt",
        ffmpeg_pix_fmt(format),
        "-s",
        &format!("{w}x{h}"),
    ]);
}

/// swscale's CPU time per frame: `frames` loops of the one-frame file, with the scale filter
/// minus without it.
fn swscale_ms(raw: &Path, format: PixelFormat, w: u32, h: u32, ow: u32, oh: u32, frames: u32) -> Option<f64> {
    let cpu = |filter: &str| -> Option<f64> {
        let mut cmd = Command::new("ffmpeg");
        ffmpeg_input(&mut cmd, format, w, h);
        cmd.args(["-stream_loop", &(frames.max(1) - 1).to_string(), "-i"])
            .arg(raw)
            .args(["-vf", filter, "-benchmark", "-f", "null", "-"])
            .stdout(Stdio::null());
        let out = cmd.output().ok()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.starts_with("bench: utime="))?;
        let secs = |key: &str| -> Option<f64> {
            line.split_whitespace().find_map(|f| f.strip_prefix(key))?.trim_end_matches('s').parse().ok()
        };
        Some(secs("utime=")? + secs("stime=")?)
    };
    let with = cpu(&format!("scale={ow}:{oh}:flags=area,format=yuv420p"))?;
    let without = cpu("null")?;
    Some((with - without).max(0.0) * 1000.0 / f64::from(frames.max(1)))
}

/// swscale's I420 output of the one frame, for the PSNR column.
fn swscale_frame(raw: &Path, format: PixelFormat, w: u32, h: u32, ow: u32, oh: u32, dir: &Path) -> Option<Vec<u8>> {
    let out = dir.join("swscale.yuv");
    let mut cmd = Command::new("ffmpeg");
    ffmpeg_input(&mut cmd, format, w, h);
    cmd.args(["-v", "error", "-y", "-i"])
        .arg(raw)
        .args(["-vf", &format!("scale={ow}:{oh}:flags=area,format=yuv420p"), "-f", "rawvideo"])
        .arg(&out);
    let ok = cmd.status().ok()?.success();
    let data = std::fs::read(&out).ok().filter(|d| ok && d.len() == (ow * oh * 3 / 2) as usize);
    let _ = std::fs::remove_file(&out);
    data
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = se / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time of the calling thread (the machine is shared; wall time would measure the others).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}
