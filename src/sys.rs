//! The few system interfaces std does not wrap: `poll(2)`, the random seed, signal handling,
//! the fd limit, systemd's notify protocol, batched UDP sends (`sendmmsg(2)`, with UDP GSO), and
//! the unread bytes and passed descriptors of `AF_UNIX` sockets (the raw-frame socket), and
//! OpenH264's live bitrate option (the `openh264` crate has it only in its raw API).
//! This is the one module allowed `unsafe`.
//!
//! Invariants of [`send_packets`]: every packet reaches the wire as its own datagram with the
//! same bytes, in order, whether it went plain or inside a GSO message (a GSO message holds at
//! most [`GSO_MAX_SEGMENTS`] packets and [`GSO_MAX_BYTES`] bytes, all of one length but the last,
//! which may be shorter); the packets the kernel took are always a prefix of those given, and
//! their count is exact, so callers can count the rest as dropped; no allocation.
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

/// Most UDP payload bytes in one GSO message: IPv4's datagram limit (65535 − 20 IP − 8 UDP
/// header bytes), which is within IPv6's too. A larger message is refused (`EMSGSIZE`).
pub const GSO_MAX_BYTES: usize = 65_507;

/// Most segments in one GSO message: the kernel's `UDP_MAX_SEGMENTS`, 64 from Linux 4.18 (raised
/// to 128 in later kernels; 64 is what every kernel with GSO takes). More is `EINVAL`.
pub const GSO_MAX_SEGMENTS: usize = 64;

/// One message of a `sendmmsg(2)` batch: `count` consecutive packets from `first`, sent either
/// as one plain datagram (`seg == 0`, then `count == 1`) or as one GSO message that the kernel
/// cuts every `seg` bytes (`count >= 2`, every packet `seg` bytes long but the last, which may be
/// shorter and not empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Run {
    first: usize,
    count: usize,
    seg: usize,
}

/// Groups `packets` (at most [`BATCH`]) into messages, in order, into `runs`; returns how many.
/// With `gso`, each maximal run of equal-length packets (plus one shorter packet that ends it)
/// within [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`] is one GSO message; everything else, and
/// everything without `gso`, is one plain datagram per packet. Pure: no system call.
fn plan(packets: &[&[u8]], gso: bool, runs: &mut [Run; BATCH]) -> usize {
    let n = packets.len().min(BATCH);
    let (mut m, mut i) = (0, 0);
    while i < n {
        let seg = packets[i].len();
        let mut j = i + 1;
        if gso && seg > 0 && seg <= usize::from(u16::MAX) {
            let mut bytes = seg;
            while j < n && j - i < GSO_MAX_SEGMENTS && bytes + packets[j].len() <= GSO_MAX_BYTES {
                let len = packets[j].len();
                if len == seg {
                    bytes += len;
                    j += 1;
                    continue;
                }
                if len > 0 && len < seg {
                    j += 1;
                }
                break;
            }
        }
        runs[m] = Run { first: i, count: j - i, seg: if j - i > 1 { seg } else { 0 } };
        m += 1;
        i = j;
    }
    m
}

/// What one [`send_packets`] call did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Packets the kernel took: always the first `packets` of those given (messages are taken
    /// in order, each whole or not at all). The rest were refused: the caller drops them.
    pub packets: usize,
    /// GSO messages among those taken, and the packets they carried.
    pub gso_messages: usize,
    pub gso_packets: usize,
    /// The kernel refused a GSO message with an error that says it cannot segment for this
    /// socket or route: `EMSGSIZE` (a segment larger than the route's MTU; `EINVAL` before the
    /// 2025 fix "udp: gso: do not drop small packets when PMTU reduces"), `EINVAL` (checksums off
    /// on the socket, more than `UDP_MAX_SEGMENTS`), `EIO` (IPsec on the route; before Linux
    /// 6.11 also a device without checksum offload, e.g. some Wi-Fi drivers), `ENOPROTOOPT`,
    /// `EOPNOTSUPP`. `packets` stops before that message; the caller should stop asking for GSO
    /// on this socket and send the rest plain (which behaves as before: IP fragments if needed).
    pub gso_refused: Option<io::Error>,
    /// Any other error that stopped the batch (a full socket buffer: `EAGAIN`/`ENOBUFS`).
    pub error: Option<io::Error>,
}

