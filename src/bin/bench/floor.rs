//! The kernel's floor for a UDP fan-out on this machine: the same packets the `server` bench's
//! clip makes (1080p30, ~8 Mbit/s, an IDR of 4x the size every 30 frames, 1400-byte packets)
//! sent to N loopback receivers, one socket per receiver as the daemon's session slots have,
//! with the daemon's own send call (`uavstream::sys::send_packets`: sendmmsg with UDP GSO) and
//! nothing else — no ring, no sessions, no poll loop. Its time per access unit is what the
//! daemon's server-added latency cannot go under; the ratio of the two is the daemon's own share.
//!
//! Receivers are drained by a thread (as real clients would), so the receive side's cost on
//! loopback — which the sender pays inside `sendmsg` — is the same as in the server runs.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time to send one access unit to every receiver (p50, p99 in µs), and the sender's CPU %.
pub struct Floor {
    pub p50_us: u64,
    pub p99_us: u64,
    pub cpu_pct: f64,
}

fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// Runs the floor with `n` receivers for `seconds`, sent by `threads` threads: each sends every
/// access unit to its share of the receivers, and the unit is done when all are (the fork-join
/// of `fanout-threads`, with nothing else). CPU % is the sender threads' together.
pub fn run(n: usize, seconds: u64, threads: usize) -> Floor {
    const PACKET: usize = 1400;
    let gso = uavstream::sys::udp_gso_probe(&UdpSocket::bind("127.0.0.1:0").expect("udp")).is_ok();
    let receivers: Vec<UdpSocket> = (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let dests: Vec<SocketAddr> = receivers.iter().map(|s| s.local_addr().expect("addr")).collect();
    let senders: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind sender")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut fds: Vec<libc::pollfd> = receivers
                .iter()
                .map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
                let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                if r <= 0 {
                    continue;
                }
                for (f, s) in fds.iter_mut().zip(&receivers) {
                    if f.revents != 0 {
                        while s.recv(&mut buf).is_ok() {}
                        f.revents = 0;
                    }
                }
            }
        })
    };
    let unit: usize = 8_000_000 / 8 / 30;
    let payload = vec![0x5au8; PACKET];
    let mut times = Vec::new();
    let period = Duration::from_secs_f64(1.0 / 30.0);
    let threads = threads.clamp(1, n.max(1));
    let per = n.div_ceil(threads).max(1);
    let shares: Vec<(&[UdpSocket], &[SocketAddr])> = senders.chunks(per).zip(dests.chunks(per)).collect();
    // Packets of the current unit, and whether the run is over (read after the first barrier).
    let count = std::sync::atomic::AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(shares.len());
    let send_share = |share: &(&[UdpSocket], &[SocketAddr]), count: usize| {
        let packets: Vec<&[u8]> = (0..count).map(|_| &payload[..]).collect();
        for (sock, dest) in share.0.iter().zip(share.1) {
            for chunk in packets.chunks(uavstream::sys::BATCH) {
                let _ = uavstream::sys::send_packets(sock, dest, chunk, gso);
            }
        }
    };
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let helpers_cpu = std::thread::scope(|scope| {
        let helpers: Vec<_> = shares[1..]
            .iter()
            .map(|share| {
                let (barrier, count, done, send_share) = (&barrier, &count, &done, &send_share);
                scope.spawn(move || {
                    let cpu0 = thread_cpu();
                    loop {
                        barrier.wait();
                        if done.load(Ordering::Acquire) {
                            break;
                        }
                        send_share(share, count.load(Ordering::Acquire));
                        barrier.wait();
                    }
                    thread_cpu() - cpu0
                })
            })
            .collect();
        let mut k = 0u32;
        while start.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep((start + period * k).saturating_duration_since(Instant::now()));
            let bytes = if k % 30 == 0 { unit * 4 } else { unit };
            count.store(bytes.div_ceil(PACKET), Ordering::Release);
            let t0 = Instant::now();
            barrier.wait();
            send_share(&shares[0], bytes.div_ceil(PACKET));
            barrier.wait();
            times.push(t0.elapsed().as_micros() as u64);
            k += 1;
        }
        done.store(true, Ordering::Release);
        barrier.wait();
        helpers.into_iter().map(|h| h.join().unwrap_or_default()).sum::<Duration>()
    });
    let cpu = thread_cpu() - cpu0 + helpers_cpu;
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    times.sort_unstable();
    let pick = |q: f64| times.get(((times.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(0);
    Floor { p50_us: pick(0.5), p99_us: pick(0.99), cpu_pct: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64() }
}
