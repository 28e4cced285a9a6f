//! The test pattern's time code survives the real encoders and decoders: ffmpeg decodes the
//! daemon's H.264 and RTP/JPEG streams to grey pixels and every frame's capture time reads back,
//! one frame interval apart — what `uavstream-bench latency` relies on.
mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::Daemon;
use uavstream::source::testpattern::{monotonic_100us, read_time_code};

fn decoded_time_codes(codec: &str) -> (Vec<u32>, u32) {
    let (w, h) = (640usize, 360usize);
    let d = Daemon::start(&["--width", "640", "--height", "360", "--codec", codec, "--bitrate", "1M"]);
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", &d.url()])
        .args(["-frames:v", "30", "-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    let mut out = child.stdout.take().unwrap();
    let mut frame = vec![0u8; w * h];
    let mut codes = Vec::new();
    let mut last_read = 0;
    while out.read_exact(&mut frame).is_ok() {
        last_read = monotonic_100us();
        codes.extend(read_time_code(&frame, w, h, w));
    }
    let _ = child.wait();
    drop(d);
    (codes, last_read)
}

#[test]
fn the_capture_time_reads_back_from_decoded_h264_and_jpeg_frames() {
    for codec in ["h264", "mjpeg"] {
        let (codes, last_read) = decoded_time_codes(codec);
        assert!(codes.len() >= 28, "{codec}: only {} of 30 frames had a readable time code", codes.len());
        // Consecutive frames of a 30 fps camera: 333 units of 100 µs apart (a frame the
        // pattern skipped under load makes a gap of two or more intervals, never less than one).
        for pair in codes.windows(2) {
            let step = pair[1].wrapping_sub(pair[0]);
            assert!((300..=10_000).contains(&step), "{codec}: time codes {:?}", pair);
        }
        // Captured before it was read back, on the same clock.
        let age = last_read.wrapping_sub(*codes.last().unwrap());
        assert!(age < 100_000, "{codec}: the last frame is {age} x 100 µs old: not the same clock");
    }
}
