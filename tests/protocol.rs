//! RTSP/RTP behaviour of the real binary at the protocol level: fast join, slot limits,
//! file replay without re-encoding, configuration errors, clean shutdown.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client_udp_pair, make_clip, recv_with_tos, rtp_nal_type, rtp_seq, run_with_timeout, Daemon, RtspClient};
use uavstream::media::h264::{annex_b, nal_unit_type};
use uavstream::rtp::h264::Depacketizer;
use uavstream::wbuf::WBuf;

#[test]
fn late_joiner_gets_parameter_sets_and_an_idr_first() {
    let d = Daemon::start(&["--width", "320", "--height", "240", "--idr-interval", "300"]);
    // One client already playing, so the stream is mid-GOP when the others join.
    let mut early = RtspClient::connect(&d.url());
    early.play_tcp();
    for _ in 0..60 {
        early.next_frame().expect("early client receives");
    }
    let mut joins = Vec::new();
    for i in 0..5 {
        // Vary the phase of the join against the 33 ms frame clock.
        std::thread::sleep(Duration::from_millis(300 + 7 * i));
        let mut c = RtspClient::connect(&d.url());
        let url = c.url.clone();
        assert_eq!(c.request("DESCRIBE", &url, &[]).status, 200);
        let s =
            c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
        let session = s.session();
        let t0 = Instant::now();
        let p = c.request("PLAY", &url, &[("Session", &session)]);
        assert_eq!(p.status, 200);
        let rtp_info = p.header("RTP-Info").expect("RTP-Info in PLAY").to_owned();
        assert!(rtp_info.contains("rtptime=") && !rtp_info.contains("seq="), "{rtp_info}");
        let mut types = Vec::new();
        let first_idr_at = loop {
            let f = c.next_frame().expect("frames after PLAY");
            if f.channel != 0 {
                continue;
            }
            let t = rtp_nal_type(&f.data);
            types.push(t);
            if t == 5 {
                break f.at;
            }
            assert!(types.len() < 10, "no IDR soon after PLAY: {types:?}");
        };
        assert_eq!(&types[..2], &[7, 8], "SPS and PPS come first: {types:?}");
        assert!(!types.contains(&1), "a P-slice before the IDR: {types:?}");
        joins.push(first_idr_at.duration_since(t0));
    }
    joins.sort();
    eprintln!(
        "figure: PLAY to first IDR packet over 5 late joins (live software encoder, 320x240@30): median {:.1} ms, max {:.1} ms",
        joins[2].as_secs_f64() * 1e3,
        joins[4].as_secs_f64() * 1e3
    );
    // The early client kept receiving without a gap while others joined.
    let mut last = None;
    for _ in 0..30 {
        let f = early.next_frame().unwrap();
        if f.channel == 0 {
            if let Some(l) = last {
                assert_eq!(rtp_seq(&f.data), u16::wrapping_add(l, 1));
            }
            last = Some(rtp_seq(&f.data));
        }
    }
}

#[test]
fn seventeenth_client_gets_503_and_teardown_frees_a_slot() {
    let d = Daemon::start(&["--width", "160", "--height", "120", "--max-clients", "16"]);
    let mut clients = Vec::new();
    for i in 0..16 {
        let mut c = RtspClient::connect(&d.url());
        let url = c.url.clone();
        let transport = if i % 2 == 0 {
            "RTP/AVP/TCP;unicast;interleaved=0-1".to_owned()
        } else {
            format!("RTP/AVP;unicast;client_port={}-{}", 40000 + 2 * i, 40001 + 2 * i)
        };
        let r = c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", &transport)]);
        assert_eq!(r.status, 200, "client {i}");
        let session = r.session();
        clients.push((c, session));
    }
    let mut extra = RtspClient::connect(&d.url());
    let url = extra.url.clone();
    let r =
        extra.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(r.status, 503);
    // The others are unaffected and a TEARDOWN frees exactly one slot.
    let (mut c0, s0) = clients.remove(0);
    assert_eq!(c0.request("TEARDOWN", &url, &[("Session", &s0)]).status, 200);
    let r =
        extra.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(r.status, 200);
    let mut another = RtspClient::connect(&d.url());
    let r =
        another.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(r.status, 503);
    // Closing a connection frees its session too.
    drop(clients.remove(0));
    std::thread::sleep(Duration::from_millis(300));
    let r =
        another.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(r.status, 200, "slot of a closed connection was not freed");
}

