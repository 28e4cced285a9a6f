//! Lossy links: the daemon in a network namespace behind an emulated link (`common::link`: veth,
//! nftables random drops on the receiver's side), real clients on the host side.
//!
//! - GStreamer `rtspsrc do-retransmission=true` (offered `RTP/AVPF` with NACK and RTX) decodes
//!   at least 95 % of the frames without error through 5 % random loss, while ffmpeg (offered
//!   plain `RTP/AVP`, no NACK) still plays the same stream.
//! - A PLI (hand-made, on the session's RTCP port) makes the encoder send an IDR at once.
//! - GStreamer itself (`rtph264depay request-keyframe=true`) sends PLIs when it loses packets,
//!   with `nack` off (offered PLI/FIR only) and on, and the encoder answers them with IDRs.
//! - ffmpeg plays an `RTP/AVPF` offer too (`nack=all`), taking the first payload type.
//!
//! The figure of merit is clean decoded frames over the frames the stream carried while the
//! client played, from the decoded frames' timestamps: no wall-clock asserts.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::link::{Link, Side};
use common::{client_udp_pair, ffmpeg_decode, have, rtp_nal_type, run_with_timeout, Daemon, RtspClient};

/// The link, or why this machine cannot make one (the test then says so and passes).
fn link_or_skip(test: &str) -> Option<Link> {
    if let Some(why) = Link::unavailable() {
        println!("SKIPPED {test}: {why}");
        return None;
    }
    for tool in ["gst-launch-1.0", "ffmpeg"] {
        if !have(tool) {
            println!("SKIPPED {test}: {tool} is not installed");
            return None;
        }
    }
    Some(Link::new().expect("emulated link"))
}

const STREAM_720P30: &[&str] =
    &["--width", "1280", "--height", "720", "--fps", "30", "--bitrate", "3M", "--nack", "on"];

/// What a GStreamer client decoded.
#[derive(Debug)]
struct GstRun {
    /// Frames decoded without error (`avdec_h264 output-corrupt=false` drops the others).
    decoded: usize,
    /// Seconds from the first decoded frame's timestamp to the last one's.
    span: f64,
    /// Frames the stream carried over `span` (see [`GstRun::expecting`]).
    expected: usize,
    output: String,
}

impl GstRun {
    /// Sets the frames expected over the span at the stream's frame rate.
    fn expecting(self, fps: f64) -> GstRun {
        GstRun { expected: (self.span * fps).round() as usize + 1, ..self }
    }

    fn ratio(&self) -> f64 {
        self.decoded as f64 / self.expected.max(1) as f64
    }
}

/// Plays `url` with GStreamer over UDP for `frames` decoded frames (or until `limit`), counting
/// decoded frames from fakesink's per-buffer messages. With `request_keyframe` the depayloader
/// asks upstream for a keyframe when it sees packets missing (rtpsession sends that as a PLI).
fn gst_play(url: &str, retransmission: bool, request_keyframe: bool, frames: usize, limit: Duration) -> GstRun {
    let location = format!("location={url}");
    let rtx = format!("do-retransmission={retransmission}");
    let keyframe = format!("request-keyframe={request_keyframe}");
    let eos = format!("eos-after={frames}");
    let out = run_with_timeout(
        Command::new("gst-launch-1.0").args([
            "-e",
            "-v",
            "rtspsrc",
            &location,
            "protocols=udp",
            "latency=300",
            &rtx,
            "!",
            "rtph264depay",
            &keyframe,
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "output-corrupt=false",
            "!",
            "identity",
            &eos,
            "!",
            "fakesink",
            "silent=false",
            "sync=false",
        ]),
        limit,
    );
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let pts: Vec<f64> = output
        .lines()
        .filter(|l| l.contains("fakesink0: last-message = chain"))
        .filter_map(|l| l.split("pts: ").nth(1)?.split([',', ')']).next().and_then(parse_clock))
        .collect();
    let span = match (pts.iter().cloned().reduce(f64::min), pts.iter().cloned().reduce(f64::max)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    GstRun { decoded: pts.len(), span, expected: 0, output }
}

/// `H:MM:SS.nnnnnnnnn` in seconds.
fn parse_clock(s: &str) -> Option<f64> {
    let mut parts = s.trim().split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + sec.parse::<f64>().ok()?)
}

