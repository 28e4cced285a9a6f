//! Configuration tests: layers, spellings, cameras and streams, errors.
use super::parse::parse_bitrate;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[test]
fn every_key_is_documented_where_operators_look() {
    // The firmware's /etc/default file, the boot-configuration guide and the README list every
    // key: a key added here without them is invisible to whoever builds the image.
    let default_file = include_str!("../../dist/default/uavstream");
    let boot_config = include_str!("../../docs/boot-config.md");
    let readme = include_str!("../../README.md");
    for k in KEYS {
        // A stream-only key is shown as the second stream's.
        let name = if k.plain { k.name.to_owned() } else { format!("stream2.{}", k.name) };
        let line = format!("#{}=", env_name(&name));
        assert!(default_file.contains(&line), "dist/default/uavstream lacks {line}");
        if !k.default.is_empty() && k.name != "auth-file" {
            assert!(
                default_file.contains(&format!("{line}{}\n", k.default)),
                "dist/default/uavstream: {line} should show the default {}",
                k.default
            );
        }
        let cell = if k.plain { format!("`{}`", k.name) } else { format!("`streamN.{}`", k.name) };
        assert!(boot_config.contains(&cell), "docs/boot-config.md lacks {cell}");
        assert!(readme.contains(&cell), "README.md lacks {cell}");
    }
}

#[test]
fn defaults_resolve() {
    let c = RawConfig::new().resolve().unwrap();
    let cam = &c.cameras[0];
    assert_eq!((cam.width, cam.height, cam.fps, c.port), (1280, 720, 30, 8554));
    assert_eq!(cam.source, SourceSpec::TestPattern);
    assert_eq!((c.cameras.len(), c.streams.len()), (1, 1));
    assert_eq!((c.streams[0].path.as_str(), c.streams[0].width, c.streams[0].camera), ("/live", 1280, 0));
    assert_eq!(c.pipeline(0).idr_period(), 30);
    assert_eq!(c.max_rtp_packet(), 1452);
}

#[test]
fn precedence_is_default_cmdline_env_flag() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline("console=ttyS0 uavstream.width=640 uavstream.height=480 uavstream.fps=15 uavstream.port=1000");
    raw.apply_env(env(&[("UAVSTREAM_HEIGHT", "360"), ("UAVSTREAM_FPS", "20"), ("HOME", "/root")]));
    // flags come last, whatever order the layers are applied in
    raw.set("fps", "25", Origin::Flag);
    raw.apply_env(env(&[("UAVSTREAM_FPS", "21")]));
    raw.apply_cmdline("uavstream.fps=22");
    let c = raw.resolve().unwrap();
    let cam = &c.cameras[0];
    assert_eq!((cam.width, cam.height, cam.fps, c.port), (640, 360, 25, 1000));
    assert_eq!((c.streams[0].width, c.streams[0].height, c.streams[0].fps), (640, 360, 25));
    assert_eq!(raw.get("width").1, Origin::KernelCmdline);
    assert_eq!(raw.get("height").1, Origin::Environment);
    assert_eq!(raw.get("fps").1, Origin::Flag);
    assert_eq!(raw.get("bitrate").1, Origin::Default);
    assert!(raw.describe().contains("width            = 640                      (kernel command line)"));
}

#[test]
fn cmdline_keys_use_kernel_quoting_and_dash_underscore_equivalence() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "uavstream.max_clients=4 \"uavstream.path=/front cam\" uavstream.session-timeout=30 -- uavstream.port=1",
    );
    assert_eq!(raw.get("max-clients"), ("4", Origin::KernelCmdline));
    assert_eq!(raw.get("path"), ("/front cam", Origin::KernelCmdline));
    assert_eq!(raw.get("session-timeout"), ("30", Origin::KernelCmdline));
    assert_eq!(raw.get("port"), ("8554", Origin::Default));
    // the path has a space: a clear error naming the cmdline key
    let e = raw.resolve().unwrap_err();
    assert_eq!((e.key.as_str(), e.origin), ("path", Origin::KernelCmdline));
    assert!(e.to_string().contains("uavstream.path"), "{e}");
}

