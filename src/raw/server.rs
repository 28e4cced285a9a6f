//! The raw-frame socket of one camera: a thread with its own `poll(2)` over the camera's
//! [`PolledTap`], the listener, a stop eventfd and the consumers; the [`Fanout`] core decides,
//! this file does the sockets and the memfds (see [`super`] for the invariants).
//!
//! The socket is made where no consumer can reach it with the wrong permissions: bound under a
//! temporary name, given `raw-socket-mode`, renamed over the configured path, and only then
//! listening. A stale socket at the path (a crashed daemon's) is replaced; a live one (another
//! daemon answers on it) or a file that is not a socket is an error. The socket is removed when
//! the output is dropped.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{self, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr};

use super::fanout::{Counters, Fanout, FrameInfo, Sent};
use super::header::HEADER_LEN;
use crate::encode::worker::{FrameLayout, FrameTap, PolledTap, SharedFrame};
use crate::sys::{self, PollFd, POLLIN};

/// Longest socket path accepted by the configuration: `sun_path` holds 107 bytes, and the
/// temporary name it is bound under first adds a dot, the process id and `.tmp`.
pub const MAX_PATH_BYTES: usize = 90;
/// At most one warning per this interval for refused consumers and failed copies.
const WARN_EVERY: Duration = Duration::from_secs(5);
const LISTEN_BACKLOG: i32 = 8;

/// `raw-socket`, `raw-socket-mode`, `raw-clients` of one camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSettings {
    pub path: PathBuf,
    /// Permission bits of the socket file (e.g. `0o660`).
    pub mode: u32,
    /// Consumer slots.
    pub clients: usize,
}

/// What `/status` and `/metrics` show of a raw-frame socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawStatus {
    pub consumers: usize,
    pub capacity: usize,
    pub counters: Counters,
}