/// The `/status` JSON of the daemon.
fn status(d: &Daemon) -> String {
    let out = run_with_timeout(
        Command::new("curl").args(["-s", "-m", "5", &format!("http://{}:{}/status", d.host, d.http_port)]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A number field of the first object in `json` that has it.
fn field(json: &str, name: &str) -> Option<f64> {
    json.split(&format!("\"{name}\":")).nth(1)?.split([',', '}']).next()?.trim().parse().ok()
}

#[test]
fn gstreamer_with_retransmission_decodes_through_5_percent_loss_and_ffmpeg_still_plays() {
    let Some(mut link) = link_or_skip("lossy link test") else { return };
    let mut d = Daemon::start_in(&link, STREAM_720P30, &[]);
    link.set_loss(Side::Host, 5).unwrap();
    let run = gst_play(&d.url(), true, false, 240, Duration::from_secs(60));
    // The stream's frame rate over the last seconds of the run (the measurement window is full
    // by now): the encoder may not keep 30 fps on a loaded machine.
    let st = status(&d);
    let fps = field(&st, "fps").unwrap_or(30.0);
    let run = run.expecting(fps);
    println!(
        "gst with retransmission: {} of {} frames decoded clean ({:.1} %), stream fps {fps:.1}; link dropped {} datagrams",
        run.decoded,
        run.expected,
        run.ratio() * 100.0,
        link.dropped(Side::Host)
    );
    assert!(
        run.decoded >= 100,
        "GStreamer decoded too little to judge:\n{}\nserver:\n{}",
        run.output,
        d.log_for_failure()
    );
    let log = d.log();
    assert!(log.contains("(RTP/AVPF)"), "GStreamer did not set up RTP/AVPF:\n{log}");
    assert!(
        log.contains("retransmitted") && !log.contains("retransmitted 0;"),
        "the session ended without retransmissions:\n{log}\n{st}"
    );
    assert!(run.ratio() <= 1.03, "more frames decoded than the stream carried: the frame rate measure is off ({fps})");
    assert!(
        run.ratio() >= 0.95,
        "{} of {} frames decoded ({:.1} %) through 5 % loss with retransmission:\n{}\nserver:\n{}",
        run.decoded,
        run.expected,
        run.ratio() * 100.0,
        run.output.lines().filter(|l| !l.contains("last-message")).collect::<Vec<_>>().join("\n"),
        d.log_for_failure()
    );
    // ffmpeg over the same lossy link: offered plain RTP/AVP, it never NACKs, and still plays.
    let (decoded, dims, stderr) = ffmpeg_decode(&d.url(), "udp", 90);
    assert!(decoded >= 90 && dims.contains("1280x720"), "ffmpeg over the lossy link: {decoded} frames\n{stderr}");
}

#[test]
fn a_pli_on_the_rtcp_port_makes_the_encoder_send_an_idr() {
    use uavstream::rtp::feedback::write_pli;
    // Plain localhost: the PLI path needs no loss. IDRs otherwise only every 300 frames (10 s).
    let d = Daemon::start(&["--width", "320", "--height", "240", "--idr-interval", "300", "--nack", "on"]);
    let (rtp, rtcp, port) = client_udp_pair();
    let mut c = RtspClient::connect(&d.url());
    let url = c.url.clone();
    let s = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", &format!("RTP/AVPF/UDP;unicast;client_port={port}-{}", port + 1))],
    );
    assert_eq!(s.status, 200);
    let transport = s.header("Transport").unwrap().to_owned();
    assert!(transport.starts_with("RTP/AVPF/UDP;unicast;"), "the profile is echoed: {transport}");
    let server_rtcp: u16 =
        transport.split("server_port=").nth(1).unwrap().split(['-', ';']).nth(1).unwrap().parse().unwrap();
    let ssrc = u32::from_str_radix(transport.split("ssrc=").nth(1).unwrap().split(';').next().unwrap(), 16).unwrap();
    assert_eq!(c.request("PLAY", &url, &[("Session", &s.session())]).status, 200);
    // The join's IDR first, then P-frames for a while.
    let mut buf = [0u8; 2048];
    let mut after_join = 0;
    let t = Instant::now();
    while after_join < 20 {
        let n = rtp.recv(&mut buf).expect("RTP");
        let nal = rtp_nal_type(&buf[..n]);
        if nal == 1 {
            after_join += 1;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no P-frames after the join");
    }
    let mut pli = [0u8; 12];
    write_pli(0x00c1_1e17, ssrc, &mut pli).unwrap();
    send_rtcp(&rtcp, &d, server_rtcp, &pli);
    // An IDR (SPS first, as every IDR starts) within the next 30 frames; without the PLI the
    // next would be up to 10 s away.
    let mut frames = 0;
    loop {
        let n = rtp.recv(&mut buf).expect("RTP");
        match rtp_nal_type(&buf[..n]) {
            7 | 5 => break,
            _ if buf[1] & 0x80 != 0 => frames += 1,
            _ => {}
        }
        assert!(frames < 30, "no IDR within 30 frames of the PLI:\n{}", d.log());
    }
    let st = status(&d);
    assert_eq!(field(&st, "keyframe_requests"), Some(1.0), "{st}");
    assert_eq!(field(&st, "plis"), Some(1.0), "{st}");
    drop(rtcp);
}

#[test]
fn gstreamer_sends_plis_when_it_loses_packets_and_gets_idrs_with_nack_off_and_on() {
    let Some(mut link) = link_or_skip("GStreamer PLI test") else { return };
    link.set_loss(Side::Host, 5).unwrap();
    for nack in ["off", "on"] {
        // IDRs otherwise only every 300 frames (10 s), so the PLIs' IDRs stand out.
        let d = Daemon::start_in(
            &link,
            &["--width", "640", "--height", "360", "--bitrate", "1M", "--idr-interval", "300", "--nack", nack],
            &[],
        );
        let run = gst_play(&d.url(), false, true, 150, Duration::from_secs(40));
        let st = status(&d);
        let log = d.log();
        // The session's end line: "...; PLI/FIR <n>".
        let plis: u64 = log
            .lines()
            .filter(|l| l.contains(" ended ("))
            .filter_map(|l| l.rsplit("PLI/FIR ").next()?.trim().parse::<u64>().ok())
            .sum();
        let (units, idrs, requests) = (
            field(&st, "access_units").unwrap_or(0.0),
            field(&st, "idrs").unwrap_or(0.0),
            field(&st, "keyframe_requests").unwrap_or(0.0),
        );
        // Without PLIs: the first IDR, one every 300 access units, and the join's.
        let periodic = (units / 300.0).floor() + 2.0;
        println!(
            "nack {nack}: GStreamer sent {plis} PLIs ({requests} keyframe requests); {idrs} IDRs in {units} access units (without PLIs at most {periodic}); {} frames decoded; link dropped {} datagrams",
            run.decoded,
            link.dropped(Side::Host)
        );
        assert!(log.contains("(RTP/AVPF)"), "nack {nack}: GStreamer did not set up RTP/AVPF:\n{log}");
        assert!(run.decoded > 30, "nack {nack}: GStreamer decoded too little:\n{}\n{log}", run.output);
        assert!(plis >= 3 && requests >= plis as f64, "nack {nack}: {plis} PLIs from GStreamer:\n{st}\n{log}");
        assert!(idrs >= periodic + 2.0, "nack {nack}: {idrs} IDRs ({periodic} periodic) for {plis} PLIs:\n{st}\n{log}");
        if nack == "off" {
            assert!(log.contains("retransmitted 0;"), "nack off retransmitted:\n{log}");
        }
    }
}

fn send_rtcp(sock: &UdpSocket, d: &Daemon, port: u16, pkt: &[u8]) {
    sock.send_to(pkt, (d.host.as_str(), port)).expect("send RTCP");
}

#[test]
fn ffmpeg_plays_an_avpf_offer_too() {
    if !have("ffmpeg") {
        println!("SKIPPED: ffmpeg is not installed");
        return;
    }
    // `nack=all`: even ffmpeg gets `m=video 0 RTP/AVPF 96 97`; it takes payload type 96.
    let d = Daemon::start(&["--width", "320", "--height", "240", "--nack", "all"]);
    for transport in ["udp", "tcp"] {
        let (decoded, dims, stderr) = ffmpeg_decode(&d.url(), transport, 30);
        assert!(decoded >= 30 && dims.contains("320x240"), "ffmpeg over {transport}: {decoded}\n{stderr}");
    }
    // ffmpeg 5.1 answers the offer with a plain RTP/AVP SETUP: it never gets RTX packets.
    println!("ffmpeg set up RTP/AVPF when offered it: {}", d.log().contains("(RTP/AVPF)"));
}