#[test]
fn udp_client_receives_rtp_and_rtcp_sender_reports() {
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let (rtp, rtcp, port) = client_udp_pair();
    rtcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c = RtspClient::connect(&d.url());
    let url = c.url.clone();
    // WinTAK's spelling of the transport (mediamtx #1790).
    let s = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", &format!("RTP/AVP/UDP;unicast;client_port={port}-{}", port + 1))],
    );
    assert_eq!(s.status, 200);
    let transport = s.header("Transport").unwrap();
    assert!(transport.starts_with("RTP/AVP/UDP;unicast;"), "{transport}");
    let server_ports = transport.split("server_port=").nth(1).unwrap().split(';').next().unwrap().to_owned();
    let (srtp, srtcp): (u16, u16) = {
        let (a, b) = server_ports.split_once('-').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    assert_eq!(srtcp, srtp + 1);
    let session = s.session();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)]).status, 200);
    let mut buf = [0u8; 2048];
    let (n, from) = rtp.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), srtp);
    assert_eq!(rtp_nal_type(&buf[..n]), 7, "first packet is the SPS");
    let (n, from) = rtcp.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), srtcp);
    assert_eq!(buf[1], 200, "sender report");
    assert!(n >= 28);
    // Keepalives: GET_PARAMETER and SET_PARAMETER with the session, OPTIONS too.
    for m in ["GET_PARAMETER", "SET_PARAMETER", "OPTIONS"] {
        assert_eq!(c.request(m, &url, &[("Session", &session)]).status, 200, "{m}");
    }
}

