//! The hot path allocates nothing: with three streams (`/live` H.264, `/low` smaller and slower
//! H.264, `/mjpeg` MJPEG), ten clients spread over them (five UDP, five TCP) and a multicast
//! receiver, the event loop's thread makes zero heap allocations per packet, per client send, per
//! access unit, per group packet and sender report.
//! Counted by a global allocator that counts only on the loop's thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{client_udp_pair, RtspClient};

struct Counting;

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNT_HERE.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNT_HERE.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn streaming_to_ten_clients_allocates_nothing_on_the_loop() {
    stream_and_count(1, 0);
}

/// With `fanout-threads=2` and eight more UDP clients of `/live` (enough to wake the sender
/// thread): handing shares out and taking them back allocates nothing on the loop either.
#[test]
fn fanning_out_over_two_threads_allocates_nothing_on_the_loop() {
    stream_and_count(2, 8);
}

/// One at a time: the count is global.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stream_and_count(fanout_threads: usize, more_udp: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (a, b) = common::rtp_range(80);
    let group = std::net::Ipv4Addr::new(239, 255, 99, (std::process::id() % 250) as u8 + 1);
    let group_port = common::rtp_range(2).0;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut raw = uavstream::config::RawConfig::new();
        for (k, v) in [
            ("width", "320".to_owned()),
            ("height", "240".to_owned()),
            ("listen", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
            ("rtp-ports", format!("{a}-{b}")),
            ("multicast-group", group.to_string()),
            ("multicast-port", group_port.to_string()),
            ("stream2.path", "/low".to_owned()),
            ("stream2.width", "160".to_owned()),
            ("stream2.height", "120".to_owned()),
            ("stream2.fps", "15".to_owned()),
            ("stream2.bitrate", "300k".to_owned()),
            ("stream3.path", "/mjpeg".to_owned()),
            ("stream3.codec", "mjpeg".to_owned()),
            ("fanout-threads", fanout_threads.to_string()),
            ("max-pending-connections", "64".to_owned()),
            ("max-clients", "32".to_owned()),
        ] {
            raw.set(k, &v, uavstream::config::Origin::Flag);
        }
        let cfg = raw.resolve().unwrap();
        assert_eq!(cfg.streams.len(), 3);
        let signals = uavstream::sys::signalfd(false).unwrap();
        let pipelines = (0..3).map(|i| uavstream::source::build(&cfg.pipeline(i)).unwrap()).collect();
        let factory = Box::new(|i: usize, camera| uavstream::source::build_with(&cfg.pipeline(i), camera));
        let routes: Vec<_> = cfg.streams.iter().map(|st| st.rtsp_route()).collect();
        let notifier = uavstream::sys::sd_notify::Notifier::from_env();
        let mut lp =
            uavstream::event_loop::EventLoop::new(&cfg, &routes, signals, pipelines, factory, &[], notifier).unwrap();
        ready_tx.send(()).unwrap();
        COUNT_HERE.with(|c| c.set(true));
        let _ = lp.run();
    });
    ready_rx.recv().unwrap();
    let mut packets = Vec::new();
    for i in 0..11 + more_udp {
        // The multicast receiver (i = 10) and the UDP clients beyond it play /live; the others
        // are spread over the streams.
        let path = ["/live", "/low", "/mjpeg"][if i >= 10 { 0 } else { i % 3 }];
        let url = format!("rtsp://127.0.0.1:{port}{path}");
        packets.push(std::thread::spawn(move || -> u64 {
            let mut n = 0;
            let t = std::time::Instant::now();
            if i == 10 {
                let sock = std::net::UdpSocket::bind((group, group_port)).unwrap();
                sock.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut c = RtspClient::connect(&url);
                let s = c.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP;multicast")]);
                assert_eq!(c.request("PLAY", &url, &[("Session", &s.session())]).status, 200);
                let mut buf = [0u8; 2048];
                while t.elapsed() < Duration::from_secs(4) {
                    if sock.recv_from(&mut buf).is_ok() {
                        n += 1;
                    }
                }
                assert!(n > 100, "the multicast receiver got only {n} packets");
            } else if i % 2 == 0 && i < 10 {
                let mut c = RtspClient::connect(&url);
                c.play_tcp();
                while t.elapsed() < Duration::from_secs(4) {
                    if c.next_frame().is_some_and(|f| f.channel == 0) {
                        n += 1;
                    }
                }
            } else {
                let (rtp, _rtcp, p) = client_udp_pair();
                let mut c = RtspClient::connect(&url);
                let s = c.request(
                    "SETUP",
                    &format!("{url}/trackID=0"),
                    &[("Transport", &format!("RTP/AVP;unicast;client_port={p}-{}", p + 1))],
                );
                assert_eq!(c.request("PLAY", &url, &[("Session", &s.session())]).status, 200);
                let mut buf = [0u8; 2048];
                while t.elapsed() < Duration::from_secs(4) {
                    if rtp.recv_from(&mut buf).is_ok() {
                        n += 1;
                    }
                }
            }
            n
        }));
    }
    // Everyone joined and warmed up (first IDR, RTCP, keyframe bookkeeping) before counting.
    std::thread::sleep(Duration::from_millis(1500));
    let before = ALLOCS.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(2000));
    let during = ALLOCS.load(Ordering::Relaxed) - before;
    let total: u64 = packets.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("figure: {during} heap allocations on the loop thread in 2 s of streaming to {} clients and a multicast group, fanout-threads={fanout_threads} ({total} packets received in 4 s)", 10 + more_udp);
    assert!(total > 1000, "clients received only {total} packets");
    assert_eq!(during, 0, "the loop allocated while streaming");
}