/// A camera's raw-frame socket and the thread serving it; dropping it stops the thread and
/// removes the socket.
pub struct RawOutput {
    tap: FrameTap,
    status: Arc<Mutex<RawStatus>>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for RawOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOutput").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RawOutput {
    /// Makes the socket and starts the thread. `camera` names it in log lines; `layout` is the
    /// camera's frame layout as far as it is known (frames carry their own).
    pub fn start(camera: &str, settings: &RawSettings, layout: FrameLayout) -> io::Result<RawOutput> {
        let listener = listen_at(&settings.path, settings.mode)?;
        let (polled, tap) = PolledTap::new(layout)?;
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(io::Error::from)?,
        );
        let fanout = Fanout::new(settings.clients);
        let status = Arc::new(Mutex::new(RawStatus { capacity: fanout.capacity(), ..RawStatus::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            camera: camera.to_owned(),
            listener,
            polled,
            wake: Arc::clone(&wake),
            stop: Arc::clone(&stop),
            conns: (0..fanout.capacity()).map(|_| None).collect(),
            fanout,
            status: Arc::clone(&status),
            clock: (Instant::now(), monotonic_now()),
            pollfds: Vec::with_capacity(3 + settings.clients),
            slots_polled: Vec::with_capacity(settings.clients),
            refused_warned: (0, None),
            copy_warned: None,
        };
        let thread = std::thread::Builder::new().name("raw-frames".into()).spawn(move || worker.run())?;
        log::info!(
            "{camera}: raw frames on {} (mode {:04o}, {} consumer slots)",
            settings.path.display(),
            settings.mode,
            settings.clients
        );
        Ok(RawOutput { tap, status, stop, wake, thread: Some(thread), path: settings.path.clone() })
    }

    /// The tap the camera feeds (it goes into the camera's feed list).
    pub fn tap(&self) -> FrameTap {
        self.tap.clone()
    }

    pub fn status(&self) -> RawStatus {
        self.status.lock().map_or_else(|e| *e.into_inner(), |s| *s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RawOutput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)
}

/// Whether a process answers on the socket at `path`.
fn someone_listens(path: &Path) -> bool {
    let (Ok(sock), Ok(addr)) = (seqpacket_socket(), UnixAddr::new(path)) else { return false };
    socket::connect(sock.as_raw_fd(), &addr).is_ok()
}

/// A listening `SOCK_SEQPACKET` socket at `path` with permissions `mode` (see the module docs).
fn listen_at(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("raw-socket {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(named)?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if someone_listens(path) {
                return Err(named(io::Error::new(io::ErrorKind::AddrInUse, "another process serves this socket")));
            }
            fs::remove_file(path).map_err(named)?;
        }
        Ok(_) => return Err(named(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let sock = seqpacket_socket().map_err(named)?;
    let addr = UnixAddr::new(&tmp).map_err(|e| named(e.into()))?;
    socket::bind(sock.as_raw_fd(), &addr).map_err(|e| named(e.into()))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(named(e));
    }
    let backlog = Backlog::new(LISTEN_BACKLOG).map_err(|e| named(e.into()))?;
    socket::listen(&sock, backlog).map_err(|e| named(e.into()))?;
    nix::fcntl::fcntl(sock.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
        .map_err(|e| named(e.into()))?;
    Ok(sock)
}

/// One copy of `data` in a memfd, sealed against writes, shrinking and growing.
fn sealed_memfd(data: &[u8]) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    const NAME: &CStr = c"uavstream-frame";
    let fd = memfd_create(NAME, MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING)?;
    let mut file = File::from(fd);
    file.write_all(data)?;
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(file))
}

/// Sends `header` with the frame's fd, never blocking.
fn send_frame(conn: &OwnedFd, header: &[u8], memfd: &OwnedFd) -> Sent {
    let fds = [memfd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    match socket::sendmsg::<()>(conn.as_raw_fd(), &[IoSlice::new(header)], &cmsg, flags, None) {
        Ok(_) => Sent::Delivered,
        // Full, or the kernel's limit of descriptors in flight for this user (ETOOMANYREFS).
        Err(Errno::EAGAIN | Errno::ETOOMANYREFS | Errno::ENOBUFS | Errno::ENOMEM | Errno::EINTR) => Sent::Busy,
        Err(_) => Sent::Closed,
    }
}

struct Worker {
    camera: String,
    listener: OwnedFd,
    polled: PolledTap,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    /// Consumer sockets by slot.
    conns: Vec<Option<OwnedFd>>,
    fanout: Fanout,
    status: Arc<Mutex<RawStatus>>,
    /// An `Instant` and the CLOCK_MONOTONIC reading taken with it (capture times are sent as
    /// CLOCK_MONOTONIC nanoseconds).
    clock: (Instant, Duration),
    pollfds: Vec<PollFd>,
    slots_polled: Vec<usize>,
    /// Refusals the last warning covered, and when it was.
    refused_warned: (u64, Option<Instant>),
    copy_warned: Option<Instant>,
}

impl Worker {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.pollfds.clear();
            self.slots_polled.clear();
            self.pollfds.push(sys::poll_entry(self.polled.fd().as_raw_fd(), POLLIN));
            self.pollfds.push(sys::poll_entry(self.wake.as_fd().as_raw_fd(), POLLIN));
            self.pollfds.push(sys::poll_entry(self.listener.as_raw_fd(), POLLIN));
            for (slot, c) in self.conns.iter().enumerate() {
                if let Some(c) = c {
                    self.pollfds.push(sys::poll_entry(c.as_raw_fd(), POLLIN));
                    self.slots_polled.push(slot);
                }
            }
            if let Err(e) = sys::poll(&mut self.pollfds, -1) {
                log::error!("{}: raw-socket: poll: {e}", self.camera);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            for k in 0..self.slots_polled.len() {
                if self.pollfds[3 + k].revents != 0 {
                    self.on_consumer(self.slots_polled[k]);
                }
            }
            if self.pollfds[2].revents != 0 {
                self.accept(now);
            }
            if self.pollfds[0].revents != 0 {
                if let Some(frame) = self.polled.take() {
                    self.deliver(frame, now);
                }
            }
            self.publish();
        }
    }

    fn publish(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.consumers = self.fanout.consumers();
            s.counters = self.fanout.counters();
        }
    }

