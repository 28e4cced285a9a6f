use super::*;
use crate::rtsp::parse::{parse_input, Input};

const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f,
    0x23, 0xc6, 0x0c, 0xa8,
];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn stream() -> StreamInfo<'static> {
    StreamInfo {
        codec: crate::rtp::Codec::H264,
        sps: SPS,
        pps: PPS,
        ssrc: 0x1234_5678,
        rtptime_now: 9000,
        framerate: 30,
        bitrate_kbps: 2000,
    }
}

fn server(slots: &mut [Session]) -> Server<'static, &mut [Session]> {
    for (i, s) in slots.iter_mut().enumerate() {
        *s = Session::FREE;
        s.server_ports = (50000 + 2 * i as u16, 50001 + 2 * i as u16);
    }
    Server::new(
        ServerConfig {
            streams: &ROUTES,
            session_timeout: Duration::from_secs(60),
            auth: None,
            feedback: FeedbackPolicy::KnownClients,
            nack_window: None,
        },
        slots,
        7,
    )
}

/// Two streams: `/live` (index 0) and `/low` (index 1).
static ROUTES: [StreamRoute<'static>; 2] =
    [StreamRoute { path: "/live", multicast: None }, StreamRoute { path: "/low", multicast: None }];

const GROUP: MulticastGroup =
    MulticastGroup { group: core::net::IpAddr::V4(core::net::Ipv4Addr::new(239, 255, 42, 42)), port: 5004, ttl: 1 };

static MULTICAST_ROUTES: [StreamRoute<'static>; 2] =
    [StreamRoute { path: "/live", multicast: Some(GROUP) }, StreamRoute { path: "/low", multicast: None }];

fn multicast_server(slots: &mut [Session]) -> Server<'static, &mut [Session]> {
    let mut srv = server(slots);
    srv.cfg.streams = &MULTICAST_ROUTES;
    srv
}

struct Reply {
    text: heapless::String<4096>,
    event: Option<Event>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.text[9..12].parse().unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.text
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }
    fn session(&self) -> &str {
        self.header("Session").unwrap().split(';').next().unwrap()
    }
}

fn send<S: AsRef<[Session]> + AsMut<[Session]>>(srv: &mut Server<'_, S>, conn: u64, raw: &[u8], now_s: u64) -> Reply {
    let Ok(Input::Request { request, consumed }) = parse_input(raw) else { panic!("unparsable test request") };
    assert_eq!(consumed, raw.len());
    let low = StreamInfo { ssrc: 0x0bad_cafe, ..stream() };
    let streams = [Some(stream()), Some(low)];
    let ctx = RequestCtx { conn: ConnId(conn), local_addr: "127.0.0.1", streams: &streams };
    let mut out = [0xa5u8; 4096];
    let o = srv.handle_request(&ctx, &request, Instant::from_micros(now_s * 1_000_000), &mut out);
    let text = core::str::from_utf8(&out[..o.len]).unwrap();
    assert!(text.ends_with("\r\n\r\n") || text.contains("application/sdp"), "{text}");
    Reply { text: heapless::String::try_from(text).unwrap(), event: o.event }
}

fn req(method: &str, uri: &str, cseq: u32, extra: &str) -> heapless::String<512> {
    let mut s = heapless::String::new();
    core::fmt::write(&mut s, format_args!("{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n")).unwrap();
    s
}

#[test]
fn ffmpeg_tcp_session_flow() {
    let mut slots = [Session::FREE; 4];
    let mut srv = server(&mut slots);
    let r = send(
        &mut srv,
        1,
        b"OPTIONS rtsp://127.0.0.1:8554/live RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf59.27.100\r\n\r\n",
        0,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("CSeq"), Some("1"));
    assert!(r.header("Public").unwrap().contains("GET_PARAMETER"));
    let r = send(&mut srv, 1, crate::rtsp::parse::tests::FFMPEG_DESCRIBE, 0);
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("Content-Base"), Some("rtsp://127.0.0.1:8554/live/"));
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert!(r.text.contains("sprop-parameter-sets=Z0LAH9oBQBbsBEAAAAMAQAAADyPGDKg=,aM48gA=="));
    let body_len: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(body_len, r.text.split_once("\r\n\r\n").unwrap().1.len());
    let r = send(&mut srv, 1, crate::rtsp::parse::tests::FFMPEG_SETUP_TCP, 0);
    assert_eq!(r.status(), 200);
    assert_eq!(r.event, Some(Event::Setup { slot: 0 }));
    assert_eq!(r.header("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=12345678;mode=\"PLAY\""));
    assert!(r.header("Session").unwrap().ends_with(";timeout=60"));
    let id = r.session();
    assert_eq!(id.len(), 16);
    let play = req("PLAY", "rtsp://127.0.0.1:8554/live/", 4, &alloc_free_concat("Range: npt=0.000-\r\nSession: ", id));
    let r = send(&mut srv, 1, play.as_bytes(), 1);
    assert_eq!(r.status(), 200);
    assert_eq!(r.event, Some(Event::Play { slot: 0 }));
    assert_eq!(r.header("RTP-Info"), Some("url=rtsp://127.0.0.1:8554/live/trackID=0;rtptime=9000"));
    assert_eq!(srv.sessions()[0].state, SessionState::Playing);
    let td = req("TEARDOWN", "rtsp://127.0.0.1:8554/live/", 5, &alloc_free_concat("Session: ", id));
    let r = send(&mut srv, 1, td.as_bytes(), 2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.event, Some(Event::Teardown { slot: 0 }));
    assert_eq!(srv.active(), 0);
    let r = send(&mut srv, 1, td.as_bytes(), 2);
    assert_eq!(r.status(), 454);
}

