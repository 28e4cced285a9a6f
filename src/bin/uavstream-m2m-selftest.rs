//! Proves the camera → M2M encoder path on real drivers: vivid frames go into vicodec's stateful
//! FWHT encoder by DMABUF import (the same `M2mEncoder` and `open_m2m` the daemon uses for
//! H.264), the coded frames come back through vicodec's stateful decoder, and each decoded
//! picture is compared with the camera frame it came from. Then the same run on the copy path.
//!
//! Prints `m2m-selftest: PASS` when the DMABUF path was used (not the copy fallback), enough
//! frames round-tripped, and every compared frame is within tolerance. Exit status 1 otherwise.
//! Blocks in poll(2) with timeouts: this is a test program, not the daemon.
//!
//! `--set-ctrl NAME=VALUE` (or `--set-ctrl NAME` for a button) does nothing of the above: it sets
//! one control of `--device`, found by its name, and keeps the device open `--hold` seconds. The
//! rig uses it on vivid's error-injection controls, which busybox has no tool for: "Percentage of
//! Dropped Buffers" (a camera that stalls but stays there) and "Disconnect" (the instance's nodes
//! are unregistered, as if it were unplugged; vivid registers them again when the last open file
//! is closed, so `--hold` is how long the camera stays away after the daemon let go of it).
//! `--get-ctrl NAME` prints one control's value (the vimc rig reads back what libcamera set on
//! the vimc sensor's subdevice).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use uavstream::encode::v4l2_m2m::{copy_frame, find_encoder, InputPath, M2mSettings};
use uavstream::source::v4l2::device::{self, formats, fourcc_of, open_node, BufferQueue, NodeInfo};
use uavstream::source::v4l2::{open_m2m, resolve_device, Capture, CaptureRequest};
use uavstream::sys;
use v4l2r::memory::MemoryType;

/// vivid → vicodec FWHT encoder (DMABUF) → vicodec decoder round trip.
#[derive(FromArgs, Debug)]
struct Args {
    /// camera: a /dev/video* path or auto (the first capture device) [auto]
    #[argh(option, default = "String::from(\"auto\")")]
    device: String,
    /// coded frames per run [60]
    #[argh(option, default = "60")]
    frames: u64,
    /// width [640]
    #[argh(option, default = "640")]
    width: u32,
    /// height [480] (vicodec wants multiples of 16)
    #[argh(option, default = "480")]
    height: u32,
    /// camera frame rate [30]
    #[argh(option, default = "30")]
    fps: u32,
    /// lowest acceptable luma PSNR in dB [30]
    #[argh(option, default = "30.0")]
    min_psnr: f64,
    /// instead of the self-test: set the control NAME (as the driver names it) of --device to
    /// VALUE (0 for a button), e.g. "Percentage of Dropped Buffers=100" or "Disconnect"
    #[argh(option)]
    set_ctrl: Option<String>,
    /// instead of the self-test: print the value of the control NAME of --device (a video node
    /// or a subdevice), e.g. "Brightness"
    #[argh(option)]
    get_ctrl: Option<String>,
    /// with --set-ctrl: seconds to keep the device open afterwards [0]
    #[argh(option, default = "0.0")]
    hold: f64,
}

/// The id of the control `name` of `device` (VIDIOC_QUERYCTRL with NEXT_CTRL), and the open file.
fn find_ctrl(device: &str, name: &str) -> Result<(File, u32), String> {
    use v4l2r::bindings::{v4l2_queryctrl, V4L2_CTRL_FLAG_DISABLED};
    use v4l2r::ioctl::{queryctrl, CtrlId, QueryCtrlFlags};
    let fd = open_node(std::path::Path::new(device)).map_err(|e| format!("{device}: {e}"))?;
    let mut next = 0u32;
    let mut names = Vec::new();
    let id = loop {
        let id = CtrlId::new(next).map_err(|e| e.to_string())?;
        let q: v4l2_queryctrl = match queryctrl(&fd, id, QueryCtrlFlags::NEXT) {
            Ok(q) => q,
            Err(_) => return Err(format!("{device} has no control {name:?}; it has {names:?}")),
        };
        next = q.id;
        let len = q.name.iter().position(|&b| b == 0).unwrap_or(q.name.len());
        let found = String::from_utf8_lossy(&q.name[..len]).into_owned();
        if found == name && q.flags & V4L2_CTRL_FLAG_DISABLED == 0 {
            break q.id;
        }
        names.push(found);
    };
    Ok((fd, id))
}

