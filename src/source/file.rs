//! `file:PATH`: replays an H.264 Annex B file in real time at `--fps`, looping, without
//! re-encoding (flight replays, benchmarks).
//!
//! At open the file is indexed once into access-unit spans (streaming, any size); each tick of
//! a timerfd reads the next unit with `pread` into one reused buffer. Capture time is the tick.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::{IdrControl, Pipeline, PollRequest, Sink};
use crate::limits;
use crate::media::h264::{annex_b, nal_type, nal_unit_type, AuSpan, AuSplitter};

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: File,
    units: Vec<AuSpan>,
    next: usize,
    timer: TimerFd,
    buf: Vec<u8>,
    fps: u32,
}

/// Indexes the access units of an Annex B stream.
pub fn index(mut r: impl Read) -> io::Result<Vec<AuSpan>> {
    let mut splitter = AuSplitter::new();
    let mut units = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        splitter.feed(&chunk[..n], &mut |a| units.push(a));
    }
    splitter.finish(&mut |a| units.push(a));
    Ok(units)
}

impl FileSource {
    pub fn open(path: &Path, fps: u32) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let units = index(io::BufReader::new(&file))?;
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
        if !units.iter().any(|u| u.idr) {
            return Err(invalid("no IDR access unit: is this an H.264 Annex B (.h264/.264) file?"));
        }
        if !units.iter().any(|u| u.has_sps) {
            return Err(invalid("no SPS in the file: cannot describe the stream"));
        }
        if let Some(big) = units.iter().find(|u| u.end - u.start > limits::MAX_ACCESS_UNIT as u64) {
            return Err(invalid(&format!(
                "access unit at byte {} is larger than {} bytes",
                big.start,
                limits::MAX_ACCESS_UNIT
            )));
        }
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(io::Error::from)?;
        let period = Duration::from_nanos(1_000_000_000 / u64::from(fps));
        timer
            .set(Expiration::Interval(TimeSpec::from_duration(period)), TimerSetTimeFlags::empty())
            .map_err(io::Error::from)?;
        // Start at the first unit holding an SPS so the first thing sent is decodable.
        let next = units.iter().position(|u| u.has_sps).unwrap_or(0);
        Ok(FileSource { path: path.to_owned(), file, units, next, timer, buf: Vec::new(), fps })
    }

    pub fn units(&self) -> usize {
        self.units.len()
    }
}

impl Pipeline for FileSource {
    fn poll_requests(&self, out: &mut Vec<PollRequest>) {
        out.push(PollRequest { fd: self.timer.as_fd().as_raw_fd(), events: libc::POLLIN });
    }

    fn on_ready(&mut self, _index: usize, _revents: i16, _now: Instant, sink: &mut Sink<'_>) -> io::Result<()> {
        // Several expirations mean the loop was late: send one unit, never a burst (a replay
        // that slows down stays decodable; skipping units would not).
        match self.timer.wait() {
            Ok(()) => {}
            Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let capture = Instant::now();
        let span = self.units[self.next];
        self.next = (self.next + 1) % self.units.len();
        let len = (span.end - span.start) as usize;
        self.buf.resize(len, 0);
        self.file.read_exact_at(&mut self.buf, span.start)?;
        sink(&self.buf, capture);
        Ok(())
    }

    fn request_idr(&mut self) {}

    fn idr_control(&self) -> IdrControl {
        IdrControl::PassthroughOnly
    }

    fn parameter_sets(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let span = self.units.iter().find(|u| u.has_sps)?;
        let mut buf = vec![0; (span.end - span.start) as usize];
        self.file.read_exact_at(&mut buf, span.start).ok()?;
        let sps = annex_b(&buf).find(|n| nal_unit_type(n) == Some(nal_type::SPS))?.to_vec();
        let pps = annex_b(&buf).find(|n| nal_unit_type(n) == Some(nal_type::PPS))?.to_vec();
        Some((sps, pps))
    }

    fn describe(&self) -> String {
        format!(
            "file {} ({} access units, {} IDR) replayed at {} fps without re-encoding",
            self.path.display(),
            self.units.len(),
            self.units.iter().filter(|u| u.idr).count(),
            self.fps
        )
    }
}