fn alloc_free_concat(a: &str, b: &str) -> heapless::String<128> {
    let mut s = heapless::String::new();
    s.push_str(a).unwrap();
    s.push_str(b).unwrap();
    s.push_str("\r\n").unwrap();
    s
}

#[test]
fn udp_setups_from_gstreamer_vlc_and_wintak() {
    use crate::rtsp::parse::tests::{GSTREAMER_SETUP_UDP, VLC_SETUP_UDP, WINTAK_SETUP_UDP};
    let mut slots = [Session::FREE; 4];
    let mut srv = server(&mut slots);
    let r = send(&mut srv, 1, GSTREAMER_SETUP_UDP, 0);
    assert_eq!(
        r.header("Transport"),
        Some("RTP/AVP;unicast;client_port=45486-45487;server_port=50000-50001;ssrc=12345678;mode=\"PLAY\"")
    );
    let r = send(&mut srv, 2, VLC_SETUP_UDP, 0);
    assert_eq!(r.status(), 200);
    assert!(r.header("Transport").unwrap().contains("server_port=50002-50003"));
    let r = send(&mut srv, 3, WINTAK_SETUP_UDP, 0);
    assert!(r.header("Transport").unwrap().starts_with("RTP/AVP/UDP;unicast;client_port=50620-50621"));
    assert_eq!(
        srv.sessions()[2].delivery,
        Delivery::Udp { lower: Lower::UdpExplicit, client_rtp: 50620, client_rtcp: 50621 }
    );
    let ids: heapless::Vec<u64, 4> = srv.sessions().iter().take(3).map(|s| s.id).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
}

#[test]
fn full_server_answers_503_and_teardown_frees_the_slot() {
    let mut slots = [Session::FREE; 2];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n");
    let a = send(&mut srv, 1, setup.as_bytes(), 0);
    let _b = send(&mut srv, 2, setup.as_bytes(), 0);
    let c = send(&mut srv, 3, setup.as_bytes(), 0);
    assert_eq!(c.status(), 503);
    assert_eq!(c.event, None);
    let td = req("TEARDOWN", "rtsp://h/live", 2, &alloc_free_concat("Session: ", a.session()));
    assert_eq!(send(&mut srv, 1, td.as_bytes(), 0).status(), 200);
    assert_eq!(send(&mut srv, 3, setup.as_bytes(), 0).status(), 200);
}