/// `--get-ctrl`: the control's current value (VIDIOC_G_CTRL).
fn get_ctrl(device: &str, name: &str) -> Result<String, String> {
    let (fd, id) = find_ctrl(device, name)?;
    let value = v4l2r::ioctl::g_ctrl(&fd, id).map_err(|e| format!("{device}: reading {name:?}: {e}"))?;
    Ok(format!("{device}: {name:?} (0x{id:08x}) = {value}"))
}

/// `--set-ctrl`: finds the control by name, sets it (VIDIOC_S_CTRL), keeps the file open for
/// `hold`.
fn set_ctrl(device: &str, spec: &str, hold: Duration) -> Result<String, String> {
    use v4l2r::ioctl::s_ctrl;
    let (name, value) = match spec.rsplit_once('=') {
        Some((n, v)) => (n, v.trim().parse::<i32>().map_err(|_| format!("{spec:?}: the value is not an integer"))?),
        None => (spec, 0),
    };
    let (fd, id) = find_ctrl(device, name)?;
    s_ctrl(&fd, id, value).map_err(|e| format!("{device}: setting {name:?} (0x{id:08x}) to {value}: {e}"))?;
    std::thread::sleep(hold);
    Ok(format!("{device}: {name:?} (0x{id:08x}) set to {value}, device held open {:.1} s", hold.as_secs_f64()))
}

const FWHT: [u8; 4] = *b"FWHT";
const NV12: [u8; 4] = *b"NV12";

#[derive(Debug, Default)]
struct RunStats {
    path: Option<InputPath>,
    coded: u64,
    compared: u64,
    min_psnr: f64,
    sum_psnr: f64,
    elapsed: Duration,
    cpu: Duration,
    dropped: u64,
    /// What the copy path's one copy of a frame costs (measured on a captured frame).
    copy_cost: Option<Duration>,
}

/// The stateful decoder: a node whose OUTPUT takes FWHT and whose CAPTURE gives NV12.
fn find_decoder() -> Option<NodeInfo> {
    device::scan().into_iter().filter(NodeInfo::is_m2m).find(|n| {
        let Ok(fd) = open_node(&n.path) else { return false };
        let outs: Vec<[u8; 4]> = formats(&fd, n.output_queue()).iter().map(|d| fourcc_of(d.pixelformat)).collect();
        let caps: Vec<[u8; 4]> = formats(&fd, n.capture_queue()).iter().map(|d| fourcc_of(d.pixelformat)).collect();
        outs.contains(&FWHT) && caps.contains(&NV12)
    })
}

struct Decoder {
    node: NodeInfo,
    fd: File,
    input: BufferQueue,
    output: BufferQueue,
    stride: u32,
}

impl Decoder {
    fn open(node: &NodeInfo, w: u32, h: u32) -> io::Result<Decoder> {
        let mut fd = open_node(&node.path)?;
        device::set_format(&mut fd, node.output_queue(), FWHT, w, h, 0)?;
        // Both queues set up and streaming before the first coded frame: vicodec then checks the
        // header against this CAPTURE format and decodes without a source-change round trip.
        let f = device::set_format(&mut fd, node.capture_queue(), NV12, w, h, w)?;
        let stride = f.plane_fmt.first().map_or(w, |p| p.bytesperline);
        let mut output = BufferQueue::allocate(&fd, node.capture_queue(), MemoryType::Mmap, 4, false)?;
        for i in 0..output.len() {
            output.queue_mmap(&fd, i, 0, Duration::ZERO)?;
        }
        let mut input = BufferQueue::allocate(&fd, node.output_queue(), MemoryType::Mmap, 4, false)?;
        output.stream_on(&fd)?;
        input.stream_on(&fd)?;
        Ok(Decoder { node: node.clone(), fd, input, output, stride })
    }