#[test]
fn fanout_threads_in_all_three_spellings() {
    assert_eq!(RawConfig::new().resolve().unwrap().fanout_threads, 1);
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.fanout-threads=4");
    assert_eq!(raw.resolve().unwrap().fanout_threads, 4);
    raw.apply_env(env(&[("UAVSTREAM_FANOUT_THREADS", "3")]));
    assert_eq!(raw.resolve().unwrap().fanout_threads, 3);
    raw.set("fanout-threads", "2", Origin::Flag);
    assert_eq!(raw.get("fanout-threads"), ("2", Origin::Flag));
    assert_eq!(raw.resolve().unwrap().fanout_threads, 2);
}

#[test]
fn unknown_keys_warn() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.widht=1 uavstream.fps uavstream.width=320");
    raw.apply_env(env(&[("UAVSTREAM_HIEGHT", "2"), ("UAVSTREAM_PROC_CMDLINE", "x")]));
    assert_eq!(raw.warnings.len(), 3, "{:?}", raw.warnings);
    assert!(raw.warnings[0].contains("uavstream.widht"));
    assert!(raw.warnings[2].contains("UAVSTREAM_HIEGHT"));
    assert_eq!(raw.resolve().unwrap().cameras[0].width, 320);
}

#[test]
fn bad_values_name_key_value_and_origin() {
    let cases: &[(&str, &str, Origin, &str)] = &[
        ("width", "abc", Origin::Flag, "--width"),
        ("width", "641", Origin::Environment, "UAVSTREAM_WIDTH"),
        ("fps", "0", Origin::KernelCmdline, "uavstream.fps"),
        ("port", "70000", Origin::Flag, "--port"),
        ("bitrate", "2G", Origin::Flag, "--bitrate"),
        ("listen", "localhost", Origin::Flag, "--listen"),
        ("source", "v4l3", Origin::Flag, "--source"),
        ("device", "video0", Origin::Flag, "--device"),
        ("pixel-format", "NV1", Origin::Flag, "--pixel-format"),
        ("stall-timeout", "0", Origin::Flag, "--stall-timeout"),
        ("source", "file:", Origin::Flag, "--source"),
        ("encoder", "x264", Origin::Flag, "--encoder"),
        ("path", "live", Origin::Flag, "--path"),
        ("max-clients", "0", Origin::Flag, "--max-clients"),
        ("fanout-threads", "0", Origin::Flag, "--fanout-threads"),
        ("fanout-threads", "17", Origin::KernelCmdline, "uavstream.fanout-threads"),
        ("rtp-ports", "6000-6010", Origin::Flag, "--rtp-ports"),
        ("rtp-ports", "7000-6000", Origin::Flag, "--rtp-ports"),
        ("mtu", "100", Origin::Flag, "--mtu"),
        ("session-timeout", "1", Origin::Flag, "--session-timeout"),
        ("log-level", "loud", Origin::Flag, "--log-level"),
        ("codec", "vp8", Origin::Flag, "--codec"),
        ("jpeg-quality", "0", Origin::Environment, "UAVSTREAM_JPEG_QUALITY"),
        ("jpeg-quality", "101", Origin::Flag, "--jpeg-quality"),
        ("http-port", "65536", Origin::KernelCmdline, "uavstream.http-port"),
        ("max-http-clients", "0", Origin::Flag, "--max-http-clients"),
        ("rtp-dest", "10.0.0.1", Origin::Flag, "--rtp-dest"),
        ("rtp-dest", "10.0.0.1:0", Origin::Flag, "--rtp-dest"),
        ("dscp", "64", Origin::Flag, "--dscp"),
        ("multicast-group", "10.0.0.1", Origin::Flag, "--multicast-group"),
        ("multicast-group", "ff02:x", Origin::Environment, "UAVSTREAM_MULTICAST_GROUP"),
        ("multicast-group", "::1", Origin::KernelCmdline, "uavstream.multicast-group"),
        ("multicast-port", "5005", Origin::Flag, "--multicast-port"),
        ("multicast-port", "0", Origin::Flag, "--multicast-port"),
        ("multicast-port", "65535", Origin::Flag, "--multicast-port"),
        ("multicast-ttl", "0", Origin::Flag, "--multicast-ttl"),
        ("multicast-ttl", "256", Origin::Environment, "UAVSTREAM_MULTICAST_TTL"),
        ("multicast-interface", "nosuchif0", Origin::Flag, "--multicast-interface"),
        ("abr", "yes", Origin::KernelCmdline, "uavstream.abr"),
        ("abr-min", "fast", Origin::Flag, "--abr-min"),
        ("abr-max", "0", Origin::Environment, "UAVSTREAM_ABR_MAX"),
        ("abr-min", "3M", Origin::Flag, "--abr-min"),
    ];
    for (key, value, origin, spelled) in cases {
        let mut raw = RawConfig::new();
        raw.set(key, value, *origin);
        let e = raw.resolve().unwrap_err();
        assert_eq!(e.key, *key);
        assert_eq!(e.value, *value);
        assert_eq!(e.origin, *origin);
        let msg = e.to_string();
        assert!(msg.contains(spelled) && msg.contains(value), "{msg}");
    }
}