#[test]
fn errors_have_the_right_status_and_echo_cseq() {
    let mut slots = [Session::FREE; 2];
    let mut srv = server(&mut slots);
    let cases: &[(&str, &str, &str, u16)] = &[
        ("DESCRIBE", "rtsp://h/other", "", 404),
        ("DESCRIBE", "rtsp://h/livex", "", 404),
        ("DESCRIBE", "rtsp://h/live/trackID=0", "", 404),
        ("SETUP", "rtsp://h/live/trackID=0", "", 461),
        // Multicast is off unless the operator configured a group.
        ("SETUP", "rtsp://h/live/trackID=0", "Transport: RTP/AVP;multicast\r\n", 461),
        ("SETUP", "rtsp://h/live/trackID=0", "Transport: RTP/AVP/UDP;multicast;destination=239.1.2.3\r\n", 461),
        ("SETUP", "rtsp://h/live/trackID=0", "Transport: RTP/AVP;unicast\r\n", 400),
        ("SETUP", "rtsp://h/nope/trackID=0", "Transport: RTP/AVP/TCP\r\n", 404),
        ("PLAY", "rtsp://h/live", "", 454),
        ("PLAY", "rtsp://h/live", "Session: 0123456789ABCDEF\r\n", 454),
        ("PLAY", "rtsp://h/live", "Session: not-hex\r\n", 454),
        ("PAUSE", "rtsp://h/live", "", 454),
        ("TEARDOWN", "rtsp://h/live", "", 454),
        ("RECORD", "rtsp://h/live", "", 405),
        ("ANNOUNCE", "rtsp://h/live", "", 405),
        ("FOO", "rtsp://h/live", "", 501),
        ("OPTIONS", "*", "Require: funky-feature\r\n", 551),
        ("SET_PARAMETER", "rtsp://h/live", "Content-Length: 10\r\n\r\nbarparam", 451),
        ("SET_PARAMETER", "rtsp://h/live", "Content-Length: 12\r\n\r\nbitrate: 5", 400),
        ("SET_PARAMETER", "rtsp://h/live", "Content-Length: 14\r\n\r\nbitrate: abc", 400),
        ("SET_PARAMETER", "rtsp://h/live", "Content-Length: 18\r\n\r\nbitrate: 1\r\nx: 2", 451),
        ("GET_PARAMETER", "rtsp://h/live", "Content-Length: 9\r\n\r\nbitrate", 451),
    ];
    for (i, (m, uri, extra, status)) in cases.iter().enumerate() {
        let r = send(&mut srv, 1, req(m, uri, 100 + i as u32, extra).as_bytes(), 0);
        assert_eq!(r.status(), *status, "{m} {uri} {extra}");
        let cseq = heapless::String::<8>::try_from(itoa(100 + i as u32).as_str()).unwrap();
        assert_eq!(r.header("CSeq"), Some(cseq.as_str()));
        assert_eq!(r.event, None);
    }
    // A CSeq that is not a number, or too long to echo: 400 without one.
    for bad in ["abc", "12345678901", "1 2"] {
        let r = send(&mut srv, 1, format_heapless(bad).as_bytes(), 0);
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.header("CSeq"), None);
    }
    // No CSeq at all: 400 without one.
    let r = send(&mut srv, 1, b"OPTIONS * RTSP/1.0\r\n\r\n", 0);
    assert_eq!(r.status(), 400);
    assert_eq!(r.header("CSeq"), None);
    assert_eq!(srv.active(), 0);
}

fn itoa(n: u32) -> heapless::String<10> {
    let mut s = heapless::String::new();
    core::fmt::write(&mut s, format_args!("{n}")).unwrap();
    s
}

#[test]
fn setup_again_while_playing_is_455_and_pause_resumes() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n");
    let s = send(&mut srv, 1, setup.as_bytes(), 0);
    let id = s.session();
    let with = alloc_free_concat("Session: ", id);
    let play = req("PLAY", "rtsp://h/live", 2, &with);
    assert_eq!(send(&mut srv, 1, play.as_bytes(), 0).event, Some(Event::Play { slot: 0 }));
    let mut again = heapless::String::<256>::new();
    again.push_str("Transport: RTP/AVP/TCP;unicast;interleaved=4-5\r\n").unwrap();
    again.push_str(&with).unwrap();
    assert_eq!(send(&mut srv, 1, req("SETUP", "rtsp://h/live/trackID=0", 3, &again).as_bytes(), 0).status(), 455);
    let pause = send(&mut srv, 1, req("PAUSE", "rtsp://h/live", 4, &with).as_bytes(), 0);
    assert_eq!(pause.event, Some(Event::Pause { slot: 0 }));
    assert_eq!(send(&mut srv, 1, req("PAUSE", "rtsp://h/live", 5, &with).as_bytes(), 0).event, None);
    let r = send(&mut srv, 1, req("SETUP", "rtsp://h/live/trackID=0", 6, &again).as_bytes(), 0);
    assert_eq!(r.status(), 200);
    assert_eq!(r.session(), id);
    assert_eq!(srv.sessions()[0].delivery, Delivery::Interleaved { rtp_channel: 4, rtcp_channel: 5 });
}