/// Sends `packets` (at most [`BATCH`]) to `dest` as individual datagrams on the wire, with as
/// few `sendmmsg(2)` calls as the kernel allows (one, unless it takes only part of the batch).
/// With `gso`, runs of equal-length packets go as one UDP GSO message each (a `UDP_SEGMENT`
/// control message with the segment size; the packets are the message's iovecs, so nothing is
/// copied), which the stack passes through once and cuts into the same datagrams a plain send
/// would produce. Only ask for `gso` after [`udp_gso_probe`] succeeded: a kernel before 4.18
/// ignores the control message and would send each run as one oversized datagram.
///
/// When the kernel takes only part of a batch, it is asked once more for the rest, which tells
/// why it stopped (usually `EAGAIN`: that part is dropped, UDP never queues). No allocation.
pub fn send_packets(sock: &std::net::UdpSocket, dest: &std::net::SocketAddr, packets: &[&[u8]], gso: bool) -> Sent {
    use std::os::fd::AsRawFd;
    /// Room for one `cmsghdr` with a `u16`, aligned as a `cmsghdr`.
    #[derive(Clone, Copy)]
    #[repr(C)]
    union CmsgBuf {
        _align: libc::cmsghdr,
        _bytes: [u8; 32],
    }
    // SAFETY: CMSG_SPACE only computes a size.
    const CMSG_U16_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
    const _: () = assert!(CMSG_U16_SPACE <= std::mem::size_of::<CmsgBuf>());

    let mut out = Sent::default();
    let mut runs = [Run::default(); BATCH];
    let m = plan(packets, gso, &mut runs);
    if m == 0 {
        return out;
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
    for (v, p) in iov.iter_mut().zip(packets) {
        *v = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
    }
    // SAFETY: CmsgBuf and mmsghdr are plain old data; all-zero is a valid (empty) value.
    let mut cmsgs: [CmsgBuf; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (k, r) in runs[..m].iter().enumerate() {
        let h = &mut msgs[k].msg_hdr;
        h.msg_name = (&raw mut storage).cast();
        h.msg_namelen = addr_len as libc::socklen_t;
        h.msg_iov = &raw mut iov[r.first];
        h.msg_iovlen = r.count as _;
        if r.seg > 0 {
            h.msg_control = (&raw mut cmsgs[k]).cast();
            h.msg_controllen = CMSG_U16_SPACE as _;
            // SAFETY: msg_control points at `cmsgs[k]`, zeroed, aligned for a cmsghdr and at
            // least CMSG_SPACE(2) long, so the first header and its 2 data bytes lie inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), r.seg as u16);
            }
        }
    }
    let mut done = 0;
    while done < m {
        // SAFETY: `msgs[done..m]` point at `iov` entries, `cmsgs` and `storage`, all alive for
        // the call; the iovecs point at the caller's packet slices, which the kernel only reads.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr().add(done),
                (m - done) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r > 0 {
            let took = (r as usize).min(m - done);
            for run in &runs[done..done + took] {
                out.packets += run.count;
                if run.seg > 0 {
                    out.gso_messages += 1;
                    out.gso_packets += run.count;
                }
            }
            done += took;
            continue;
        }
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        let gso_error = matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::EIO | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
        );
        if runs[done].seg > 0 && gso_error {
            out.gso_refused = Some(e);
        } else {
            out.error = Some(e);
        }
        break;
    }
    out
}

/// Whether this kernel has UDP GSO: reading the `UDP_SEGMENT` option of `sock` works from Linux
/// 4.18 and is `ENOPROTOOPT` before. (Whether a route can take GSO shows only when sending: see
/// [`Sent::gso_refused`].)
pub fn udp_gso_probe(sock: &std::net::UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket fd, and out-pointers to a c_int and its length.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, (&raw mut val).cast(), &raw mut len)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

/// OpenH264's `SBitrateInfo` (`codec_app_def.h`): which spatial layer, and bits per second.
#[cfg(feature = "software")]
#[repr(C)]
struct OpenH264BitrateInfo {
    layer: libc::c_int,
    bitrate: libc::c_int,
}

