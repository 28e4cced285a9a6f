//! V4L2 nodes through v4l2r's `ioctl` layer: discovery by capability, format listing and
//! negotiation with explicit plane layouts, MMAP buffer sets exported as DMABUF, and
//! non-blocking queue/dequeue. Shared by the capture source and the M2M codecs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l2r::bindings;
use v4l2r::ioctl::{
    self, Capabilities, Capability, ExpbufFlags, FmtDesc, FrmIvalTypes, FrmSizeTypes, QBufPlane, QBuffer, QueryBuffer,
    V4l2Buffer,
};
use v4l2r::memory::{DmaBuf, MemoryType, MmapHandle, PlaneHandle};
use v4l2r::{Format, PixelFormat, PlaneLayout, QueueType};

use super::sys;

/// The capture FourCCs uavstream negotiates.
pub const SUPPORTED_FORMATS: [[u8; 4]; 5] = [*b"NV12", *b"YU12", *b"YUYV", *b"MJPG", *b"H264"];

/// Raw formats the encoders take, in order of preference.
pub const RAW_FORMATS: [[u8; 4]; 3] = [*b"NV12", *b"YU12", *b"YUYV"];

pub fn fourcc_str(f: [u8; 4]) -> String {
    String::from_utf8_lossy(&f).into_owned()
}

pub fn fourcc_of(p: PixelFormat) -> [u8; 4] {
    u32::from(p).to_le_bytes()
}

/// Opens a node read-write, non-blocking (the loop polls it), close-on-exec.
pub fn open_node(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)
}

pub fn errno_io(e: v4l2r::nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// One `/dev/video*` node and what it can do.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub caps: Capabilities,
}

impl NodeInfo {
    pub fn is_capture(&self) -> bool {
        self.caps.intersects(Capabilities::VIDEO_CAPTURE | Capabilities::VIDEO_CAPTURE_MPLANE)
            && !self.is_m2m()
            && self.caps.contains(Capabilities::STREAMING)
    }

    pub fn is_m2m(&self) -> bool {
        self.caps.intersects(Capabilities::VIDEO_M2M | Capabilities::VIDEO_M2M_MPLANE)
    }

    /// The capture queue: single-planar when offered (simplest), else multi-planar.
    pub fn capture_queue(&self) -> QueueType {
        if self.caps.intersects(Capabilities::VIDEO_CAPTURE | Capabilities::VIDEO_M2M) {
            QueueType::VideoCapture
        } else {
            QueueType::VideoCaptureMplane
        }
    }

    pub fn output_queue(&self) -> QueueType {
        if self.caps.intersects(Capabilities::VIDEO_OUTPUT | Capabilities::VIDEO_M2M) {
            QueueType::VideoOutput
        } else {
            QueueType::VideoOutputMplane
        }
    }
}

pub fn query(path: &Path, fd: &File) -> io::Result<NodeInfo> {
    let cap: Capability = ioctl::querycap(fd).map_err(|e| io::Error::other(format!("QUERYCAP: {e}")))?;
    Ok(NodeInfo { path: path.to_owned(), driver: cap.driver.clone(), card: cap.card.clone(), caps: cap.device_caps() })
}

/// Every `/dev/video*` node that answers QUERYCAP, in numeric order.
pub fn scan() -> Vec<NodeInfo> {
    let mut paths: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n: u32 = name.strip_prefix("video")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths.into_iter().filter_map(|(_, p)| open_node(&p).ok().and_then(|fd| query(&p, &fd).ok())).collect()
}

pub fn formats(fd: &File, queue: QueueType) -> Vec<FmtDesc> {
    (0..64).map_while(|i| ioctl::enum_fmt::<FmtDesc>(fd, queue, i).ok()).collect()
}

/// A frame size as the device describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeDesc {
    Discrete(u32, u32),
    Stepwise { min: (u32, u32), max: (u32, u32), step: (u32, u32) },
}

impl std::fmt::Display for SizeDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeDesc::Discrete(w, h) => write!(f, "{w}x{h}"),
            SizeDesc::Stepwise { min, max, step } => {
                write!(f, "{}x{} to {}x{} in steps of {}x{}", min.0, min.1, max.0, max.1, step.0, step.1)
            }
        }
    }
}