#[test]
fn silent_sessions_expire_and_keepalives_and_rtcp_refresh() {
    let mut slots = [Session::FREE; 3];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;unicast;client_port=6000-6001\r\n");
    let a = send(&mut srv, 1, setup.as_bytes(), 0);
    let _b = send(&mut srv, 2, setup.as_bytes(), 0);
    let c = send(&mut srv, 3, setup.as_bytes(), 0);
    assert_eq!(srv.poll_timeout(), Some(Instant::from_micros(60_000_000)));
    // a keeps alive with GET_PARAMETER at 50 s, c with an RTCP receiver report at 55 s.
    let ka = req("GET_PARAMETER", "rtsp://h/live", 2, &alloc_free_concat("Session: ", a.session()));
    assert_eq!(send(&mut srv, 1, ka.as_bytes(), 50).status(), 200);
    let rr = [0x80, 0xc9, 0x00, 0x01, 0, 0, 0, 9];
    srv.handle_rtcp(2, &rr, Instant::from_micros(55_000_000));
    assert_eq!(srv.poll_expired(Instant::from_micros(59_999_999)), None);
    assert_eq!(srv.poll_expired(Instant::from_micros(60_000_000)), Some(1));
    assert_eq!(srv.poll_expired(Instant::from_micros(60_000_000)), None);
    assert_eq!(srv.poll_timeout(), Some(Instant::from_micros(110_000_000)));
    // A clock running backwards does not revive or expire anything.
    assert_eq!(srv.poll_expired(Instant::from_micros(1)), None);
    // Garbage RTCP does not refresh.
    srv.handle_rtcp(2, &[0x00, 0x01], Instant::from_micros(100_000_000));
    assert_eq!(srv.poll_expired(Instant::from_micros(110_000_000)), Some(0));
    assert_eq!(srv.poll_expired(Instant::from_micros(115_000_000)), Some(2));
    let _ = c;
}

#[test]
fn receiver_reports_update_reception() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;unicast;client_port=6000-6001\r\n");
    send(&mut srv, 1, setup.as_bytes(), 0);
    let rr: &[u8] = &[
        0x81, 0xc9, 0x00, 0x07, 0, 0, 0, 9, 0x12, 0x34, 0x56, 0x78, 0x10, 0x00, 0x00, 0x03, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    srv.handle_rtcp(0, rr, Instant::ZERO);
    let r = srv.sessions()[0].reception;
    assert_eq!((r.reports, r.fraction_lost, r.cumulative_lost, r.jitter, r.highest_sequence), (1, 16, 3, 42, 256));
}

/// GStreamer's `rtpsession` reports on every SSRC it received, the RTX one included, in one RR
/// (media block first here; either order): only the stream's block is reception.
#[test]
fn report_blocks_about_the_rtx_ssrc_are_not_the_streams_reception() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVPF;unicast;client_port=6000-6001\r\n");
    send(&mut srv, 1, setup.as_bytes(), 0);
    let block = |ssrc: u32, lost: u8, cumulative: u32, highest: u32| {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&ssrc.to_be_bytes());
        b[4..8].copy_from_slice(&((u32::from(lost) << 24) | cumulative).to_be_bytes());
        b[8..12].copy_from_slice(&highest.to_be_bytes());
        b
    };
    let media = block(0x1234_5678, 2, 40, 70_000);
    let rtx = block(0x5678_1234 ^ 0x5254_5821, 90, 7, 310);
    for (first, second) in [(media, rtx), (rtx, media)] {
        let mut rr = [0u8; 56];
        rr[..8].copy_from_slice(&[0x82, 0xc9, 0x00, 0x0d, 0, 0, 0, 9]);
        rr[8..32].copy_from_slice(&first);
        rr[32..].copy_from_slice(&second);
        srv.handle_rtcp(0, &rr, Instant::ZERO);
        let r = srv.sessions()[0].reception;
        assert_eq!((r.fraction_lost, r.cumulative_lost, r.highest_sequence), (2, 40, 70_000));
    }
    // Two RRs, one report each.
    assert_eq!(srv.sessions()[0].reception.reports, 2);
    // An RR about the RTX SSRC alone refreshes the session but is no report on the stream.
    let mut rr = [0u8; 32];
    rr[..8].copy_from_slice(&[0x81, 0xc9, 0x00, 0x07, 0, 0, 0, 9]);
    rr[8..].copy_from_slice(&rtx);
    srv.handle_rtcp(0, &rr, Instant::from_micros(1_000_000));
    assert_eq!(srv.sessions()[0].reception.reports, 2);
    assert_eq!(srv.sessions()[0].last_seen, Instant::from_micros(1_000_000));
}

