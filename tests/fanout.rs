//! `fanout-threads` > 1: the real binary sends each access unit to its UDP clients from the loop
//! and sender threads, and every client still gets every packet, in sequence, from its first
//! IDR on: raw UDP receivers (checked packet by packet), interleaved TCP clients written by the
//! loop while the senders send, and GStreamer's `rtspsrc` and ffmpeg decoding alongside.

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{client_udp_pair, rtp_nal_type, rtp_seq, Daemon, RtspClient};

/// RTP sequence numbers a client received, in arrival order.
fn receive_udp(url: String, for_: Duration) -> Vec<u16> {
    let (rtp, _rtcp, p) = client_udp_pair();
    rtp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut c = RtspClient::connect(&url);
    let s = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", &format!("RTP/AVP;unicast;client_port={p}-{}", p + 1))],
    );
    assert_eq!(s.status, 200, "SETUP");
    assert_eq!(c.request("PLAY", &url, &[("Session", &s.session())]).status, 200, "PLAY");
    let mut seqs = Vec::with_capacity(4096);
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < for_ {
        if let Ok(n) = rtp.recv(&mut buf) {
            if seqs.is_empty() {
                // The first packet starts the IDR's access unit (SPS first).
                assert_eq!(rtp_nal_type(&buf[..n]), 7, "the first packet is not the SPS");
            }
            seqs.push(rtp_seq(&buf[..n]));
        }
    }
    seqs
}

fn receive_tcp(url: String, for_: Duration) -> Vec<u16> {
    let mut c = RtspClient::connect(&url);
    c.play_tcp();
    let mut seqs = Vec::with_capacity(4096);
    let t = Instant::now();
    while t.elapsed() < for_ {
        if let Some(f) = c.next_frame().filter(|f| f.channel == 0) {
            seqs.push(rtp_seq(&f.data));
        }
    }
    seqs
}

/// Every packet after the first is the one after it.
fn assert_in_sequence(who: &str, seqs: &[u16], d: &mut Daemon) {
    assert!(seqs.len() > 100, "{who} got only {} packets:\n{}", seqs.len(), d.log_for_failure());
    for (k, w) in seqs.windows(2).enumerate() {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "{who}: packet {} has seq {} after {} ({} packets in all)",
            k + 1,
            w[1],
            w[0],
            seqs.len()
        );
    }
}

#[test]
fn two_fanout_threads_give_every_udp_client_every_packet_in_sequence() {
    const UDP: usize = 24;
    const TCP: usize = 2;
    let mut d = Daemon::start(&[
        "--fanout-threads",
        "2",
        "--max-clients",
        "40",
        // All of them connect at once, before any has a session.
        "--max-pending-connections",
        "64",
        "--width",
        "320",
        "--height",
        "240",
        "--bitrate",
        "1M",
    ]);
    d.wait_for_log("fan-out: the loop and 1 sender thread(s)", Duration::from_secs(5));
    assert!(d.threads() >= 2, "no sender thread");
    let url = d.url();
    let listen = Duration::from_secs(4);
    let mut clients: Vec<(String, JoinHandle<Vec<u16>>)> = Vec::new();
    for i in 0..UDP {
        let url = url.clone();
        clients.push((format!("UDP client {i}"), std::thread::spawn(move || receive_udp(url, listen))));
    }
    for i in 0..TCP {
        let url = url.clone();
        clients.push((format!("TCP client {i}"), std::thread::spawn(move || receive_tcp(url, listen))));
    }
    let ff_url = url.clone();
    let ffmpeg = std::thread::spawn(move || common::ffmpeg_decode(&ff_url, "udp", 60));
    common::gst_rtspsrc_decode(&mut d, "udp", 60);
    let (frames, _, stderr) = ffmpeg.join().unwrap();
    assert_eq!(frames, 60, "ffmpeg over UDP decoded {frames} frames:\n{stderr}\nserver:\n{}", d.log_for_failure());
    for (who, h) in clients {
        let seqs = h.join().unwrap();
        assert_in_sequence(&who, &seqs, &mut d);
    }
    let log = d.log();
    assert!(!log.contains("access unit dropped") && !log.contains("sender thread is gone"), "{log}");
}
