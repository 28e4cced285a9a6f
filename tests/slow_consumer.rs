//! Slow consumers: a TCP-interleaved client that stops reading delays no one, grows nothing, skips
//! to the next IDR when it falls out of the shared ring, and is disconnected after
//! `--client-stall-timeout`.

mod common;

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_udp_pair, rtp_nal_type, rtp_seq, Daemon, RtspClient};

/// A TCP connection whose receive buffer is set small before connecting (so the window stays
/// small), as a client on a slow link would have: when it stops reading, the server blocks fast.
fn small_window_stream(port: u16) -> TcpStream {
    use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Good clients (TCP and UDP) record (seq, arrival) until `stop`.
fn good_clients(url: &str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<(u16, Instant)>>> {
    let tcp = {
        let (url, stop) = (url.to_owned(), Arc::clone(stop));
        std::thread::spawn(move || {
            let mut c = RtspClient::connect(&url);
            c.play_tcp();
            let mut v = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let f = c.next_frame().expect("good TCP client receives");
                if f.channel == 0 {
                    v.push((rtp_seq(&f.data), f.at));
                }
            }
            v
        })
    };
    let udp = {
        let (url, stop) = (url.to_owned(), Arc::clone(stop));
        std::thread::spawn(move || {
            let (rtp, _rtcp, port) = client_udp_pair();
            let mut c = RtspClient::connect(&url);
            let s = c.request(
                "SETUP",
                &format!("{url}/trackID=0"),
                &[("Transport", &format!("RTP/AVP;unicast;client_port={port}-{}", port + 1))],
            );
            assert_eq!(c.request("PLAY", &url, &[("Session", &s.session())]).status, 200);
            let mut v = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let (n, _) = rtp.recv_from(&mut buf).expect("good UDP client receives");
                v.push((rtp_seq(&buf[..n]), Instant::now()));
            }
            v
        })
    };
    vec![tcp, udp]
}

fn check_regular(name: &str, v: &[(u16, Instant)]) {
    assert!(v.len() > 100, "{name}: {} packets", v.len());
    let gaps: Vec<_> = v.windows(2).filter(|w| w[1].0 != w[0].0.wrapping_add(1)).map(|w| (w[0].0, w[1].0)).collect();
    assert!(gaps.is_empty(), "{name} lost packets: {gaps:?}");
    // Frames come every 33 ms; a pause of a whole second would mean someone blocked the loop.
    let worst = v.windows(2).map(|w| w[1].1.duration_since(w[0].1)).max().unwrap();
    eprintln!("figure: {name}: {} packets, longest pause between packets {:.1} ms", v.len(), worst.as_secs_f64() * 1e3);
    assert!(worst < Duration::from_secs(1), "{name}: a pause of {worst:?}");
}

#[test]
fn a_stalled_tcp_client_delays_no_one_and_is_disconnected() {
    let d = Daemon::start(&["--width", "640", "--height", "360", "--bitrate", "3M", "--client-stall-timeout", "3"]);
    let stop = Arc::new(AtomicBool::new(false));
    let good = good_clients(&d.url(), &stop);
    std::thread::sleep(Duration::from_millis(500));

    let mut stalled = RtspClient::connect(&d.url());
    stalled.stream = small_window_stream(d.port);
    stalled.play_tcp();
    // From here on the stalled client reads nothing.
    std::thread::sleep(Duration::from_millis(1000));
    let rss_start = d.rss_kib();
    d.wait_for_log("client stall", Duration::from_secs(10));
    let rss_end = d.rss_kib();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for (name, h) in ["TCP", "UDP"].into_iter().zip(good) {
        check_regular(name, &h.join().unwrap());
    }
    eprintln!("figure: RSS while a client was stalled: {rss_start} KiB -> {rss_end} KiB");
    assert!(rss_end < rss_start + 512, "RSS grew from {rss_start} to {rss_end} KiB");
    // The stalled client finds its connection closed once it reads again.
    stalled.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    while stalled.next_frame().is_some() {
        assert!(t.elapsed() < Duration::from_secs(5), "still connected");
    }
}

#[test]
fn a_client_that_falls_out_of_the_ring_resumes_at_an_idr() {
    // Small packets so the 2048-packet ring wraps within seconds; a long stall timeout so the
    // client is not disconnected first.
    let d = Daemon::start(&[
        "--width",
        "640",
        "--height",
        "360",
        "--bitrate",
        "4M",
        "--mtu",
        "576",
        "--client-stall-timeout",
        "60",
    ]);
    let mut c = RtspClient::connect(&d.url());
    c.stream = small_window_stream(d.port);
    c.play_tcp();
    let (first, _) = loop {
        let f = c.next_frame().unwrap();
        if f.channel == 0 {
            break (rtp_seq(&f.data), f.at);
        }
    };
    // Stall long enough for the ring (2048 packets) to move past this client.
    std::thread::sleep(Duration::from_secs(8));
    let mut last = first;
    let t = Instant::now();
    loop {
        let f = c.next_frame().expect("still connected");
        if f.channel != 0 {
            continue;
        }
        let seq = rtp_seq(&f.data);
        if seq != last.wrapping_add(1) {
            // The jump lands on the parameter sets in front of an IDR.
            assert_eq!(
                rtp_nal_type(&f.data),
                7,
                "after skipping {} packets the client must restart at SPS",
                seq.wrapping_sub(last)
            );
            eprintln!("figure: stalled client skipped {} packets and resumed at an IDR", seq.wrapping_sub(last));
            break;
        }
        last = seq;
        assert!(t.elapsed() < Duration::from_secs(10), "no skip seen:\n{}", d.log());
    }
}