#[test]
fn rtt_comes_from_lsr_and_dlsr_against_the_sender_reports_we_sent() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVPF;unicast;client_port=6000-6001\r\n");
    let reply = send(&mut srv, 1, setup.as_bytes(), 0);
    assert!(reply.header("Transport").unwrap().starts_with("RTP/AVPF;unicast;"), "{}", reply.text);
    assert_eq!(srv.sessions()[0].profile, Profile::Avpf);
    // SRs at 1 s and 2 s (NTP seconds 0x1000/0x1001, half a second past each).
    let ntp = |secs: u64| (secs << 32) | 0x8000_0000;
    srv.note_sender_report(0, ntp(0x1000), Instant::from_micros(1_000_000));
    let rr = |lsr: u32, dlsr: u32| {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&[0x81, 0xc9, 0, 7, 0, 0, 0, 9]);
        p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[24..28].copy_from_slice(&lsr.to_be_bytes());
        p[28..32].copy_from_slice(&dlsr.to_be_bytes());
        p
    };
    // The client answers the first SR after holding it 0.25 s (16384/65536); it arrives 0.3 s
    // after the SR went out: RTT 50 ms.
    srv.handle_rtcp(0, &rr(0x1000_8000, 16384), Instant::from_micros(1_300_000));
    assert_eq!(srv.sessions()[0].reception.rtt_us, Some(50_000));
    srv.note_sender_report(0, ntp(0x1001), Instant::from_micros(2_000_000));
    // An LSR we never sent leaves the figure alone; a DLSR longer than the wait is zero RTT.
    srv.handle_rtcp(0, &rr(0x0fff_8000, 0), Instant::from_micros(2_500_000));
    assert_eq!(srv.sessions()[0].reception.rtt_us, Some(50_000));
    srv.handle_rtcp(0, &rr(0x1001_8000, 65536), Instant::from_micros(2_500_000));
    assert_eq!(srv.sessions()[0].reception.rtt_us, Some(0));
    // LSR 0: the client has no SR yet.
    let mut other = [Session::FREE; 1];
    let mut fresh = server(&mut other);
    send(&mut fresh, 1, setup.as_bytes(), 0);
    fresh.note_sender_report(0, 0, Instant::from_micros(1_000_000));
    fresh.handle_rtcp(0, &rr(0, 0), Instant::from_micros(1_100_000));
    assert_eq!(fresh.sessions()[0].reception.rtt_us, None);
}

#[test]
fn feedback_about_our_stream_is_counted_and_returned_and_malformed_rtcp_changes_nothing() {
    use crate::rtp::feedback::{write_fir, write_nack, write_pli};
    let mut slots = [Session::FREE; 2];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;unicast;client_port=6000-6001\r\n");
    send(&mut srv, 1, setup.as_bytes(), 0);
    assert_eq!(srv.sessions()[0].media_ssrc, 0x1234_5678);
    let mut buf = [0u8; 64];
    let n = write_pli(9, 0x1234_5678, &mut buf).unwrap();
    assert_eq!(srv.handle_rtcp(0, &buf[..n], Instant::ZERO), Feedback { keyframe: true, nacks: false });
    // About another SSRC: ignored.
    let n = write_pli(9, 0x0bad_cafe, &mut buf).unwrap();
    assert_eq!(srv.handle_rtcp(0, &buf[..n], Instant::ZERO), Feedback::default());
    let n = write_fir(9, 0x1234_5678, 1, &mut buf).unwrap();
    assert_eq!(srv.handle_rtcp(0, &buf[..n], Instant::ZERO), Feedback { keyframe: true, nacks: false });
    let n = write_nack(9, 0x1234_5678, &[5, 6], &mut buf).unwrap();
    assert_eq!(srv.handle_rtcp(0, &buf[..n], Instant::ZERO), Feedback { keyframe: false, nacks: true });
    // The same NACK cut short: nothing counted, nothing to do.
    assert_eq!(srv.handle_rtcp(0, &buf[..n - 2], Instant::ZERO), Feedback::default());
    let r = srv.sessions()[0].reception;
    assert_eq!((r.plis, r.firs, r.nacks), (1, 1, 1));
    // A free slot and a slot out of range do nothing.
    assert_eq!(srv.handle_rtcp(1, &buf[..n], Instant::ZERO), Feedback::default());
    assert_eq!(srv.handle_rtcp(7, &buf[..n], Instant::ZERO), Feedback::default());
}