    /// vicodec's decoder learns the picture size from the first header and signals a source
    /// change (a LAST buffer): restart the CAPTURE queue in NV12 at the size it found.
    fn restart_capture(&mut self) -> io::Result<()> {
        let q = self.node.capture_queue();
        self.output.release(&self.fd);
        let f = device::get_format(&self.fd, q)?;
        let f = device::set_format(&mut self.fd, q, NV12, f.width, f.height, f.width)?;
        self.stride = f.plane_fmt.first().map_or(f.width, |p| p.bytesperline);
        self.output = BufferQueue::allocate(&self.fd, q, MemoryType::Mmap, 4, false)?;
        for i in 0..self.output.len() {
            self.output.queue_mmap(&self.fd, i, 0, Duration::ZERO)?;
        }
        self.output.stream_on(&self.fd)
    }

    fn push(&mut self, coded: &[u8], ts: Duration) -> io::Result<bool> {
        while self.input.dequeue(&self.fd)?.is_some() {}
        let Some(i) = self.input.free_index() else { return Ok(false) };
        let map = &mut self.input.maps[i];
        if coded.len() > map.len() {
            return Err(io::Error::other("coded frame larger than the decoder's buffer"));
        }
        map[..coded.len()].copy_from_slice(coded);
        self.input.queue_mmap(&self.fd, i, coded.len(), ts)?;
        Ok(true)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.input.release(&self.fd);
        self.output.release(&self.fd);
    }
}

