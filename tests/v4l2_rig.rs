//! Device loss on real kernel drivers. `rig/run` boots the QEMU guest (vivid camera, uavstream
//! configured from the kernel command line) and runs this test against the forwarded RTSP port:
//! while this client plays, the guest unbinds vivid and binds it again; the client must get
//! pictures again (SPS, PPS, IDR first) within 5 s of losing them, on the same RTSP session.
//! Ignored in plain `cargo test`: it needs the guest.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{rtp_marker, rtp_nal_type, RtspClient};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run rig/run"))
}

#[test]
#[ignore = "needs the QEMU rig: rig/run"]
fn client_resumes_within_5_s_after_the_camera_is_unbound_and_rebound() {
    let url = env("RIG_RTSP_URL");
    let trigger: u16 = env("RIG_TRIGGER_PORT").parse().unwrap();
    let mut c = RtspClient::connect(&url);
    let (session, _) = c.play_tcp();
    let mut frames_before = 0;
    while frames_before < 15 {
        let f = c.next_frame().expect("frames before the unbind");
        if f.channel == 0 && rtp_marker(&f.data) {
            frames_before += 1;
        }
    }
    // The guest's init waits for this connection, then unbinds vivid for a second.
    drop(TcpStream::connect(("127.0.0.1", trigger)).expect("trigger port"));
    let triggered = Instant::now();
    let mut last_frame = Instant::now();
    let mut worst_gap = Duration::ZERO;
    let mut after_gap: Vec<u8> = Vec::new();
    let mut resumed_frames = 0;
    while resumed_frames < 30 {
        let f = c.next_frame().expect("the stream resumes (RTSP session kept)");
        assert!(triggered.elapsed() < Duration::from_secs(60), "no steady stream after the rebind");
        if f.channel != 0 {
            continue;
        }
        let gap = f.at.duration_since(last_frame);
        if gap > Duration::from_millis(1500) {
            // The outage: what comes next must start decodable.
            after_gap.clear();
            resumed_frames = 0;
            worst_gap = worst_gap.max(gap);
        }
        if after_gap.len() < 8 {
            after_gap.push(rtp_nal_type(&f.data));
        }
        if rtp_marker(&f.data) {
            resumed_frames += 1;
        }
        last_frame = f.at;
    }
    eprintln!(
        "figure: camera unbind/rebind under QEMU TCG: longest gap between RTP packets {:.2} s; resumed with NAL types {after_gap:?}",
        worst_gap.as_secs_f64()
    );
    assert!(worst_gap > Duration::ZERO, "the unbind never interrupted the stream: was vivid unbound?");
    assert!(worst_gap < Duration::from_secs(5), "the client waited {worst_gap:?} for pictures");
    assert_eq!(&after_gap[..2], &[7, 8], "SPS and PPS first after the outage: {after_gap:?}");
    assert!(after_gap.contains(&5) && !after_gap[..after_gap.iter().position(|&t| t == 5).unwrap()].contains(&1));
    // Same session, still answered.
    let r = c.request("GET_PARAMETER", &url, &[("Session", &session)]);
    assert_eq!(r.status, 200);
}
