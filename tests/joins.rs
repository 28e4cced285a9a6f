//! Fast join for a burst of joiners (a radio link comes back and the ground station, a recorder
//! and a tablet reconnect at once), and the bound on forced IDRs under a flood of PLAYs.
//! Times are media times (RTP timestamps against the PLAY answer's `rtptime`), not wall clocks.
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{rtp_nal_type, Daemon, RtspClient};

/// `uavstream_stream_idrs_total` of `/live`, from `/metrics`.
fn idrs(d: &Daemon) -> f64 {
    let out = common::run_with_timeout(
        std::process::Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/metrics", d.http_port)]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("uavstream_stream_idrs_total{stream=\"/live\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no IDR counter in:\n{text}"))
}

#[test]
fn every_joiner_of_a_burst_of_ten_gets_an_idr_within_two_frame_intervals() {
    let d = Daemon::start(&["--width", "640", "--height", "360", "--fps", "30"]);
    let url = d.url();
    let barrier = Arc::new(Barrier::new(10));
    let joiners: Vec<_> = (0..10)
        .map(|i| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut c = RtspClient::connect(&url);
                let setup = c.request(
                    "SETUP",
                    &format!("{url}/trackID=0"),
                    &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
                );
                let session = setup.session();
                barrier.wait();
                // Joins spread over ~100 ms, as reconnecting clients would be.
                std::thread::sleep(Duration::from_millis(10 * i));
                let play = c.request("PLAY", &url, &[("Session", &session)]);
                let rtptime: u32 = play
                    .header("RTP-Info")
                    .and_then(|h| h.split(';').find_map(|f| f.strip_prefix("rtptime=")))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("rtptime in RTP-Info");
                // The first RTP packet must start an IDR (SPS first), and its capture time says
                // how long after the PLAY the picture was taken.
                let first = loop {
                    let f = c.next_frame().expect("RTP after PLAY");
                    if f.channel == 0 {
                        break f;
                    }
                };
                let ts = u32::from_be_bytes([first.data[4], first.data[5], first.data[6], first.data[7]]);
                (rtp_nal_type(&first.data), ts.wrapping_sub(rtptime) as i32)
            })
        })
        .collect();
    let mut delays: Vec<i32> = Vec::new();
    for j in joiners {
        let (nal, delay) = j.join().unwrap();
        assert_eq!(nal, 7, "a joiner's first packet is not the SPS of an IDR");
        delays.push(delay);
    }
    delays.sort_unstable();
    let ms = |ticks: i32| f64::from(ticks) / 90.0;
    eprintln!(
        "figure: burst of 10 joiners, first IDR's capture time after PLAY: median {:.1} ms, max {:.1} ms (media time; 30 fps = 33.3 ms a frame)",
        ms(delays[5]),
        ms(delays[9])
    );
    // Two frame intervals at 30 fps = 6000 ticks of 90 kHz.
    assert!(delays[9] <= 6000, "slowest joiner's IDR came {:.1} ms after its PLAY: {delays:?}", ms(delays[9]));
}

#[test]
fn a_flood_of_plays_forces_a_bounded_number_of_idrs() {
    use uavstream::limits::{FORCED_IDR_BURST, FORCED_IDR_RATE};
    // One IDR per 10 s of its own, so nearly every IDR counted here was forced.
    let d = Daemon::start(&["--width", "320", "--height", "240", "--fps", "30", "--idr-interval", "300"]);
    let url = d.url();
    std::thread::sleep(Duration::from_millis(500));
    let before = idrs(&d);
    let start = Instant::now();
    let mut plays = 0;
    // At least two seconds of PLAYs, so the sustained rate is exercised, not only the burst.
    while plays < 60 || (start.elapsed() < Duration::from_secs(2) && plays < 5000) {
        let mut c = RtspClient::connect(&url);
        let (session, _) = c.play_tcp();
        plays += 1;
        assert_eq!(c.request("TEARDOWN", &url, &[("Session", &session)]).status, 200);
    }
    let secs = start.elapsed().as_secs_f64();
    let forced = idrs(&d) - before;
    // The budget: a burst, the rate over the time the flood took, and the encoder's own IDRs.
    let bound = FORCED_IDR_BURST as f64 + FORCED_IDR_RATE as f64 * secs + (secs / 10.0).ceil() + 1.0;
    eprintln!("figure: {plays} PLAYs in {secs:.1} s forced {forced} IDRs (bound {bound:.1})");
    assert!(forced <= bound, "{forced} IDRs for {plays} PLAYs in {secs:.1} s; bound {bound:.1}");
}