#[test]
fn avpf_is_offered_to_gstreamer_only_unless_configured() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let describe = |ua: &str| req("DESCRIBE", "rtsp://h/live", 1, ua);
    let gst = describe("User-Agent: GStreamer/1.22.0\r\n");
    let vlc = describe("User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n");
    let ffmpeg = describe("User-Agent: Lavf59.27.100\r\n");
    let body = |srv: &mut Server<'_, &mut [Session]>, r: &heapless::String<512>| send(srv, 1, r.as_bytes(), 0).text;
    let sdp = body(&mut srv, &gst);
    assert!(sdp.contains("m=video 0 RTP/AVPF 96 97\r\n"), "{sdp}");
    // One frame (33 ms) + the RTT allowance (500 ms) + the slack (40 ms).
    assert!(sdp.contains("a=fmtp:97 apt=96;rtx-time=573\r\n"), "{sdp}");
    for r in [&vlc, &ffmpeg, &describe("")] {
        let sdp = body(&mut srv, r);
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n") && !sdp.contains("rtcp-fb"), "{sdp}");
    }
    srv.cfg.feedback = FeedbackPolicy::All;
    srv.cfg.nack_window = Some(Duration::from_millis(250));
    assert!(body(&mut srv, &vlc).contains("a=fmtp:97 apt=96;rtx-time=250\r\n"));
    // Off: no retransmission, but GStreamer is still offered keyframe requests (it sends PLIs
    // only for `nack pli`); VLC and ffmpeg keep plain RTP/AVP.
    srv.cfg.feedback = FeedbackPolicy::Off;
    let sdp = body(&mut srv, &gst);
    assert!(sdp.contains("m=video 0 RTP/AVPF 96\r\n") && sdp.contains("a=rtcp-fb:96 nack pli\r\n"), "{sdp}");
    assert!(!sdp.contains("a=rtcp-fb:96 nack\r\n") && !sdp.contains("rtx/90000"), "{sdp}");
    for r in [&vlc, &ffmpeg] {
        let sdp = body(&mut srv, r);
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n") && !sdp.contains("rtcp-fb"), "{sdp}");
    }
}

#[test]
fn closing_a_connection_frees_its_sessions_only() {
    let mut slots = [Session::FREE; 3];
    let mut srv = server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP/TCP;unicast\r\n");
    send(&mut srv, 1, setup.as_bytes(), 0);
    send(&mut srv, 2, setup.as_bytes(), 0);
    assert_eq!(srv.close_session_of(ConnId(2)), Some(1));
    assert_eq!(srv.close_session_of(ConnId(2)), None);
    assert_eq!(srv.active(), 1);
}

#[test]
fn describe_before_the_stream_exists_is_503_retry() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let Ok(Input::Request { request, .. }) = parse_input(crate::rtsp::parse::tests::FFMPEG_DESCRIBE) else { panic!() };
    let ctx = RequestCtx { conn: ConnId(1), local_addr: "::1", streams: &[None, None] };
    let mut out = [0u8; 512];
    let o = srv.handle_request(&ctx, &request, Instant::ZERO, &mut out);
    let text = core::str::from_utf8(&out[..o.len]).unwrap();
    assert!(text.starts_with("RTSP/1.0 503 Service Unavailable\r\nCSeq: 2\r\n"), "{text}");
    assert!(text.contains("Retry-After: 1\r\n"));
}

#[test]
fn auth_gates_every_method_but_options() {
    use crate::rtsp::auth::{Auth, Credential};
    let users = [Credential { user: "pilot", password: "s3cret", path: None }];
    let mut slots = [Session::FREE; 2];
    for s in slots.iter_mut() {
        *s = Session::FREE;
    }
    let cfg = ServerConfig {
        streams: &ROUTES,
        session_timeout: Duration::from_secs(60),
        auth: Some(Auth { users: &users, secret: [1; 16] }),
        feedback: FeedbackPolicy::KnownClients,
        nack_window: None,
    };
    let mut srv = Server::new(cfg, &mut slots[..], 7);
    assert_eq!(send(&mut srv, 1, req("OPTIONS", "rtsp://h/live", 1, "").as_bytes(), 0).status(), 200);
    let r = send(&mut srv, 1, req("DESCRIBE", "rtsp://h/live", 2, "").as_bytes(), 0);
    assert_eq!(r.status(), 401);
    assert!(r.text.contains("WWW-Authenticate: Digest realm=\"uavstream\""));
    assert!(r.text.contains("WWW-Authenticate: Basic realm=\"uavstream\""));
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 3, "Transport: RTP/AVP/TCP;unicast\r\n");
    let r = send(&mut srv, 1, setup.as_bytes(), 0);
    assert_eq!((r.status(), r.event), (401, None));
    assert_eq!(srv.active(), 0);
    // "pilot:s3cret"
    let with = req(
        "SETUP",
        "rtsp://h/live/trackID=0",
        4,
        "Transport: RTP/AVP/TCP;unicast\r\nAuthorization: Basic cGlsb3Q6czNjcmV0\r\n",
    );
    let r = send(&mut srv, 1, with.as_bytes(), 0);
    assert_eq!(r.status(), 200);
    assert_eq!(srv.active(), 1);
}

fn format_heapless(cseq: &str) -> heapless::String<128> {
    let mut s = heapless::String::new();
    core::fmt::write(&mut s, format_args!("OPTIONS * RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n")).unwrap();
    s
}

