//! The few system interfaces std does not wrap: `poll(2)`, the random seed, signal handling,
//! the fd limit, and systemd's notify protocol. This is the one module allowed `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

pub use libc::pollfd as PollFd;
pub use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// A `pollfd` entry for `fd` waiting for `events`.
pub fn poll_entry(fd: RawFd, events: i16) -> PollFd {
    PollFd { fd, events, revents: 0 }
}

/// `poll(2)`; an interrupted call returns `Ok(0)`.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` for the whole call, and
    // its length is passed with it.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// 64 bits from the kernel's random source (session ids, SSRC, initial sequence numbers).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a valid writable buffer of the length passed.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Fall back on something that differs per boot and per process rather than failing.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(b)
}

/// 128 random bits (the Digest nonce secret).
pub fn random_secret() -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&random_u64().to_ne_bytes());
    s[8..].copy_from_slice(&random_u64().to_ne_bytes());
    s
}

/// Blocks SIGINT, SIGTERM and SIGHUP (and, for fault-injection tests, SIGUSR1/SIGUSR2) in this
/// thread and the threads it spawns afterwards, and returns a non-blocking signalfd that reports
/// them, so the loop sees signals as readable input.
pub fn signalfd(fault_injection: bool) -> io::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGHUP);
    if fault_injection {
        mask.add(Signal::SIGUSR1);
        mask.add(Signal::SIGUSR2);
    }
    mask.thread_block().map_err(io::Error::from)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)
}

/// Ignores SIGPIPE so a client that vanishes is an `EPIPE` error, not the end of the process.
pub fn ignore_sigpipe() {
    // SAFETY: setting SIGPIPE's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Raises the soft open-file limit to the hard limit (each session slot holds two UDP sockets).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer for getrlimit/setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Resident set size of this process in KiB (from `/proc/self/statm`), for logs and tests.
pub fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// systemd's notify protocol (sd_notify(3)) over `$NOTIFY_SOCKET`, without libsystemd.
pub mod sd_notify {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::time::Duration;

    /// A connected notify socket, or nothing when not started by systemd with `Type=notify`.
    #[derive(Debug)]
    pub struct Notifier {
        sock: Option<(UnixDatagram, SocketAddr)>,
        /// Half of `WatchdogSec`, when the watchdog is enabled for this process.
        pub watchdog_interval: Option<Duration>,
    }

    impl Notifier {
        /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
        pub fn from_env() -> Notifier {
            let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
                let path = path.into_encoded_bytes();
                let addr = if let Some(name) = path.strip_prefix(b"@") {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name).ok()?
                } else {
                    SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(&path)).ok()?
                };
                let s = UnixDatagram::unbound().ok()?;
                s.set_nonblocking(true).ok()?;
                Some((s, addr))
            });
            let pid_ok = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
            let watchdog_interval = std::env::var("WATCHDOG_USEC")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&us| us > 0 && pid_ok)
                .map(|us| Duration::from_micros(us / 2));
            Notifier { sock, watchdog_interval }
        }

        pub fn enabled(&self) -> bool {
            self.sock.is_some()
        }

        /// Sends one notify message (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...`).
        pub fn notify(&self, msg: &str) {
            if let Some((s, addr)) = &self.sock {
                if let Err(e) = s.send_to_addr(msg.as_bytes(), addr) {
                    log::debug!("sd_notify {msg:?}: {e}");
                }
            }
        }
    }
}

/// Packets sent per `sendmmsg(2)` call (and per `writev(2)` on TCP).
pub const BATCH: usize = 64;

/// Sends each of `packets` (at most [`BATCH`]) as its own datagram to `dest` with one
/// `sendmmsg(2)`. Returns how many the kernel took; the rest were refused (a full socket buffer:
/// the caller drops them, UDP never queues). No allocation.
pub fn send_datagrams(sock: &std::net::UdpSocket, dest: &std::net::SocketAddr, packets: &[&[u8]]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = packets.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr_len = match dest {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec { iov_base: packets[i].as_ptr() as *mut libc::c_void, iov_len: packets[i].len() };
        msgs[i].msg_hdr.msg_name = (&raw mut storage).cast();
        msgs[i].msg_hdr.msg_namelen = addr_len as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `msgs[..n]` point at `iov` entries and `storage`, all alive for the call; the
        // iovecs point at the caller's packet slices, which the kernel only reads.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes a UDP socket's multicast datagrams leave by the interface with index `index`
/// (`IP_MULTICAST_IF` with an `ip_mreqn`, or `IPV6_MULTICAST_IF`).
pub fn set_multicast_interface(sock: &std::net::UdpSocket, ipv6: bool, index: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let r = if ipv6 {
        let idx = index as libc::c_int;
        // SAFETY: a valid socket fd, and a pointer to a c_int of the length passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                (&raw const idx).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    } else {
        let mreq = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: index as libc::c_int,
        };
        // SAFETY: a valid socket fd, and a pointer to an ip_mreqn of the length passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&raw const mreq).cast(),
                std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
            )
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
