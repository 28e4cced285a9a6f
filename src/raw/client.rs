//! The receiving end of a raw-frame socket, for Rust consumers, the tests and the benchmark
//! (`examples/raw_frames.rs` shows it in use; `examples/raw_frames.py` is the same in Python).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use super::header::{FrameHeader, HEADER_LEN};

/// A connection to a camera's raw-frame socket.
#[derive(Debug)]
pub struct RawClient {
    sock: OwnedFd,
}

/// One frame: its header and the sealed memfd holding it.
#[derive(Debug)]
pub struct Received {
    pub header: FrameHeader,
    pub fd: OwnedFd,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl RawClient {
    pub fn connect(path: &Path) -> io::Result<RawClient> {
        let sock = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
        socket::connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(RawClient { sock })
    }

    /// How long [`RawClient::recv`] waits; `None` waits for ever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let tv = nix::sys::time::TimeVal::from(libc::timeval {
            tv_sec: timeout.map_or(0, |t| t.as_secs() as libc::time_t),
            tv_usec: timeout.map_or(0, |t| libc::suseconds_t::from(t.subsec_micros())),
        });
        socket::setsockopt(&self.sock, socket::sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)
    }

    /// The next frame; `Ok(None)` once the daemon has closed the connection (a consumer beyond
    /// `raw-clients` gets that at once).
    pub fn recv(&self) -> io::Result<Option<Received>> {
        let mut buf = [0u8; 4 * HEADER_LEN];
        let (n, fd) = crate::sys::recv_with_fd(self.sock.as_fd(), &mut buf)?;
        if n == 0 && fd.is_none() {
            return Ok(None);
        }
        let header = FrameHeader::parse(&buf[..n]).map_err(|e| invalid(format!("raw-frame header: {e:?}")))?;
        let fd = fd.ok_or_else(|| invalid("raw-frame message without a file descriptor".into()))?;
        Ok(Some(Received { header, fd }))
    }
}

impl Received {
    /// A copy of the frame's bytes (a consumer that wants no copy maps the fd instead).
    pub fn read(&self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::from(self.fd.try_clone()?);
        let mut data = vec![0; usize::try_from(self.header.size).map_err(|_| invalid("frame too large".into()))?];
        file.read_exact_at(&mut data, 0)?;
        Ok(data)
    }

    /// Whether the fd is sealed against writing, shrinking and growing.
    pub fn is_sealed(&self) -> io::Result<bool> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let seals = SealFlag::from_bits_truncate(fcntl(self.fd.as_raw_fd(), FcntlArg::F_GET_SEALS)?);
        Ok(seals.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW))
    }
}