#[test]
fn set_parameter_bitrate_is_an_event() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    let r = send(
        &mut srv,
        1,
        req(
            "SET_PARAMETER",
            "rtsp://h/live",
            1,
            "Content-Type: text/parameters\r\nContent-Length: 19\r\n\r\nbitrate: 500000\r\n",
        )
        .as_bytes(),
        0,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.event, Some(Event::SetBitrate { stream: 0, bps: 500_000 }));
}

#[test]
fn multicast_sessions_from_ffmpeg_and_gstreamer_share_the_group() {
    let mut slots = [Session::FREE; 3];
    let mut srv = multicast_server(&mut slots);
    // ffmpeg -rtsp_transport udp_multicast
    let ff = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP/UDP;multicast\r\n");
    let a = send(&mut srv, 1, ff.as_bytes(), 0);
    assert_eq!(a.status(), 200);
    assert_eq!(a.event, Some(Event::Setup { slot: 0 }));
    assert_eq!(
        a.header("Transport"),
        Some("RTP/AVP/UDP;multicast;destination=239.255.42.42;port=5004-5005;ttl=1;ssrc=12345678;mode=\"PLAY\"")
    );
    assert_eq!(srv.sessions()[0].delivery, Delivery::Multicast { lower: Lower::UdpExplicit });
    // GStreamer rtspsrc protocols=udp-mcast, asking for a group of its own: it gets ours.
    let gst = req(
        "SETUP",
        "rtsp://h/live/trackID=0",
        1,
        "Transport: RTP/AVP;multicast;destination=239.9.9.9;port=6000-6001;ttl=64\r\n",
    );
    let b = send(&mut srv, 2, gst.as_bytes(), 0);
    assert_eq!(
        b.header("Transport"),
        Some("RTP/AVP;multicast;destination=239.255.42.42;port=5004-5005;ttl=1;ssrc=12345678;mode=\"PLAY\"")
    );
    assert_ne!(a.session(), b.session(), "each receiver has a session of its own");
    // A unicast client next to them is unchanged.
    let u = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;unicast;client_port=6000-6001\r\n");
    assert!(send(&mut srv, 3, u.as_bytes(), 0).header("Transport").unwrap().contains("unicast;client_port=6000-6001"));
    // Fixed slots: a fourth receiver gets 503 whatever its transport.
    assert_eq!(send(&mut srv, 4, ff.as_bytes(), 0).status(), 503);

    assert_eq!(srv.multicast_playing(0), 0);
    let play_a = req("PLAY", "rtsp://h/live", 2, &alloc_free_concat("Session: ", a.session()));
    assert_eq!(send(&mut srv, 1, play_a.as_bytes(), 1).event, Some(Event::Play { slot: 0 }));
    let play_b = req("PLAY", "rtsp://h/live", 2, &alloc_free_concat("Session: ", b.session()));
    send(&mut srv, 2, play_b.as_bytes(), 1);
    assert_eq!(srv.multicast_playing(0), 2);
    // PAUSE and TEARDOWN count down; the last one out stops the group stream.
    let pause_b = req("PAUSE", "rtsp://h/live", 3, &alloc_free_concat("Session: ", b.session()));
    assert_eq!(send(&mut srv, 2, pause_b.as_bytes(), 2).event, Some(Event::Pause { slot: 1 }));
    assert_eq!(srv.multicast_playing(0), 1);
    let td_a = req("TEARDOWN", "rtsp://h/live", 3, &alloc_free_concat("Session: ", a.session()));
    assert_eq!(send(&mut srv, 1, td_a.as_bytes(), 2).event, Some(Event::Teardown { slot: 0 }));
    assert_eq!(srv.multicast_playing(0), 0);
    // Connection loss and expiry end multicast sessions like any other.
    send(&mut srv, 2, play_b.as_bytes(), 3);
    assert_eq!(srv.multicast_playing(0), 1);
    assert_eq!(srv.close_session_of(ConnId(2)), Some(1));
    assert_eq!(srv.multicast_playing(0), 0);
}

#[test]
fn multicast_sessions_expire_and_keepalives_refresh_them() {
    let mut slots = [Session::FREE; 2];
    let mut srv = multicast_server(&mut slots);
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;multicast\r\n");
    let a = send(&mut srv, 1, setup.as_bytes(), 0);
    let b = send(&mut srv, 2, setup.as_bytes(), 0);
    for (conn, r) in [(1, &a), (2, &b)] {
        let play = req("PLAY", "rtsp://h/live", 2, &alloc_free_concat("Session: ", r.session()));
        send(&mut srv, conn, play.as_bytes(), 0);
    }
    let ka = req("OPTIONS", "rtsp://h/live", 3, &alloc_free_concat("Session: ", a.session()));
    assert_eq!(send(&mut srv, 1, ka.as_bytes(), 40).status(), 200);
    assert_eq!(srv.poll_expired(Instant::from_micros(60_000_000)), Some(1));
    assert_eq!(srv.multicast_playing(0), 1);
    assert_eq!(srv.poll_expired(Instant::from_micros(100_000_000)), Some(0));
    assert_eq!(srv.multicast_playing(0), 0);
}

