//! RTSP UDP multicast, end to end: the real binary with `--multicast-group`, played by ffmpeg
//! (`-rtsp_transport udp_multicast`) and GStreamer (`rtspsrc protocols=udp-mcast`), and watched
//! from a socket joined to the group: one stream however many receivers, next to unicast UDP and
//! TCP clients; it stops with the last multicast session; bad keys exit 2; off means 461.
//!
//! Multicast here is looped back on this host (IP_MULTICAST_LOOP): every test uses a group and
//! port of its own, so tests running in parallel never hear each other.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_udp_pair, recv_with_tos, rtp_nal_type, rtp_seq, run_with_timeout, Daemon, RtspClient};

const FRAMES: usize = 30;

/// A group and an even port for test number `n`, apart from other test processes.
fn group(n: u8) -> (Ipv4Addr, u16) {
    let pid = std::process::id();
    let g = Ipv4Addr::new(239, 255, 100 + (pid % 150) as u8, n);
    (g, common::rtp_range(2).0)
}

/// A socket joined to `group:port` on the default interface, as a receiver on the LAN would be.
fn join(g: Ipv4Addr, port: u16) -> UdpSocket {
    let s = UdpSocket::bind((g, port)).expect("bind the group address");
    s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED).expect("join the group");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The daemon serving `g:port` (320x240 unless `extra` says otherwise).
fn start(g: Ipv4Addr, port: u16, extra: &[&str]) -> Daemon {
    let (gs, ps) = (g.to_string(), port.to_string());
    let mut args = vec!["--multicast-group", &gs, "--multicast-port", &ps];
    if !extra.contains(&"--width") {
        args.extend(["--width", "320", "--height", "240"]);
    }
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// SETUP with `transport`, then PLAY. Returns the session id and the SETUP's Transport answer.
fn setup_and_play(c: &mut RtspClient, transport: &str) -> (String, String) {
    let url = c.url.clone();
    let s = c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", transport)]);
    assert_eq!(s.status, 200, "SETUP {transport}");
    let session = s.session();
    let t = s.header("Transport").unwrap().to_owned();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)]).status, 200, "PLAY");
    (session, t)
}

/// Datagrams on `sock` until `n` arrived (each RTP sequence number recorded, in order).
fn receive(sock: &UdpSocket, n: usize) -> Vec<(u16, u8)> {
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|_| {
            let (len, _) = sock.recv_from(&mut buf).expect("group packets keep coming");
            assert!(len > 12 && buf[0] >> 6 == 2, "not RTP: {:?}", &buf[..len.min(16)]);
            (rtp_seq(&buf[..len]), rtp_nal_type(&buf[..len]))
        })
        .collect()
}