#[test]
fn file_source_replays_nal_units_byte_for_byte() {
    let dir = std::env::temp_dir().join(format!("uavstream-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip.h264");
    make_clip(&clip, "320x240", 2, 15);
    let file = std::fs::read(&clip).unwrap();
    let file_nals: Vec<&[u8]> = annex_b(&file).collect();
    let d = Daemon::start(&["--source", &format!("file:{}", clip.display()), "--fps", "30"]);
    let mut c = RtspClient::connect(&d.url());
    let (_s, _) = c.play_tcp();
    let mut au = vec![0u8; 1 << 20];
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut de = Depacketizer::new();
    let mut w = WBuf::new(&mut au);
    while received.len() < 120 {
        let f = c.next_frame().expect("frames");
        if f.channel != 0 {
            continue;
        }
        de.push(&f.data[12..], &mut w).unwrap();
        if common::rtp_marker(&f.data) {
            for nal in annex_b(w.written()) {
                received.push(nal.to_vec());
            }
            w = WBuf::new(&mut au);
        }
    }
    // Every received NAL unit is one of the file's, byte for byte (no re-encoding), and the
    // slices come in the file's order, wrapping at the end of the file.
    let file_set: HashSet<&[u8]> = file_nals.iter().copied().collect();
    for n in &received {
        assert!(file_set.contains(n.as_slice()), "NAL type {} not in the file", n[0] & 0x1f);
    }
    let slices: Vec<&Vec<u8>> = received.iter().filter(|n| matches!(nal_unit_type(n), Some(1 | 5))).collect();
    assert_eq!(nal_unit_type(slices[0]), Some(5), "starts at an IDR");
    let file_slices: Vec<&[u8]> =
        file_nals.iter().copied().filter(|n| matches!(nal_unit_type(n), Some(1 | 5))).collect();
    let start = file_slices.iter().position(|s| *s == slices[0].as_slice()).unwrap();
    for (i, s) in slices.iter().enumerate() {
        assert_eq!(s.as_slice(), file_slices[(start + i) % file_slices.len()], "slice {i} out of order");
    }
    assert!(d.log().contains("without re-encoding"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_path_is_404_and_garbage_gets_400_while_others_play() {
    let d = Daemon::start(&["--width", "160", "--height", "120", "--path", "/cam0"]);
    let url = format!("rtsp://127.0.0.1:{}/cam0", d.port);
    let mut good = RtspClient::connect(&url);
    good.play_tcp();
    let mut c = RtspClient::connect(&url);
    let r = c.request("DESCRIBE", &format!("rtsp://127.0.0.1:{}/live", d.port), &[]);
    assert_eq!(r.status, 404);
    // Pipelined requests in one write, answered in order.
    c.send_raw(
        format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 10\r\n\r\nDESCRIBE {url} RTSP/1.0\r\nCSeq: 11\r\n\r\n").as_bytes(),
    );
    let a = c.read_response().unwrap();
    let b = c.read_response().unwrap();
    assert_eq!((a.header("CSeq"), b.header("CSeq")), (Some("10"), Some("11")));
    assert!(String::from_utf8_lossy(&b.body).contains("a=rtpmap:96 H264/90000"));
    let mut bad = RtspClient::connect(&url);
    bad.send_raw(b"\x16\x03\x01 this is not RTSP\r\n\r\n");
    let r = bad.read_response().expect("an answer");
    assert_eq!(r.status, 400);
    assert!(bad.read_response().is_none(), "connection closed after a malformed request");
    // The good client kept streaming.
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        let f = good.next_frame().unwrap();
        if f.channel == 0 {
            seqs.push(rtp_seq(&f.data));
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
}

#[test]
fn sigterm_sends_bye_and_exits_zero_within_a_second() {
    let mut d = Daemon::start(&["--width", "160", "--height", "120"]);
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    c.next_frame().unwrap();
    d.signal(15);
    let t = Instant::now();
    let status = d.wait_exit(Duration::from_secs(3)).expect("exited");
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert!(status.success(), "{status:?}");
    let mut saw_bye = false;
    while let Some(f) = c.next_frame() {
        if f.channel == 1 && f.data.windows(2).any(|w| w[0] & 0xc0 == 0x80 && w[1] == 203) {
            saw_bye = true;
        }
    }
    assert!(saw_bye, "no RTCP BYE on the interleaved RTCP channel");
}

fn run_daemon(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uavstream"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(10))
}

#[test]
fn bad_config_values_exit_2_naming_key_value_and_origin() {
    /// (flags, environment, text the error must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--width", "abc"], &[], "--width"),
        (&[], &[("UAVSTREAM_FPS", "0")], "UAVSTREAM_FPS"),
        (&[], &[("UAVSTREAM_PROC_CMDLINE", "quiet uavstream.port=99999")], "uavstream.port"),
        (&["--source", "file:/nonexistent.h264"], &[("UAVSTREAM_PROC_CMDLINE", "")], "/nonexistent.h264"),
    ];
    for (args, env, needle) in cases {
        let out = run_daemon(args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn print_config_shows_every_value_and_its_origin() {
    let out = run_daemon(
        &["--print-config", "--fps", "25"],
        &[
            ("UAVSTREAM_PROC_CMDLINE", "console=ttyS0 uavstream.width=640 uavstream.fps=15 uavstream.bogus=1"),
            ("UAVSTREAM_HEIGHT", "480"),
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |k: &str| text.lines().find(|l| l.starts_with(&format!("{k} "))).unwrap().to_owned();
    assert!(line("width").contains("640") && line("width").contains("(kernel command line)"), "{text}");
    assert!(line("height").contains("480") && line("height").contains("(environment)"), "{text}");
    assert!(line("fps").contains("25") && line("fps").contains("(command-line flag)"), "{text}");
    assert!(line("port").contains("8554") && line("port").contains("(default)"), "{text}");
    assert!(text.contains("unknown key uavstream.bogus"), "{text}");
}

#[test]
fn set_parameter_bitrate_changes_the_live_encoder() {
    let d = Daemon::start(&["--width", "640", "--height", "360", "--bitrate", "3M"]);
    let mut c = RtspClient::connect(&d.url());
    let (session, _) = c.play_tcp();
    let bytes_for = |c: &mut RtspClient, secs: u64| -> usize {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(secs) {
            let f = c.next_frame().expect("stream");
            if f.channel == 0 {
                n += f.data.len();
            }
        }
        n
    };
    bytes_for(&mut c, 1);
    let before = bytes_for(&mut c, 2);
    let url = c.url.clone();
    let r = c.request_with_body(
        "SET_PARAMETER",
        &url,
        &[("Session", &session), ("Content-Type", "text/parameters")],
        "bitrate: 300000\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    d.wait_for_log("bitrate now 300 kbit/s", Duration::from_secs(5));
    bytes_for(&mut c, 1);
    let after = bytes_for(&mut c, 2);
    eprintln!("figure: bytes per 2 s at 3 Mbit/s: {before}, after SET_PARAMETER bitrate 300000: {after}");
    assert!(after * 3 < before, "bitrate did not drop: {before} -> {after}");
}

#[test]
fn rtcp_bye_right_after_teardown_does_not_lose_the_answer() {
    // GStreamer sends its last RTCP (a BYE) on the interleaved channel around TEARDOWN; the
    // TEARDOWN answer must still arrive and the frame be ignored.
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let mut c = RtspClient::connect(&d.url());
    let (session, _) = c.play_tcp();
    let url = c.url.clone();
    let mut bytes = format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 50\r\nSession: {session}\r\n\r\n").into_bytes();
    let bye = [0x81u8, 203, 0, 1, 0, 0, 0, 7];
    bytes.extend_from_slice(&[b'$', 1, 0, bye.len() as u8]);
    bytes.extend_from_slice(&bye);
    c.send_raw(&bytes);
    let r = c.read_response().expect("TEARDOWN answered");
    assert_eq!((r.status, r.header("CSeq")), (200, Some("50")));
    // The connection stays usable.
    assert_eq!(c.request("OPTIONS", &url, &[]).status, 200);
}

/// Plays the daemon over RTSP/UDP and returns the first RTP datagram's payload type and IP TOS.
fn first_udp_packet_tos(d: &Daemon) -> (u8, Option<u8>) {
    let mut c = RtspClient::connect(&d.url());
    let url = c.url.clone();
    let (rtp, _rtcp, port) = client_udp_pair();
    // Generous: a debug daemon on a loaded 2-core machine may take a while to its first IDR.
    rtp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
    let r = c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", &transport)]);
    assert_eq!(r.status, 200, "{}", d.log());
    assert_eq!(c.request("PLAY", &url, &[("Session", &r.session())]).status, 200);
    let mut buf = [0u8; 2048];
    let (n, tos) = recv_with_tos(&rtp, &mut buf);
    assert!(n > 12, "an RTP packet");
    (buf[1] & 0x7f, tos)
}

#[test]
fn dscp_marks_rtsp_udp_media_on_the_wire() {
    let d = Daemon::start(&["--width", "320", "--height", "240", "--dscp", "46"]);
    let (pt, tos) = first_udp_packet_tos(&d);
    assert_eq!(pt, 96, "an RTP/H.264 packet");
    assert_eq!(tos, Some(46 << 2), "IP TOS = DSCP 46 (EF) << 2 on RTSP-negotiated UDP media");
}

#[test]
fn without_dscp_media_is_unmarked() {
    let d = Daemon::start(&["--width", "320", "--height", "240"]);
    assert_eq!(first_udp_packet_tos(&d), (96, Some(0)));
}

/// The UDP fan-out sends runs of equal-size RTP packets as UDP GSO messages, and the client still
/// gets every packet as its own datagram, in order, with no sequence number missing. Fails when
/// GSO silently stops being used (the daemon's counters say so) or breaks the datagrams.
#[test]
fn udp_fan_out_uses_gso_and_the_client_gets_every_datagram_in_sequence() {
    let mut d = Daemon::start(&[
        "--width",
        "640",
        "--height",
        "480",
        "--bitrate",
        "4M",
        "--stats-interval",
        "1",
        "--mtu",
        "1200",
    ]);
    let (rtp, _rtcp, port) = client_udp_pair();
    rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c = RtspClient::connect(&d.url());
    let url = c.url.clone();
    let s = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", &format!("RTP/AVP;unicast;client_port={port}-{}", port + 1))],
    );
    assert_eq!(s.status, 200);
    let session = s.session();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)]).status, 200);
    let mut buf = [0u8; 65536];
    let (mut packets, mut last_seq, mut ssrc, mut markers) = (0u64, None::<u16>, None, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let n = rtp.recv(&mut buf).unwrap_or_else(|e| panic!("RTP: {e}\n{}", d.log_for_failure()));
        let pkt = &buf[..n];
        // A datagram the size of an RTP packet for this MTU, not a run glued together.
        assert!((13..=1200 - 48).contains(&n), "datagram of {n} bytes");
        assert_eq!(pkt[0] >> 6, 2, "RTP version");
        let this_ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        assert_eq!(*ssrc.get_or_insert(this_ssrc), this_ssrc);
        let seq = rtp_seq(pkt);
        if let Some(prev) = last_seq {
            assert_eq!(seq, prev.wrapping_add(1), "sequence gap after {packets} packets");
        }
        last_seq = Some(seq);
        packets += 1;
        markers += u64::from(pkt[1] & 0x80 != 0);
    }
    assert!(markers >= 60, "{markers} access units in 3 s");
    assert!(packets > 5 * markers, "{packets} packets for {markers} access units: too few runs to group");
    // The counters in the next stats line: most packets went inside GSO messages.
    let t = Instant::now();
    let (msgs, in_gso, single) = loop {
        let log = d.log();
        let last = log.lines().rev().find_map(|l| l.split("udp gso messages ").nth(1)).map(|rest| {
            let w: Vec<u64> = rest.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
            (w[0], w[1], w[2])
        });
        match last {
            Some(v) if v.1 + v.2 >= packets => break v,
            _ if t.elapsed() > Duration::from_secs(5) => panic!("no stats line counting {packets} packets:\n{log}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let log = d.log();
    assert!(!log.contains("refused a GSO send"), "{log}");
    assert!(log.contains("UDP GSO: on"), "{log}");
    assert!(msgs > 0 && in_gso > 3 * single, "gso messages {msgs} carrying {in_gso} packets, single {single}");
    assert!(in_gso > 2 * msgs, "gso messages {msgs} carrying {in_gso} packets");
}