#[test]
fn multicast_first_in_a_list_wins_only_when_on() {
    let both = "Transport: RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, both);
    let mut slots = [Session::FREE; 1];
    let mut srv = multicast_server(&mut slots);
    assert_eq!(
        send(&mut srv, 1, setup.as_bytes(), 0).header("Transport").map(|t| t.contains(";multicast;")),
        Some(true)
    );
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    assert!(send(&mut srv, 1, setup.as_bytes(), 0).header("Transport").unwrap().starts_with("RTP/AVP/TCP;unicast"));
}

#[test]
fn ipv6_group_reply() {
    let mut slots = [Session::FREE; 1];
    let mut srv = server(&mut slots);
    static V6: [StreamRoute<'static>; 1] = [StreamRoute {
        path: "/live",
        multicast: Some(MulticastGroup {
            group: core::net::IpAddr::V6(core::net::Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, 0x4242)),
            port: 6000,
            ttl: 8,
        }),
    }];
    srv.cfg.streams = &V6;
    let setup = req("SETUP", "rtsp://h/live/trackID=0", 1, "Transport: RTP/AVP;multicast\r\n");
    assert!(send(&mut srv, 1, setup.as_bytes(), 0)
        .header("Transport")
        .unwrap()
        .starts_with("RTP/AVP;multicast;destination=ff15::4242;port=6000-6001;ttl=8;"));
}

#[test]
fn requests_are_routed_by_path_and_a_session_keeps_its_stream() {
    let mut slots = [Session::FREE; 3];
    let mut srv = server(&mut slots);
    // DESCRIBE each path: its own stream's SDP (the ssrc tells them apart in SETUP below).
    assert_eq!(send(&mut srv, 1, req("DESCRIBE", "rtsp://h/low", 1, "").as_bytes(), 0).status(), 200);
    assert_eq!(send(&mut srv, 1, req("DESCRIBE", "rtsp://h/lower", 2, "").as_bytes(), 0).status(), 404);
    assert_eq!(send(&mut srv, 1, req("DESCRIBE", "rtsp://h/", 3, "").as_bytes(), 0).status(), 404);
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n";
    let live = send(&mut srv, 1, req("SETUP", "rtsp://h/live/trackID=0", 4, tcp).as_bytes(), 0);
    let low = send(&mut srv, 2, req("SETUP", "rtsp://h/low/trackID=0", 5, tcp).as_bytes(), 0);
    assert_eq!((live.status(), low.status()), (200, 200));
    assert!(live.header("Transport").unwrap().contains("ssrc=12345678"), "{}", live.text);
    assert!(low.header("Transport").unwrap().contains("ssrc=0BADCAFE"), "{}", low.text);
    let (a, b) = (srv.sessions()[0], srv.sessions()[1]);
    assert_eq!((a.stream, b.stream), (0, 1));
    // The low session cannot be set up or played for /live.
    let id: heapless::String<32> = heapless::String::try_from(low.session()).unwrap();
    let text = |args: core::fmt::Arguments<'_>| {
        let mut s = heapless::String::<256>::new();
        core::fmt::write(&mut s, args).unwrap();
        s
    };
    let again = req("SETUP", "rtsp://h/live/trackID=0", 6, &text(format_args!("{tcp}Session: {id}\r\n")));
    assert_eq!(send(&mut srv, 2, again.as_bytes(), 0).status(), 459);
    let play = req("PLAY", "rtsp://h/live", 7, &text(format_args!("Session: {id}\r\n")));
    assert_eq!(send(&mut srv, 2, play.as_bytes(), 0).status(), 404);
    let play = req("PLAY", "rtsp://h/low/", 8, &text(format_args!("Session: {id}\r\n")));
    assert_eq!(send(&mut srv, 2, play.as_bytes(), 0).event, Some(Event::Play { slot: 1 }));
    // SET_PARAMETER bitrate goes to the session's stream, or the URL's without a session.
    let set = req(
        "SET_PARAMETER",
        "rtsp://h/low",
        9,
        &text(format_args!("Session: {id}\r\nContent-Length: 18\r\n\r\nbitrate: 300000\n")),
    );
    assert_eq!(send(&mut srv, 2, set.as_bytes(), 0).event, Some(Event::SetBitrate { stream: 1, bps: 300_000 }));
}