pub fn sizes(fd: &File, fourcc: [u8; 4]) -> Vec<SizeDesc> {
    let mut out = Vec::new();
    for i in 0..64 {
        let Ok(e) = ioctl::enum_frame_sizes::<bindings::v4l2_frmsizeenum>(fd, i, PixelFormat::from(&fourcc)) else {
            break;
        };
        match e.size() {
            Some(FrmSizeTypes::Discrete(d)) => out.push(SizeDesc::Discrete(d.width, d.height)),
            Some(FrmSizeTypes::StepWise(s)) => {
                out.push(SizeDesc::Stepwise {
                    min: (s.min_width, s.min_height),
                    max: (s.max_width, s.max_height),
                    step: (s.step_width, s.step_height),
                });
                break;
            }
            None => break,
        }
    }
    out
}

/// Frame rates at a size, as text ("30", "25", "1-60").
pub fn rates(fd: &File, fourcc: [u8; 4], w: u32, h: u32) -> Vec<String> {
    let fps = |f: &bindings::v4l2_fract| {
        if f.numerator == 0 {
            "?".to_owned()
        } else if f.denominator % f.numerator == 0 {
            format!("{}", f.denominator / f.numerator)
        } else {
            format!("{:.2}", f64::from(f.denominator) / f64::from(f.numerator))
        }
    };
    let mut out = Vec::new();
    for i in 0..64 {
        let Ok(e) = ioctl::enum_frame_intervals::<bindings::v4l2_frmivalenum>(fd, i, PixelFormat::from(&fourcc), w, h)
        else {
            break;
        };
        match e.intervals() {
            Some(FrmIvalTypes::Discrete(d)) => out.push(fps(d)),
            Some(FrmIvalTypes::StepWise(s)) => {
                out.push(format!("{}-{}", fps(&s.max), fps(&s.min)));
                break;
            }
            None => break,
        }
    }
    out
}

/// What a capture node offers, one line per format: "NV12: 320x180 (30, 60), 640x480 (30)".
pub fn describe_offer(fd: &File, queue: QueueType) -> String {
    let mut s = String::new();
    for f in formats(fd, queue) {
        let cc = fourcc_of(f.pixelformat);
        s.push_str(&format!("    {} ({}):", fourcc_str(cc), f.description));
        for (i, size) in sizes(fd, cc).into_iter().enumerate() {
            s.push_str(if i == 0 { " " } else { ", " });
            s.push_str(&size.to_string());
            if let SizeDesc::Discrete(w, h) = size {
                let r = rates(fd, cc, w, h);
                if !r.is_empty() {
                    s.push_str(&format!(" @ {} fps", r.join("/")));
                }
            }
        }
        s.push('\n');
    }
    s
}

/// `uavstream --list-devices`: every node, its role, and what it offers.
pub fn list_devices() -> String {
    let nodes = scan();
    if nodes.is_empty() {
        return "no V4L2 devices (/dev/video*)\n".into();
    }
    let mut s = String::new();
    for n in nodes {
        let role = if n.is_m2m() {
            "memory-to-memory codec"
        } else if n.is_capture() {
            "capture"
        } else {
            "other"
        };
        s.push_str(&format!("{}: {} ({}), {role}\n", n.path.display(), n.card, n.driver));
        let Ok(fd) = open_node(&n.path) else { continue };
        if n.is_m2m() {
            for (label, q) in
                [("input (OUTPUT queue)", n.output_queue()), ("output (CAPTURE queue)", n.capture_queue())]
            {
                let f: Vec<String> = formats(&fd, q).iter().map(|d| fourcc_str(fourcc_of(d.pixelformat))).collect();
                s.push_str(&format!("  {label}: {}\n", f.join(" ")));
            }
        } else if n.is_capture() {
            s.push_str(&describe_offer(&fd, n.capture_queue()));
        }
    }
    s
}

/// Bytes per pixel of the first plane (for the line stride) and whether the format is raw.
pub fn luma_bytes_per_pixel(fourcc: [u8; 4]) -> Option<u32> {
    match &fourcc {
        b"NV12" | b"YU12" => Some(1),
        b"YUYV" => Some(2),
        _ => None,
    }
}

