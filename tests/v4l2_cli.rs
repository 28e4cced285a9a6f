//! V4L2 command-line behaviour that needs no camera (real devices are tested by `rig/run`):
//! `--list-devices` and the start-up error of `source=v4l2` when the device cannot be opened.

use std::process::Command;

fn uavstream(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_uavstream"))
        .args(args)
        .env("UAVSTREAM_PROC_CMDLINE", "")
        .output()
        .expect("run uavstream")
}

#[test]
fn list_devices_prints_every_node_or_says_there_is_none() {
    let out = uavstream(&["--list-devices"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("no V4L2 devices") || text.contains("/dev/video"), "{text}");
}

#[test]
fn a_device_that_cannot_be_opened_is_a_start_up_error_naming_it() {
    let out = uavstream(&["--source", "v4l2", "--device", "/dev/video-uavstream-test-none", "--port", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/video-uavstream-test-none"), "{err}");
}

#[test]
fn pixel_formats_outside_the_supported_set_are_refused_before_any_device_is_opened() {
    let out = uavstream(&["--source", "v4l2", "--pixel-format", "RGB3", "--device", "/dev/null", "--port", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RGB3 is not one uavstream captures (NV12, YU12, YUYV, MJPG, H264)"), "{err}");
}

#[test]
fn a_coded_pixel_format_that_is_not_the_streamed_codec_is_refused_before_any_device_is_opened() {
    // An MJPEG camera cannot feed an H.264 stream (no decoder) and vice versa; raw formats can
    // feed either (encoded), so only the coded mismatch is refused.
    for (codec, pixel_format, want) in [
        ("mjpeg", "H264", "pixel-format H264 cannot be streamed as MJPEG"),
        ("h264", "MJPG", "pixel-format MJPG cannot be streamed as H.264"),
    ] {
        let out = uavstream(&[
            "--source",
            "v4l2",
            "--codec",
            codec,
            "--pixel-format",
            pixel_format,
            "--device",
            "/dev/null",
            "--port",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}