    fn close(&mut self, slot: usize, why: &str) {
        if self.conns.get_mut(slot).and_then(Option::take).is_some() {
            self.fanout.handle_disconnect(slot);
            log::info!(
                "{}: raw-socket consumer in slot {} left ({why}); {} of {} slots taken",
                self.camera,
                slot + 1,
                self.fanout.consumers(),
                self.fanout.capacity()
            );
        }
    }

    /// A consumer is readable or hung up: what it sends is read and discarded; end-of-file or
    /// an error frees its slot.
    fn on_consumer(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get(slot) else { return };
        let mut scratch = [0u8; 256];
        let flags = MsgFlags::MSG_DONTWAIT;
        for _ in 0..16 {
            match socket::recv(conn.as_raw_fd(), &mut scratch, flags) {
                Ok(0) => return self.close(slot, "closed"),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => return self.close(slot, e.desc()),
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let conn = match sys::accept_nonblocking(self.listener.as_fd()) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{}: raw-socket accept: {e}", self.camera);
                    return;
                }
            };
            let pid = socket::getsockopt(&conn, socket::sockopt::PeerCredentials).map_or(0, |c| c.pid());
            match self.fanout.handle_connect() {
                Ok(slot) => {
                    self.conns[slot] = Some(conn);
                    log::info!(
                        "{}: raw-socket consumer (pid {pid}) in slot {}; {} of {} slots taken",
                        self.camera,
                        slot + 1,
                        self.fanout.consumers(),
                        self.fanout.capacity()
                    );
                }
                Err(_) => {
                    drop(conn);
                    let refused = self.fanout.counters().refused;
                    let due = self.refused_warned.1.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY);
                    if due {
                        log::warn!(
                            "{}: raw-socket consumer (pid {pid}) refused: all {} slots are taken (raw-clients); {} refused since start",
                            self.camera,
                            self.fanout.capacity(),
                            refused
                        );
                        self.refused_warned = (refused, Some(now));
                    }
                }
            }
        }
    }

    /// CLOCK_MONOTONIC nanoseconds of `t`.
    fn monotonic_ns(&self, t: Instant) -> u64 {
        let (at, mono) = self.clock;
        let ns = match t.checked_duration_since(at) {
            Some(after) => mono + after,
            None => mono.saturating_sub(at.saturating_duration_since(t)),
        };
        u64::try_from(ns.as_nanos()).unwrap_or(u64::MAX)
    }

    fn deliver(&mut self, frame: SharedFrame, now: Instant) {
        let l = frame.layout;
        let info = FrameInfo {
            fourcc: l.fourcc,
            width: l.width,
            height: l.height,
            stride: l.stride,
            len: frame.data.len(),
            capture_ns: self.monotonic_ns(frame.capture),
        };
        let conns = &self.conns;
        let ready = |slot: usize| {
            conns
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| sys::unix_unread_bytes(c.as_fd()).is_ok_and(|n| n == 0))
        };
        if !self.fanout.handle_frame(info, ready) {
            return;
        }
        let size = self.fanout.current().map_or(0, |h| h.size as usize);
        let memfd = match frame.data.get(..size).map(sealed_memfd) {
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                if self.copy_warned.is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY) {
                    log::warn!("{}: raw-socket: the frame's memfd: {e}; frame skipped", self.camera);
                    self.copy_warned = Some(now);
                }
                return self.fanout.abandon_frame();
            }
            None => return self.fanout.abandon_frame(),
        };
        drop(frame);
        let mut header = [0u8; HEADER_LEN];
        while let Some((slot, n)) = self.fanout.poll_send(&mut header) {
            let outcome = match self.conns.get(slot).and_then(Option::as_ref) {
                Some(conn) => send_frame(conn, &header[..n], &memfd),
                None => Sent::Closed,
            };
            self.fanout.handle_sent(slot, outcome);
            if outcome == Sent::Closed {
                self.close(slot, "send failed");
            }
        }
    }
}