/// Luma PSNR of `b` against `a` (both NV12 with their strides).
fn psnr(a: &[u8], sa: u32, b: &[u8], sb: u32, w: u32, h: u32) -> f64 {
    let mut se = 0u64;
    for y in 0..h as usize {
        let ra = &a[y * sa as usize..y * sa as usize + w as usize];
        let rb = &b[y * sb as usize..y * sb as usize + w as usize];
        se += ra.iter().zip(rb).map(|(x, y)| (i64::from(*x) - i64::from(*y)).pow(2) as u64).sum::<u64>();
    }
    let mse = se as f64 / f64::from(w * h);
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

fn cpu_time() -> Duration {
    // utime + stime (fields 14 and 15 of /proc/self/stat) in clock ticks of 1/100 s.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // After the comm field: state is not numeric, so utime/stime are at 10 and 11 here.
    Duration::from_millis((f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) * 10)
}

/// One run of `frames` coded frames; with `dec`, every coded frame is also decoded and the
/// pictures we kept a copy of are compared.
fn run(
    args: &Args,
    cam: &NodeInfo,
    enc: &NodeInfo,
    dec: Option<&NodeInfo>,
    dmabuf: bool,
    frames: u64,
) -> Result<RunStats, String> {
    let req = CaptureRequest { width: args.width, height: args.height, fps: args.fps, formats: vec![NV12] };
    let mut cap = Capture::open(cam, &req)?;
    let settings = M2mSettings {
        codec: FWHT,
        input: NV12,
        width: args.width,
        height: args.height,
        stride: cap.stride,
        fps: args.fps,
        bitrate: 2_000_000,
        idr_period: 30,
        jpeg_quality: 80,
        dmabuf,
    };
    let mut encoder = open_m2m(&mut cap, enc, settings)?;
    println!("m2m-selftest: camera {} -> encoder {}", cap.describe(), encoder.describe());
    let mut decoder = match dec {
        Some(n) => Some(Decoder::open(n, args.width, args.height).map_err(|e| format!("decoder: {e}"))?),
        None => None,
    };
    let mut refs: HashMap<Duration, Vec<u8>> = HashMap::new();
    let mut st = RunStats { min_psnr: f64::INFINITY, ..Default::default() };
    let (cap_stride, w, h) = (cap.stride, args.width, args.height);
    let mut start: Option<(Instant, Duration)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending_decode: Vec<(Vec<u8>, Duration)> = Vec::new();
    let mut done_at: Option<Instant> = None;
    loop {
        if Instant::now() > deadline {
            return Err(format!("timed out after {} coded frames", st.coded));
        }
        if st.coded >= frames {
            // Let the decoder finish what is in flight, then stop.
            let t = *done_at.get_or_insert_with(Instant::now);
            let idle = decoder.as_ref().is_none_or(|d| d.input.queued_count() == 0);
            if (pending_decode.is_empty() && idle) || t.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let mut fds = [
            sys::poll_entry(cap.raw_fd(), libc::POLLIN),
            sys::poll_entry(encoder.raw_fd(), encoder.poll_events()),
            sys::poll_entry(decoder.as_ref().map_or(-1, |d| d.fd.as_raw_fd()), libc::POLLIN),
        ];
        if sys::poll(&mut fds, 5000).map_err(|e| e.to_string())? == 0 {
            return Err("no progress for 5 s".into());
        }
        if fds[0].revents != 0 {
            if let Some(d) = cap.dequeue_newest().map_err(|e| format!("capture: {e}"))? {
                start.get_or_insert_with(|| (Instant::now(), cpu_time()));
                if st.coded >= frames {
                    // Enough frames: only the decoder still works.
                    cap.requeue(d.index).map_err(|e| e.to_string())?;
                    continue;
                }
                if !dmabuf && st.copy_cost.is_none() {
                    let src = cap.data(&d);
                    let mut dst = vec![0u8; src.len()];
                    let t = Instant::now();
                    for _ in 0..10 {
                        copy_frame(NV12, w, h, src, cap_stride, &mut dst, encoder.stride).map_err(|e| e.to_string())?;
                    }
                    st.copy_cost = Some(t.elapsed() / 10);
                }
                if decoder.is_some() && d.sequence % 4 == 0 && refs.len() < 64 {
                    refs.insert(d.timestamp, cap.data(&d).to_vec());
                }
                let mut back = Vec::new();
                encoder.reclaim(|i| back.push(i)).map_err(|e| e.to_string())?;
                for i in back {
                    cap.requeue(i).map_err(|e| e.to_string())?;
                }
                let mut queued = false;
                if encoder.path == InputPath::Dmabuf {
                    let plane = cap.dmabuf(d.index).ok_or("capture buffer not exported")?;
                    match encoder.push_dmabuf(d.index, &plane, d.bytesused, d.timestamp) {
                        Ok(true) => queued = true,
                        Ok(false) => st.dropped += 1,
                        Err(e) => return Err(format!("DMABUF QBUF refused: {e}")),
                    }
                } else if !encoder.push_copy(cap.data(&d), cap_stride, d.timestamp).map_err(|e| e.to_string())? {
                    st.dropped += 1;
                }
                if !queued {
                    cap.requeue(d.index).map_err(|e| e.to_string())?;
                }
            }
        }
        if fds[1].revents != 0 {
            let mut back = Vec::new();
            encoder.reclaim(|i| back.push(i)).map_err(|e| e.to_string())?;
            for i in back {
                cap.requeue(i).map_err(|e| e.to_string())?;
            }
            encoder
                .drain(|unit, ts, _| {
                    st.coded += 1;
                    if st.coded == frames {
                        if let Some((t, c)) = start {
                            st.elapsed = t.elapsed();
                            st.cpu = cpu_time().saturating_sub(c);
                        }
                    }
                    // Every unit, in order: FWHT P-frames refer to the previous picture.
                    if dec.is_some() {
                        pending_decode.push((unit.to_vec(), ts));
                    }
                })
                .map_err(|e| format!("encoder: {e}"))?;
        }
        let Some(decoder) = decoder.as_mut() else { continue };
        while let Some((unit, ts)) = pending_decode.first().cloned() {
            if !decoder.push(&unit, ts).map_err(|e| format!("decoder input: {e}"))? {
                break;
            }
            pending_decode.remove(0);
        }
        if fds[2].revents != 0 || decoder.output.queued_count() < decoder.output.len() {
            while let Some(d) = decoder.output.dequeue(&decoder.fd).map_err(|e| format!("decoder: {e}"))? {
                if d.last {
                    decoder.restart_capture().map_err(|e| format!("decoder source change: {e}"))?;
                    break;
                }
                if d.bytesused > 0 && !d.error {
                    if let Some(src) = refs.remove(&d.timestamp) {
                        let p = psnr(&src, cap_stride, &decoder.output.maps[d.index], decoder.stride, w, h);
                        st.compared += 1;
                        st.sum_psnr += p;
                        st.min_psnr = st.min_psnr.min(p);
                    }
                }
                decoder.output.queue_mmap(&decoder.fd, d.index, 0, Duration::ZERO).map_err(|e| e.to_string())?;
            }
        }
    }
    st.path = Some(encoder.path);
    st.dropped += cap.dropped;
    Ok(st)
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let _ = env_logger::Builder::new().parse_filters("info").try_init();
    if let Some(name) = &args.get_ctrl {
        return match get_ctrl(&args.device, name) {
            Ok(v) => {
                println!("m2m-selftest: get-ctrl: {v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("m2m-selftest: get-ctrl: FAIL: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(spec) = &args.set_ctrl {
        return match set_ctrl(&args.device, spec, Duration::from_secs_f64(args.hold.max(0.0))) {
            Ok(done) => {
                println!("m2m-selftest: set-ctrl: {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("m2m-selftest: set-ctrl: FAIL: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let found = (|| -> Result<_, String> {
        let cam = resolve_device(&args.device)?;
        let enc = find_encoder(FWHT, Some(NV12)).ok_or("no M2M encoder NV12 -> FWHT (is vicodec loaded?)")?;
        let dec = find_decoder().ok_or("no M2M decoder FWHT -> NV12 (is vicodec loaded?)")?;
        Ok((cam, enc, dec))
    })();
    let (cam, enc, dec) = match found {
        Ok(x) => x,
        Err(e) => {
            println!("m2m-selftest: FAIL: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "m2m-selftest: camera {} ({}), encoder {} ({}), decoder {} ({})",
        cam.path.display(),
        cam.card,
        enc.path.display(),
        enc.card,
        dec.path.display(),
        dec.card
    );
    let mut ok = true;
    // Throughput first (encoder only), then the round trip through the decoder.
    let runs = [
        ("dmabuf", true, false, args.frames),
        ("copy", false, false, args.frames),
        ("dmabuf+decode", true, true, 40),
        ("copy+decode", false, true, 40),
    ];
    for (label, dmabuf, decode, frames) in runs {
        match run(&args, &cam, &enc, decode.then_some(&dec), dmabuf, frames) {
            Ok(st) => {
                let fps = st.coded.min(frames) as f64 / st.elapsed.as_secs_f64().max(1e-6);
                let avg = if st.compared > 0 { st.sum_psnr / st.compared as f64 } else { 0.0 };
                println!(
                    "m2m-selftest: run={label} path={} frames={} fps={fps:.1} cpu={:.1} ms/frame compared={} psnr_min={:.1} dB psnr_avg={avg:.1} dB dropped={}{}",
                    st.path.map_or("?".into(), |p| p.to_string()),
                    st.coded,
                    st.cpu.as_secs_f64() * 1e3 / st.coded.clamp(1, frames) as f64,
                    st.compared,
                    st.min_psnr,
                    st.dropped,
                    st.copy_cost.map(|c| format!(" copy={:.2} ms/frame", c.as_secs_f64() * 1e3)).unwrap_or_default()
                );
                if dmabuf && st.path != Some(InputPath::Dmabuf) {
                    println!("m2m-selftest: FAIL: {label}: the DMABUF run fell back to the copy path");
                    ok = false;
                }
                if decode && (st.compared < 4 || st.min_psnr < args.min_psnr) {
                    println!("m2m-selftest: FAIL: {label}: decoded frames missing or outside tolerance");
                    ok = false;
                }
            }
            Err(e) => {
                println!("m2m-selftest: FAIL: {label}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        println!("m2m-selftest: PASS");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