/// Stride alignment that every encoder we know accepts: bcm2835-codec wants 32 bytes for NV12
/// and 64 for YU12/YUYV (its chroma planes are half the luma stride).
pub fn stride_alignment(fourcc: [u8; 4]) -> u32 {
    match &fourcc {
        b"NV12" => 32,
        _ => 64,
    }
}

pub fn align_up(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

/// Total bytes of a raw frame with `stride` (the luma stride; chroma follows the rules of the
/// format: NV12 has one interleaved plane of the same stride, YU12 two at half stride).
pub fn raw_frame_size(fourcc: [u8; 4], stride: u32, height: u32) -> usize {
    let (s, h) = (stride as usize, height as usize);
    match &fourcc {
        b"NV12" | b"YU12" => s * h + s * h / 2,
        _ => s * h,
    }
}

/// Sets the format of `queue` with an explicit plane layout (v4l2r keeps the old stride
/// otherwise) and returns what the driver chose.
pub fn set_format(fd: &mut File, queue: QueueType, fourcc: [u8; 4], w: u32, h: u32, stride: u32) -> io::Result<Format> {
    let sizeimage =
        if luma_bytes_per_pixel(fourcc).is_some() { raw_frame_size(fourcc, stride, h) as u32 } else { w * h * 2 };
    let fmt = Format {
        width: w,
        height: h,
        pixelformat: PixelFormat::from(&fourcc),
        plane_fmt: vec![PlaneLayout { bytesperline: stride, sizeimage }],
    };
    ioctl::s_fmt::<_, Format>(fd, (queue, &fmt)).map_err(|e| io::Error::other(format!("S_FMT: {e}")))
}

pub fn get_format(fd: &File, queue: QueueType) -> io::Result<Format> {
    ioctl::g_fmt::<Format>(fd, queue).map_err(|e| io::Error::other(format!("G_FMT: {e}")))
}

/// Sets the frame rate with S_PARM; returns the rate the driver kept (`None`: not supported).
pub fn set_fps(fd: &File, queue: QueueType, fps: u32) -> Option<f64> {
    let mut parm = bindings::v4l2_streamparm { type_: queue as u32, ..Default::default() };
    let tpf = bindings::v4l2_fract { numerator: 1, denominator: fps };
    if queue.direction() == v4l2r::QueueDirection::Output {
        parm.parm.output = bindings::v4l2_outputparm { timeperframe: tpf, ..Default::default() };
    } else {
        parm.parm.capture = bindings::v4l2_captureparm { timeperframe: tpf, ..Default::default() };
    }
    let got: bindings::v4l2_streamparm = ioctl::s_parm(fd, parm).ok()?;
    if !sys::supports_timeperframe(&got, queue) {
        return None;
    }
    let t = sys::timeperframe(&got, queue);
    (t.numerator != 0).then(|| f64::from(t.denominator) / f64::from(t.numerator))
}

/// A V4L2 timestamp (CLOCK_MONOTONIC, as V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC says) as an
/// `Instant`, by its distance from the monotonic clock now.
pub fn monotonic_to_instant(ts: Duration, mono_now: Duration, now: Instant) -> Instant {
    match mono_now.checked_sub(ts) {
        Some(age) if age < Duration::from_secs(10) => now.checked_sub(age).unwrap_or(now),
        // From the future or absurdly old (a driver without monotonic stamps): use now.
        _ => now,
    }
}

pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

pub fn timeval_duration(tv: bindings::timeval) -> Duration {
    Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.clamp(0, 999_999) as u32) * 1000)
}

/// A DMABUF plane given by a borrowed fd (the buffer's owner keeps it open while queued).
#[derive(Debug)]
pub struct DmabufPlane {
    pub fd: RawFd,
    pub len: u32,
}

impl PlaneHandle for DmabufPlane {
    type Memory = DmaBuf;

    fn fill_v4l2_plane(&self, plane: &mut bindings::v4l2_plane) {
        plane.m.fd = self.fd;
        plane.length = self.len;
    }
}