/// Changes a running OpenH264 encoder's target bitrate in place, without a new IDR: the
/// single spatial layer's target and its maximum both become `bps` (as a new encoder of that
/// bitrate would have them; OpenH264 refuses a target above the maximum, so going up the maximum
/// moves first, going down the target). Its rate control takes the new figure at the next
/// frame. `Err` names the option OpenH264 refused (always before the encoder's first frame);
/// the caller should then rebuild the encoder.
#[cfg(feature = "software")]
pub fn openh264_set_bitrate(enc: &mut openh264::encoder::Encoder, from_bps: u32, bps: u32) -> Result<(), &'static str> {
    // `codec_app_def.h`: ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE; SPATIAL_LAYER_0,
    // SPATIAL_LAYER_ALL (the overall target, spread over the layers: one here).
    const BITRATE: libc::c_int = 5;
    const MAX_BITRATE: libc::c_int = 6;
    const LAYER_0: libc::c_int = 0;
    const LAYER_ALL: libc::c_int = 4;
    let Ok(rate) = libc::c_int::try_from(bps) else { return Err("bitrate out of range") };
    let set = |enc: &mut openh264::encoder::Encoder, option, layer, what| {
        let mut info = OpenH264BitrateInfo { layer, bitrate: rate };
        // SAFETY: the raw API's encoder object lives as long as `enc` (created in its
        // constructor, destroyed on drop); before its first frame (not initialised yet) it
        // refuses every option with `cmInitExpected`. ENCODER_OPTION_BITRATE and _MAX_BITRATE
        // read one `SBitrateInfo` through the pointer during the call and keep no reference;
        // `info` is a live, exclusively borrowed value of that C layout. The crate reads its own
        // copy of the bitrate only when the picture size changes, which never happens here.
        let r = unsafe { enc.raw_api().set_option(option, (&raw mut info).cast()) };
        if r == 0 {
            Ok(())
        } else {
            Err(what)
        }
    };
    if bps >= from_bps {
        set(enc, MAX_BITRATE, LAYER_0, "ENCODER_OPTION_MAX_BITRATE")?;
        set(enc, BITRATE, LAYER_ALL, "ENCODER_OPTION_BITRATE")
    } else {
        set(enc, BITRATE, LAYER_ALL, "ENCODER_OPTION_BITRATE")?;
        set(enc, MAX_BITRATE, LAYER_0, "ENCODER_OPTION_MAX_BITRATE")
    }
}