#[test]
fn auth_from_env_and_file_never_from_the_kernel_command_line() {
    let mut raw = RawConfig::new();
    raw.apply_env(env(&[("UAVSTREAM_AUTH", "pilot:s3cret,ground:station")]));
    let c = raw.resolve().unwrap();
    assert_eq!(c.auth_users.len(), 2);
    assert_eq!(c.auth_users[1], AuthUser { user: "ground".into(), password: "station".into(), path: None });
    assert!(!raw.describe().contains("s3cret"), "{}", raw.describe());

    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.auth=pilot:s3cret");
    let e = raw.resolve().unwrap_err();
    assert_eq!((e.key.as_str(), e.origin), ("auth", Origin::KernelCmdline));
    assert!(e.reason.contains("refused"), "{e}");

    let dir = std::env::temp_dir().join(format!("uavstream-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("users");
    std::fs::write(&f, "# operators\npilot:pa:ss\n\n/live viewer:look\n").unwrap();
    let mut raw = RawConfig::new();
    raw.apply_cmdline(&format!("uavstream.auth-file={}", f.display()));
    let c = raw.resolve().unwrap();
    assert_eq!(c.auth_users[0].password, "pa:ss");
    assert_eq!(c.auth_users[1].path.as_deref(), Some("/live"));
    std::fs::write(&f, "nocolon\n").unwrap();
    let e = raw.resolve().unwrap_err();
    assert!(e.reason.contains("line 1"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn multicast_is_off_by_default_and_on_with_a_group() {
    let c = RawConfig::new().resolve().unwrap();
    assert_eq!(c.streams[0].multicast, None);
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.multicast-group=239.255.42.42 uavstream.multicast_ttl=4");
    raw.apply_env(env(&[("UAVSTREAM_MULTICAST_PORT", "6000")]));
    raw.set("multicast-interface", "lo", Origin::Flag);
    let m = raw.resolve().unwrap().streams[0].multicast.clone().unwrap();
    assert_eq!((m.group, m.port, m.ttl), ("239.255.42.42".parse().unwrap(), 6000, 4));
    assert_eq!(m.interface.as_ref().map(|(n, i)| (n.as_str(), *i > 0)), Some(("lo", true)));
    let mut raw = RawConfig::new();
    raw.set("multicast-group", "ff15::4242", Origin::Flag);
    let m = raw.resolve().unwrap().streams[0].multicast.clone().unwrap();
    assert_eq!((m.port, m.ttl, m.interface), (5004, 1, None));
    assert!(m.group.is_ipv6());
}

#[test]
fn two_cameras_three_streams_on_the_kernel_command_line_alone() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "console=ttyS0 uavstream.source=v4l2 uavstream.device=/dev/video0 uavstream.width=1920 \
         uavstream.height=1080 uavstream.stream2.path=/low uavstream.stream2.width=640 \
         uavstream.stream2.height=360 uavstream.stream2.fps=15 uavstream.stream2.bitrate=500k \
         uavstream.camera2.source=v4l2 uavstream.camera2.device=/dev/video2 uavstream.camera2_width=640 \
         uavstream.camera2.height=480 uavstream.stream3.camera=2 uavstream.stream3.codec=mjpeg \
         uavstream.stream3.path=/rear uavstream.stream3.dscp=46",
    );
    assert!(raw.warnings.is_empty(), "{:?}", raw.warnings);
    let c = raw.resolve().unwrap();
    assert_eq!(c.cameras.len(), 2);
    assert_eq!(c.streams.len(), 3);
    let s: Vec<_> = c.streams.iter().map(|s| (s.path.as_str(), s.camera, s.width, s.height, s.fps)).collect();
    assert_eq!(s, [("/live", 0, 1920, 1080, 30), ("/low", 0, 640, 360, 15), ("/rear", 1, 640, 480, 30)]);
    assert_eq!(
        (c.streams[1].bitrate, c.streams[2].codec, c.streams[2].dscp, c.streams[0].dscp),
        (500_000, Codec::Jpeg, 46, 0)
    );
    assert_eq!(c.cameras[1].device, "/dev/video2");
    let p = c.pipeline(2);
    assert_eq!((p.source, p.width, p.codec), (SourceSpec::V4l2, 640, Codec::Jpeg));
    let text = raw.describe();
    assert!(text.contains("# camera2\n") && text.contains("# stream3\n"), "{text}");
    assert!(text.contains("stream2.path     = /low "), "{text}");
    assert!(text.contains("camera2.width    = 640 "), "{text}");
    assert!(text.contains("stream1.width    = (the camera's)"), "{text}");
}

#[test]
fn indexed_keys_in_every_spelling() {
    let mut raw = RawConfig::new();
    raw.apply_env(env(&[("UAVSTREAM_STREAM2_PATH", "/env"), ("UAVSTREAM_STREAM2_IDR_INTERVAL", "15")]));
    assert!(raw.set("stream2-bitrate", "1M", Origin::Flag));
    assert!(raw.set("stream2.jpeg_quality", "50", Origin::Flag));
    assert!(!raw.set("stream0.path", "/x", Origin::Flag));
    assert!(!raw.set("stream9.path", "/x", Origin::Flag), "beyond MAX_STREAMS");
    assert!(!raw.set("camera2.path", "/x", Origin::Flag), "path is a stream key");
    assert!(!raw.set("stream2.device", "/dev/video1", Origin::Flag), "device is a camera key");
    assert!(raw.set("stream1.fps", "10", Origin::Flag), "stream1.fps: the first stream slower than its camera");
    let c = raw.resolve().unwrap();
    assert_eq!(c.streams[1].path, "/env");
    assert_eq!((c.streams[1].idr_interval, c.streams[1].bitrate, c.streams[1].jpeg_quality), (15, 1_000_000, 50));
    assert_eq!((c.cameras[0].fps, c.streams[0].fps, c.streams[1].fps), (30, 10, 30));
    assert_eq!(raw.get("stream2.path"), ("/env", Origin::Environment));
    // A stream with no path of its own serves /streamN.
    let mut raw = RawConfig::new();
    raw.set("stream2.codec", "mjpeg", Origin::Flag);
    assert_eq!(raw.resolve().unwrap().streams[1].path, "/stream2");
}

#[test]
fn conflicts_exit_naming_keys_and_values() {
    /// (keys set, the key the error names, its value, words of the reason)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        (&[("stream2.path", "/live")], "stream2.path", "/live", "stream1 already serves this path"),
        (&[("stream2.path", "/live/")], "stream2.path", "/live/", "stream1"),
        (&[("stream2.width", "1920")], "stream2.width", "1920", "larger than its camera's width"),
        (&[("stream1.height", "1080")], "stream1.height", "1080", "larger than its camera's height"),
        (&[("stream2.fps", "60")], "stream2.fps", "60", "camera1 gives 30"),
        (&[("stream2.camera", "2")], "stream2.camera", "2", "no camera2"),
        (&[("stream3.path", "/x")], "stream3.path", "/x", "no stream2.* key"),
        (&[("camera3.device", "/dev/video3")], "camera3.device", "/dev/video3", "no camera2.* key"),
        (&[("camera2.source", "v4l2")], "camera2.source", "v4l2", "camera2 feeds no stream"),
        (
            &[("multicast-group", "239.1.1.1"), ("stream2.multicast-group", "239.1.1.1")],
            "stream2.multicast-group",
            "239.1.1.1",
            "stream1 already sends to this group at port 5004",
        ),
        (
            &[("sdp-out", "/tmp/a.sdp"), ("stream2.sdp-out", "/tmp/a.sdp")],
            "stream2.sdp-out",
            "/tmp/a.sdp",
            "stream1 already writes this file",
        ),
        (&[("stream2.dscp", "64")], "stream2.dscp", "64", "between 0 and 63"),
        (
            &[("source", "v4l2"), ("stream1.width", "640")],
            "stream1.width",
            "640",
            "the first stream of camera1 is captured at the camera's size and rate",
        ),
        (
            &[
                ("source", "v4l2"),
                ("device", "auto"),
                ("camera2.source", "v4l2"),
                ("camera2.device", "/dev/video2"),
                ("stream2.camera", "2"),
            ],
            "device",
            "auto",
            "each needs its device",
        ),
    ];
    for (pairs, key, value, reason) in cases {
        let mut raw = RawConfig::new();
        for (k, v) in *pairs {
            assert!(raw.set(k, v, Origin::KernelCmdline), "{k}");
        }
        let e = raw.resolve().unwrap_err();
        assert_eq!((e.key.as_str(), e.value.as_str()), (*key, *value), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(reason) && msg.contains(&format!("uavstream.{key}")), "{msg}");
    }
    let mut raw = RawConfig::new();
    raw.set("stream2.path", "/live", Origin::Environment);
    assert!(raw.resolve().unwrap_err().to_string().contains("UAVSTREAM_STREAM2_PATH"));
    raw.set("stream2.path", "/live", Origin::Flag);
    assert!(raw.resolve().unwrap_err().to_string().contains("--stream2-path"));
}

#[test]
fn bitrate_suffixes() {
    assert_eq!(parse_bitrate("2M"), Ok(2_000_000));
    assert_eq!(parse_bitrate("500k"), Ok(500_000));
    assert_eq!(parse_bitrate("8000000"), Ok(8_000_000));
    assert!(parse_bitrate("9999").is_err());
}

#[test]
fn raw_frame_sockets_per_camera_in_every_spelling() {
    let c = RawConfig::new().resolve().unwrap();
    assert_eq!(c.cameras[0].raw, None, "off by default");
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "uavstream.raw-socket=/run/uavstream/raw.sock uavstream.camera2.raw-socket=/run/uavstream/rear.sock",
    );
    raw.apply_env(env(&[("UAVSTREAM_CAMERA2_RAW_CLIENTS", "10"), ("UAVSTREAM_RAW_SOCKET_MODE", "0666")]));
    raw.set("stream2.camera", "2", Origin::Flag);
    let c = raw.resolve().unwrap();
    let first = c.cameras[0].raw.clone().unwrap();
    assert_eq!((first.path.to_str(), first.mode, first.clients), (Some("/run/uavstream/raw.sock"), 0o666, 4));
    let second = c.cameras[1].raw.clone().unwrap();
    assert_eq!((second.path.to_str(), second.mode, second.clients), (Some("/run/uavstream/rear.sock"), 0o660, 10));
    assert!(raw.describe().contains("camera2.raw-clients = 10"), "{}", raw.describe());

    for (key, value, reason) in [
        ("raw-socket", "raw.sock", "absolute file path"),
        ("raw-socket", "/run/uavstream/", "absolute file path"),
        ("raw-socket-mode", "0999", "octal permission bits"),
        ("raw-socket-mode", "1777", "octal permission bits"),
        ("raw-clients", "0", "between 1 and 32"),
        ("camera1.raw-clients", "33", "between 1 and 32"),
    ] {
        let mut raw = RawConfig::new();
        raw.set("raw-socket", "/run/uavstream/raw.sock", Origin::Default);
        raw.set(key, value, Origin::Environment);
        let e = raw.resolve().unwrap_err();
        assert_eq!(e.value, value, "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }
    let mut raw = RawConfig::new();
    raw.set("raw-socket", &format!("/{}", "x".repeat(100)), Origin::Flag);
    assert!(raw.resolve().unwrap_err().to_string().contains("--raw-socket"));
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "uavstream.raw-socket=/run/a.sock uavstream.camera2.raw-socket=/run/a.sock uavstream.stream2.camera=2",
    );
    let e = raw.resolve().unwrap_err();
    assert_eq!((e.key.as_str(), e.value.as_str()), ("camera2.raw-socket", "/run/a.sock"));
    assert!(e.to_string().contains("camera1 already serves raw frames on this socket"), "{e}");
}

#[test]
fn abr_is_off_by_default_and_its_bounds_follow_the_bitrate() {
    let c = RawConfig::new().resolve().unwrap();
    assert_eq!(c.streams[0].abr, None);
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.abr=on uavstream.bitrate=4M uavstream.stream2.abr=on uavstream.stream2.bitrate=1M");
    raw.apply_env(env(&[("UAVSTREAM_STREAM2_ABR_MIN", "300k"), ("UAVSTREAM_STREAM2_ABR_MAX", "1500k")]));
    let c = raw.resolve().unwrap();
    // Defaults: the configured bitrate as the ceiling, a tenth of it (at least the floor) as the floor.
    assert_eq!(c.streams[0].abr, Some(AbrSettings { min_bps: 400_000, max_bps: 4_000_000 }));
    assert_eq!(c.streams[1].abr, Some(AbrSettings { min_bps: 300_000, max_bps: 1_500_000 }));
    let mut raw = RawConfig::new();
    raw.set("abr", "on", Origin::Flag);
    raw.set("bitrate", "1M", Origin::Flag);
    assert_eq!(raw.resolve().unwrap().streams[0].abr, Some(AbrSettings { min_bps: 150_000, max_bps: 1_000_000 }));
    // Bounds are checked with ABR off too; abr-min above abr-max names abr-min.
    let mut raw = RawConfig::new();
    raw.set("stream2.abr-max", "500k", Origin::Flag);
    raw.set("stream2.abr-min", "600k", Origin::Flag);
    let e = raw.resolve().unwrap_err();
    assert_eq!((e.key.as_str(), e.value.as_str()), ("stream2.abr-min", "600k"));
    assert!(e.to_string().contains("--stream2-abr-min") && e.reason.contains("500"), "{e}");
}

#[test]
fn libcamera_cameras_take_controls_in_every_spelling() {
    use crate::source::libcamera::settings::{ControlVal, Flip, Real};
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "uavstream.source=libcamera uavstream.device=imx477 uavstream.camera2.source=libcamera \
         uavstream.camera2.device=1 uavstream.camera2.awb=daylight uavstream.stream2.camera=2",
    );
    raw.apply_env(env(&[("UAVSTREAM_EV", "-1.5"), ("UAVSTREAM_CAMERA2_HFLIP", "1")]));
    raw.set("camera2-rotation", "180", Origin::Flag);
    let c = raw.resolve().unwrap();
    let (a, b) = (&c.cameras[0], &c.cameras[1]);
    assert_eq!((a.source.clone(), a.device.as_str(), b.device.as_str()), (SourceSpec::Libcamera, "imx477", "1"));
    let ev = a.libcamera.controls.iter().find(|s| s.key == "ev").unwrap();
    assert_eq!(ev.targets[0][0], ("ExposureValue", ControlVal::Float(Real(-1.5))));
    let awb = b.libcamera.controls.iter().find(|s| s.key == "camera2.awb").unwrap();
    assert_eq!(awb.targets[0][0], ("AwbMode", ControlVal::Int(5)));
    assert_eq!(b.libcamera.flip, Flip { hflip: false, vflip: true }, "hflip and a 180 degree turn");
    // The capturing stream of camera 1 knows no further stream; camera 2's neither.
    assert!(c.pipeline(0).further_sizes.is_empty());
}

#[test]
fn libcamera_bad_values_name_the_key() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.source=libcamera uavstream.awb=sunny");
    let e = raw.resolve().unwrap_err();
    assert_eq!((e.key.as_str(), e.value.as_str(), e.origin), ("awb", "sunny", Origin::KernelCmdline));
    let mut raw = RawConfig::new();
    raw.set("tuning-file", "/nonexistent/imx477.json", Origin::Environment);
    assert_eq!(raw.resolve().unwrap_err().key, "tuning-file");
    let mut raw = RawConfig::new();
    raw.set("device", "imx477", Origin::Flag);
    assert!(raw.resolve().is_err(), "a model name is a V4L2 error");
    let mut raw = RawConfig::new();
    raw.apply_cmdline("uavstream.source=libcamera uavstream.camera2.source=libcamera uavstream.stream2.camera=2");
    assert!(raw.resolve().unwrap_err().reason.contains("several libcamera cameras"));
}

#[test]
fn a_capturing_libcamera_stream_knows_its_cameras_smaller_streams() {
    let mut raw = RawConfig::new();
    raw.apply_cmdline(
        "uavstream.source=libcamera uavstream.stream2.camera=1 uavstream.stream2.width=640 uavstream.stream2.height=360",
    );
    let c = raw.resolve().unwrap();
    assert_eq!(c.pipeline(0).further_sizes, vec![(640, 360)]);
    assert!(c.pipeline(1).fed && c.pipeline(1).further_sizes.is_empty());
}