/// Empties what is queued on `sock`.
fn drain(sock: &UdpSocket) {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    while sock.recv_from(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
}

#[test]
fn ffmpeg_decodes_with_udp_multicast() {
    let (g, port) = group(1);
    let d = start(g, port, &["--width", "640", "--height", "360"]);
    let (frames, dims, stderr) = common::ffmpeg_decode(&d.url(), "udp_multicast", FRAMES);
    assert_eq!(
        frames,
        FRAMES,
        "ffmpeg decoded {frames} frames over multicast; stderr:\n{stderr}\nserver:\n{}",
        d.log()
    );
    assert!(dims.ends_with("640x360"), "{dims}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors:\n{stderr}");
    let log = d.log();
    assert!(log.contains("via UDP multicast"), "{log}");
    assert!(log.contains(&format!("group stream to {g}:{port} started")), "{log}");
}

#[test]
fn ffmpeg_decodes_mjpeg_with_udp_multicast() {
    // RTP/JPEG rides the same group stream: every frame is a keyframe to start at.
    let (g, port) = group(20);
    let d = start(g, port, &["--codec", "mjpeg"]);
    let (frames, dims, stderr) = common::ffmpeg_decode(&d.url(), "udp_multicast", FRAMES);
    assert_eq!(frames, FRAMES, "stderr:\n{stderr}\nserver:\n{}", d.log());
    assert!(dims.ends_with("320x240"), "{dims}");
    assert!(d.log().contains(&format!("group stream to {g}:{port} started")), "{}", d.log());
}

#[test]
fn gstreamer_rtspsrc_decodes_with_udp_mcast() {
    let (g, port) = group(2);
    let mut d = start(g, port, &[]);
    common::gst_rtspsrc_decode(&mut d, "udp-mcast", FRAMES);
    assert!(d.log().contains("via UDP multicast"), "{}", d.log());
}

/// Two multicast receivers get one stream: every sequence number reaches the group once, it
/// starts at SPS/PPS/IDR, and unicast UDP and TCP clients stream on beside it. TEARDOWN of one
/// receiver keeps the group stream; TEARDOWN of the last stops it; a new one restarts it at SPS.
#[test]
fn two_receivers_one_stream_next_to_unicast_and_the_last_teardown_stops_it() {
    let (g, port) = group(3);
    let d = start(g, port, &["--dscp", "46"]);
    let url = d.url();
    let sock = join(g, port);

    let stop = Arc::new(AtomicBool::new(false));
    let tcp = {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = RtspClient::connect(&url);
            c.play_tcp();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if c.next_frame().expect("TCP client kept receiving").channel == 0 {
                    n += 1;
                }
            }
            n
        })
    };
    let udp = {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (rtp, _rtcp, p) = client_udp_pair();
            let mut c = RtspClient::connect(&url);
            let (_, t) = setup_and_play(&mut c, &format!("RTP/AVP;unicast;client_port={p}-{}", p + 1));
            assert!(t.contains(";unicast;"), "{t}");
            let mut buf = [0u8; 2048];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                rtp.recv_from(&mut buf).expect("UDP client kept receiving");
                n += 1;
            }
            n
        })
    };

    let mut a = RtspClient::connect(&url);
    let (sa, ta) = setup_and_play(&mut a, "RTP/AVP/UDP;multicast");
    let want = format!("RTP/AVP/UDP;multicast;destination={g};port={port}-{};ttl=1;", port + 1);
    assert!(ta.starts_with(&want), "{ta}");
    let mut b = RtspClient::connect(&url);
    // A receiver asking for a group of its own gets the server's.
    let (sb, tb) = setup_and_play(&mut b, "RTP/AVP;multicast;destination=239.1.2.3;port=7000-7001;ttl=9");
    assert!(tb.starts_with(&format!("RTP/AVP;multicast;destination={g};port={port}-{};ttl=1;", port + 1)), "{tb}");

    // The group stream is marked like all media (--dscp 46: TOS 0xb8).
    let mut buf = [0u8; 2048];
    let (first_len, tos) = recv_with_tos(&sock, &mut buf);
    assert_eq!(tos, Some(46 << 2), "multicast packets carry the DSCP");
    assert_eq!(rtp_nal_type(&buf[..first_len]), 7, "the group stream starts with the SPS");
    let first = rtp_seq(&buf[..first_len]);

    let got = receive(&sock, 600);
    let types: Vec<u8> = got.iter().take(2).map(|p| p.1).collect();
    assert_eq!(types, [8, 5], "SPS, PPS, IDR first");
    let mut seen = HashSet::from([first]);
    for (seq, _) in &got {
        assert!(seen.insert(*seq), "sequence number {seq} reached the group twice: one stream per session?");
    }
    // One sender, each packet once: always ahead of the previous one (a full receive buffer on
    // a loaded machine may skip some, never repeat or reorder).
    let mut prev = first;
    for (seq, _) in &got {
        let step = seq.wrapping_sub(prev);
        assert!((1..1000).contains(&step), "group stream went from {prev} to {seq}");
        prev = *seq;
    }
    assert_eq!(d.log().matches("group stream to").count(), 1, "{}", d.log());

    // The first receiver leaves: the other one still gets the stream.
    assert_eq!(a.request("TEARDOWN", &url, &[("Session", &sa)]).status, 200);
    receive(&sock, 100);

    // The unicast clients streamed all along.
    stop.store(true, Ordering::Relaxed);
    let (tcp_n, udp_n) = (tcp.join().unwrap(), udp.join().unwrap());
    assert!(tcp_n > 100 && udp_n > 100, "unicast clients got {tcp_n} (TCP) and {udp_n} (UDP) packets");

    // The last receiver leaves: once the answer is here, nothing more is sent to the group (the
    // loop sends and answers in one thread, so whatever was sent before is queued already).
    assert_eq!(b.request("TEARDOWN", &url, &[("Session", &sb)]).status, 200);
    drain(&sock);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let r = sock.recv_from(&mut buf);
    assert!(r.is_err(), "a packet reached the group after the last TEARDOWN: {:?}", r.map(|(n, _)| rtp_seq(&buf[..n])));
    d.wait_for_log("stopped (no multicast session plays)", Duration::from_secs(5));

    // A new receiver restarts the group stream, at the SPS again.
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = RtspClient::connect(&url);
    setup_and_play(&mut c, "RTP/AVP;multicast");
    let again = receive(&sock, 1);
    assert_eq!(again[0].1, 7, "a restarted group stream starts with the SPS");
}

/// RTCP sender reports go to the group's port + 1 while the stream runs.
#[test]
fn sender_reports_reach_the_rtcp_port() {
    let (g, port) = group(4);
    let d = start(g, port, &[]);
    let rtcp = join(g, port + 1);
    let mut c = RtspClient::connect(&d.url());
    setup_and_play(&mut c, "RTP/AVP;multicast");
    let mut buf = [0u8; 512];
    let (n, _) = rtcp.recv_from(&mut buf).expect("a sender report within 10 s");
    assert!(n >= 28 && buf[1] == 200, "not an RTCP SR: {:?}", &buf[..n.min(8)]);
}

