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
fn mjpeg_from_a_camera_is_passed_through_never_re_encoded() {
    let out = uavstream(&["--source", "v4l2", "--codec", "mjpeg", "--encoder", "software", "--port", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use --encoder auto or passthrough"), "{err}");
    let out = uavstream(&["--source", "v4l2", "--codec", "mjpeg", "--pixel-format", "NV12", "--port", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pixel-format NV12 cannot be"), "{err}");
}