/// Turns UDP checksums off on `sock` (`SO_NO_CHECK`, `UDP_NO_CHECK6_TX` on IPv6), which makes
/// the kernel refuse GSO sends on it (`EINVAL`): how tests exercise the fallback.
#[cfg(test)]
pub(crate) fn test_disable_udp_checksum(sock: &std::net::UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    let (level, name) = if sock.local_addr()?.is_ipv6() {
        (libc::SOL_UDP, libc::UDP_NO_CHECK6_TX)
    } else {
        (libc::SOL_SOCKET, libc::SO_NO_CHECK)
    };
    // SAFETY: a valid socket fd, and a pointer to a c_int of the length passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Accepts one pending connection, non-blocking and close-on-exec.
pub fn accept_nonblocking(listener: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a valid listening socket fd; null address pointers ask for no peer address.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bytes a connected `AF_UNIX` socket has sent that its peer has not read yet (`SIOCOUTQ`,
/// which is `TIOCOUTQ`): 0 once the peer has taken every message.
pub fn unix_unread_bytes(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: a valid socket fd, and `n` is the `int` out-parameter SIOCOUTQ writes.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Receives one message into `buf` and the first file descriptor passed with it
/// (`SCM_RIGHTS`, close-on-exec); any further descriptors are closed. `Ok((0, None))` is the
/// end of the stream.
pub fn recv_with_fd(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    let mut first = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel has just installed `fd` in this process's table for this
                // message; nothing else knows it, so taking ownership (and closing) is sound.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok((n, first))
}

/// Whether the kernel considers the wall clock synchronised: adjtimex(2) in read-only mode
/// (`modes = 0`) returns `TIME_ERROR` while `STA_UNSYNC` is set, i.e. until NTP, chrony or a
/// PPS/GPS discipline has set it. `None` when the call fails (seccomp, odd kernels).
pub fn clock_synchronised() -> Option<bool> {
    // SAFETY: a zeroed `timex` is a valid input; with `modes == 0` adjtimex only reads the
    // kernel's clock state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the duration of the call.
    let r = unsafe { libc::adjtimex(&mut tx) };
    match r {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(lens: &[usize], gso: bool) -> Vec<(usize, usize, usize)> {
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0; l]).collect();
        let pkts: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let mut out = [Run::default(); BATCH];
        let m = plan(&pkts, gso, &mut out);
        out[..m].iter().map(|r| (r.first, r.count, r.seg)).collect()
    }

    #[test]
    fn plan_groups_equal_runs_ending_with_one_shorter_packet() {
        // SPS, PPS, FU-A x5 and a shorter last FU-A, then a small NAL, then two full packets.
        let lens = [25, 8, 1400, 1400, 1400, 1400, 1400, 700, 60, 1400, 1400];
        assert_eq!(runs(&lens, true), [(0, 2, 25), (2, 6, 1400), (8, 1, 0), (9, 2, 1400)]);
        assert_eq!(runs(&lens, false), (0..lens.len()).map(|i| (i, 1, 0)).collect::<Vec<_>>());
        // A longer packet starts a new run; an empty one is never a segment.
        assert_eq!(runs(&[100, 100, 200, 0, 0], true), [(0, 2, 100), (2, 1, 0), (3, 1, 0), (4, 1, 0)]);
        assert_eq!(runs(&[], true), []);
        assert_eq!(runs(&[500], true), [(0, 1, 0)]);
    }

    #[test]
    fn plan_keeps_gso_messages_within_the_kernel_limits() {
        // 64 packets of the largest RTP size: 45 fit in 64 KiB.
        let lens = [1452; BATCH];
        let r = runs(&lens, true);
        assert_eq!(r, [(0, 45, 1452), (45, 19, 1452)]);
        const { assert!(45 * 1452 <= GSO_MAX_BYTES && 46 * 1452 > GSO_MAX_BYTES) };
        // Small packets: the whole batch is one message of GSO_MAX_SEGMENTS.
        assert_eq!(runs(&[100; BATCH], true), [(0, BATCH, 100)]);
        // The batch is capped, whatever is passed.
        assert_eq!(runs(&[100; BATCH + 5], true), [(0, BATCH, 100)]);
        for lens in [[1452; BATCH], [100; BATCH]] {
            for (_, count, seg) in runs(&lens, true) {
                assert!(count <= GSO_MAX_SEGMENTS && count * seg <= GSO_MAX_BYTES);
            }
        }
    }

    #[test]
    fn send_packets_reaches_the_wire_as_the_same_datagrams_over_ipv4_and_ipv6() {
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(rx) = std::net::UdpSocket::bind(any) else { continue };
            rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let tx = std::net::UdpSocket::bind(any).unwrap();
            udp_gso_probe(&tx).expect("UDP GSO in this kernel");
            let dest = rx.local_addr().unwrap();
            let lens = [25usize, 8, 1400, 1400, 1400, 1400, 1400, 700, 60, 1400, 1400, 1452];
            let bufs: Vec<Vec<u8>> =
                lens.iter().enumerate().map(|(i, &l)| (0..l).map(|b| (b * 31 + i) as u8).collect()).collect();
            let pkts: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
            let s = send_packets(&tx, &dest, &pkts, true);
            assert!(s.gso_refused.is_none() && s.error.is_none(), "{s:?}");
            assert_eq!((s.packets, s.gso_messages, s.gso_packets), (12, 3, 10), "{any}");
            let mut buf = [0u8; 65536];
            for want in &bufs {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &want[..], "{any}");
            }
            // Checksums off: GSO refused at the first GSO message, the plain one before it taken.
            test_disable_udp_checksum(&tx).unwrap();
            let s = send_packets(&tx, &dest, &pkts[8..], true);
            assert_eq!(s.packets, 1, "{any}: {s:?}");
            assert!(s.gso_refused.is_some(), "{any}: {s:?}");
            if dest.is_ipv4() {
                // (An IPv6 receiver drops a zero checksum unless it sets UDP_NO_CHECK6_RX.)
                assert_eq!(rx.recv(&mut buf).unwrap(), 60);
            }
        }
    }
}