/// A multicast session without keepalives expires like any other, and the group stream stops.
#[test]
fn a_silent_multicast_session_times_out_and_the_stream_stops() {
    let (g, port) = group(5);
    let d = start(g, port, &["--session-timeout", "5"]);
    let mut c = RtspClient::connect(&d.url());
    setup_and_play(&mut c, "RTP/AVP;multicast");
    d.wait_for_log("group stream to", Duration::from_secs(10));
    d.wait_for_log("ended (timed out)", Duration::from_secs(30));
    d.wait_for_log("stopped (no multicast session plays)", Duration::from_secs(5));
}

#[test]
fn ipv6_group() {
    let pid = std::process::id();
    let g: Ipv6Addr = format!("ff15::4242:{:x}", pid % 0xffff).parse().unwrap();
    let port = common::rtp_range(2).0;
    let d = Daemon::start(&[
        "--width",
        "160",
        "--height",
        "120",
        "--multicast-group",
        &g.to_string(),
        "--multicast-port",
        &port.to_string(),
    ]);
    let sock = UdpSocket::bind((g, port)).unwrap();
    sock.join_multicast_v6(&g, 0).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = RtspClient::connect(&d.url());
    let (_, t) = setup_and_play(&mut c, "RTP/AVP;multicast");
    assert!(t.starts_with(&format!("RTP/AVP;multicast;destination={g};port={port}-")), "{t}");
    assert_eq!(receive(&sock, 1)[0].1, 7);
}

#[test]
fn bad_multicast_values_exit_2_naming_key_value_and_origin() {
    // (flags, environment, how the error spells the key)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--multicast-group", "10.0.0.1"], &[], "--multicast-group"),
        (&[], &[("UAVSTREAM_MULTICAST_GROUP", "10.0.0.1")], "UAVSTREAM_MULTICAST_GROUP"),
        (&[], &[("UAVSTREAM_PROC_CMDLINE", "uavstream.multicast-group=10.0.0.1")], "uavstream.multicast-group"),
    ];
    for (args, env, spelled) in cases {
        let t = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_uavstream"));
        cmd.args(*args).env("UAVSTREAM_PROC_CMDLINE", "");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spelled}: {err}");
        assert!(err.contains("multicast-group") && err.contains("10.0.0.1") && err.contains(spelled), "{err}");
        assert!(err.contains("not a multicast address"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(20));
    }
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_uavstream"))
            .args(["--multicast-port", "5005"])
            .env("UAVSTREAM_PROC_CMDLINE", ""),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--multicast-port"));
}

#[test]
fn multicast_off_is_461_and_other_offers_still_work() {
    let d = Daemon::start(&["--width", "160", "--height", "120"]);
    let url = d.url();
    let mut c = RtspClient::connect(&url);
    let r = c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP;multicast")]);
    assert_eq!(r.status, 461);
    let r = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", "RTP/AVP/UDP;multicast;destination=239.1.1.1")],
    );
    assert_eq!(r.status, 461);
    // Multicast first, TCP next: TCP is what it gets.
    let r = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", "RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    assert_eq!(r.status, 200);
    assert!(r.header("Transport").unwrap().starts_with("RTP/AVP/TCP;unicast;interleaved=0-1"));
    assert!(!d.log().contains("multicast:"), "{}", d.log());
}

/// The group stream sends runs of equal-size packets as UDP GSO messages, and a receiver gets
/// them as the usual datagrams with no sequence number missing.
#[test]
fn group_stream_uses_gso_and_keeps_every_sequence_number() {
    let (g, port) = group(7);
    // Packets that fit the group's route without IP fragments (a CI host's eth0 may have an MTU
    // below 1500; there the kernel rightly refuses GSO and the stream goes plain).
    let d = start(
        g,
        port,
        &["--width", "640", "--height", "480", "--bitrate", "4M", "--stats-interval", "1", "--mtu", "1200"],
    );
    let sock = join(g, port);
    let mut c = RtspClient::connect(&d.url());
    setup_and_play(&mut c, "RTP/AVP;multicast");
    let got = receive(&sock, 600);
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "sequence gap in {got:?}");
    }
    let t = Instant::now();
    let (msgs, in_gso) = loop {
        let log = d.log();
        let counts = log.lines().rev().find_map(|l| l.split("udp gso messages ").nth(1)).map(|rest| {
            let w: Vec<u64> = rest.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
            (w[0], w[1], w[2])
        });
        match counts {
            Some((m, p, single)) if p + single >= got.len() as u64 => break (m, p),
            _ if t.elapsed() > Duration::from_secs(5) => panic!("no stats line counting the packets:\n{log}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(in_gso > 2 * msgs, "{msgs} GSO messages carrying {in_gso} packets\n{}", d.log());
    assert!(!d.log().contains("refused a GSO send"), "{}", d.log());
}