/// A dequeued buffer: index, payload of its (single) plane, flags, timestamp.
#[derive(Debug, Clone, Copy)]
pub struct Dequeued {
    pub index: usize,
    pub bytesused: usize,
    pub data_offset: usize,
    pub timestamp: Duration,
    pub sequence: u32,
    pub keyframe: bool,
    pub error: bool,
    /// V4L2_BUF_FLAG_LAST: the queue stops here (drain, or a decoder's source change).
    pub last: bool,
}

/// One V4L2 queue with its buffer set: MMAP (mapped, optionally exported as DMABUF) or
/// DMABUF-imported (no memory of its own).
pub struct BufferQueue {
    pub queue: QueueType,
    pub memory: MemoryType,
    pub maps: Vec<ioctl::PlaneMapping>,
    pub exported: Vec<File>,
    pub lengths: Vec<u32>,
    pub queued: Vec<bool>,
    pub streaming: bool,
}

impl std::fmt::Debug for BufferQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferQueue")
            .field("queue", &self.queue)
            .field("memory", &self.memory)
            .field("buffers", &self.queued.len())
            .field("exported", &self.exported.len())
            .field("streaming", &self.streaming)
            .finish()
    }
}

impl BufferQueue {
    /// Allocates `count` buffers. MMAP buffers are mapped; `export` also exports each as a
    /// DMABUF fd (VIDIOC_EXPBUF). Fails with the driver's errno when `memory` is refused.
    pub fn allocate(fd: &File, queue: QueueType, memory: MemoryType, count: u32, export: bool) -> io::Result<Self> {
        let got: usize = ioctl::reqbufs(fd, queue, memory, count).map_err(|e| match e {
            ioctl::ReqbufsError::InvalidBufferType(..) => io::Error::from_raw_os_error(libc::EINVAL),
            ioctl::ReqbufsError::IoctlError(e) => errno_io(e),
        })?;
        if got == 0 {
            return Err(io::Error::other("REQBUFS gave no buffers"));
        }
        let mut q = BufferQueue {
            queue,
            memory,
            maps: Vec::new(),
            exported: Vec::new(),
            lengths: Vec::new(),
            queued: vec![false; got],
            streaming: false,
        };
        for i in 0..got {
            let qb: QueryBuffer =
                ioctl::querybuf(fd, queue, i).map_err(|e| io::Error::other(format!("QUERYBUF {i}: {e}")))?;
            let plane = qb.planes.first().ok_or_else(|| io::Error::other("buffer without planes"))?;
            if qb.planes.len() > 1 {
                return Err(io::Error::other("multi-plane formats (NV12M, YU12M) are not supported; use NV12/YU12"));
            }
            q.lengths.push(plane.length);
            if memory == MemoryType::Mmap {
                let map = ioctl::mmap(fd, plane.mem_offset, plane.length)
                    .map_err(|e| io::Error::other(format!("mmap buffer {i}: {e}")))?;
                q.maps.push(map);
                if export {
                    let f: File = ioctl::expbuf(fd, queue, i, 0, ExpbufFlags::CLOEXEC | ExpbufFlags::RDWR)
                        .map_err(|e| io::Error::other(format!("EXPBUF {i}: {e}")))?;
                    q.exported.push(f);
                }
            }
        }
        Ok(q)
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn free_index(&self) -> Option<usize> {
        self.queued.iter().position(|q| !q)
    }

    pub fn queued_count(&self) -> usize {
        self.queued.iter().filter(|q| **q).count()
    }

    /// Queues MMAP buffer `i` with `bytesused` payload (0 for capture).
    pub fn queue_mmap(&mut self, fd: &File, i: usize, bytesused: usize, ts: Duration) -> io::Result<()> {
        let mut b = QBuffer::<MmapHandle>::new(self.queue, i as u32);
        b.planes.push(QBufPlane::new(bytesused));
        b.planes[0].0.length = self.lengths[i];
        b = b.set_timestamp(ts.as_secs() as libc::time_t, ts.subsec_micros() as libc::suseconds_t);
        ioctl::qbuf::<_, ()>(fd, b).map_err(|e| io::Error::from_raw_os_error(ioctl::IntoErrno::into_errno(e)))?;
        self.queued[i] = true;
        Ok(())
    }

    /// Queues slot `i` importing `plane` by DMABUF.
    pub fn queue_dmabuf(
        &mut self,
        fd: &File,
        i: usize,
        plane: &DmabufPlane,
        bytesused: usize,
        ts: Duration,
    ) -> io::Result<()> {
        let mut b = QBuffer::<DmabufPlane>::new(self.queue, i as u32);
        b.planes.push(QBufPlane::new_from_handle(plane, bytesused));
        b = b.set_timestamp(ts.as_secs() as libc::time_t, ts.subsec_micros() as libc::suseconds_t);
        ioctl::qbuf::<_, ()>(fd, b).map_err(|e| io::Error::from_raw_os_error(ioctl::IntoErrno::into_errno(e)))?;
        self.queued[i] = true;
        Ok(())
    }

    /// Dequeues one buffer; `None` when none is ready.
    pub fn dequeue(&mut self, fd: &File) -> io::Result<Option<Dequeued>> {
        match ioctl::dqbuf::<V4l2Buffer>(fd, self.queue) {
            Ok(b) => {
                let i = b.index() as usize;
                if let Some(q) = self.queued.get_mut(i) {
                    *q = false;
                }
                let p = b.get_first_plane();
                let flags = b.flags();
                Ok(Some(Dequeued {
                    index: i,
                    bytesused: *p.bytesused as usize,
                    data_offset: p.data_offset.map_or(0, |o| *o as usize),
                    timestamp: timeval_duration(b.timestamp()),
                    sequence: b.sequence(),
                    keyframe: flags.contains(ioctl::BufferFlags::KEYFRAME),
                    error: flags.contains(ioctl::BufferFlags::ERROR),
                    last: flags.contains(ioctl::BufferFlags::LAST),
                }))
            }
            Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => Ok(None),
            Err(ioctl::DqBufError::IoctlError(ioctl::DqBufIoctlError::Eos)) => Ok(None),
            Err(e) => Err(io::Error::from_raw_os_error(ioctl::IntoErrno::into_errno(e))),
        }
    }

    pub fn stream_on(&mut self, fd: &File) -> io::Result<()> {
        ioctl::streamon(fd, self.queue).map_err(|e| io::Error::other(format!("STREAMON: {e}")))?;
        self.streaming = true;
        Ok(())
    }

    /// Stops streaming and frees the buffers (maps and exported fds first).
    pub fn release(&mut self, fd: &File) {
        if self.streaming {
            let _ = ioctl::streamoff(fd, self.queue);
            self.streaming = false;
        }
        self.maps.clear();
        self.exported.clear();
        self.queued.iter_mut().for_each(|q| *q = false);
        let _ = ioctl::reqbufs::<()>(fd, self.queue, self.memory, 0);
    }
}

/// Whether a poll result on a V4L2 fd means the device is gone or broken.
pub fn poll_error(revents: i16) -> bool {
    revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0
}

pub fn raw(fd: &File) -> RawFd {
    fd.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_follow_the_encoder_alignment() {
        assert_eq!(align_up(640, stride_alignment(*b"NV12")), 640);
        assert_eq!(align_up(648, stride_alignment(*b"NV12")), 672);
        assert_eq!(align_up(2 * 648, stride_alignment(*b"YUYV")), 1344);
        assert_eq!(raw_frame_size(*b"NV12", 640, 480), 640 * 480 * 3 / 2);
        assert_eq!(raw_frame_size(*b"YUYV", 1280, 480), 1280 * 480);
    }

    #[test]
    fn capture_timestamps_map_onto_instants() {
        let now = Instant::now();
        let mono = Duration::from_secs(1000);
        let t = monotonic_to_instant(Duration::from_millis(999_950), mono, now);
        assert_eq!(now.duration_since(t), Duration::from_millis(50));
        assert_eq!(monotonic_to_instant(Duration::from_secs(1001), mono, now), now, "future stamps are now");
        assert_eq!(monotonic_to_instant(Duration::ZERO, mono, now), now, "non-monotonic stamps are now");
    }
}
