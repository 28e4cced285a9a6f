//! A V4L2 memory-to-memory stateful encoder (bcm2835-codec `/dev/video11` on CM4/Pi 4; vicodec
//! in tests), driven from the poll loop through v4l2r's `ioctl` layer.
//!
//! ```text
//!  capture buffer (MMAP, exported) ──DMABUF fd──▶ OUTPUT queue ──encoder──▶ CAPTURE queue (MMAP)
//!        ▲                                            │ dequeued (POLLOUT)          │ POLLIN
//!        └──────────── requeued to the camera ◀───────┘                             ▼ access unit
//! ```
//!
//! Zero copy: each OUTPUT slot imports a camera buffer by DMABUF and holds it until the encoder
//! returns the slot; only then does the camera get the buffer back. Both sides use the same
//! stride, set explicitly (bcm2835-codec: 32-byte aligned for NV12, 64 for YU12/YUYV). When
//! the encoder refuses the import (REQBUFS or the first QBUF fails: USB camera buffers are not
//! physically contiguous, strides cannot agree), it falls back to its own MMAP buffers and one
//! copy per frame, and says so in the log. Newest frame wins: when every OUTPUT slot is busy the
//! frame is dropped and the camera buffer goes straight back.
//!
//! Capture timestamps ride through the encoder (V4L2 copies OUTPUT timestamps to CAPTURE).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use v4l2r::bindings;
use v4l2r::ioctl;
use v4l2r::memory::MemoryType;

use crate::v4l2::device::{
    self, formats, fourcc_of, fourcc_str, luma_bytes_per_pixel, open_node, raw_frame_size, BufferQueue, DmabufPlane,
    NodeInfo,
};

/// How frames reach the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPath {
    /// Camera buffers imported by DMABUF (zero copy).
    Dmabuf,
    /// The encoder's own MMAP buffers, one copy per frame.
    Copy,
}

impl std::fmt::Display for InputPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputPath::Dmabuf => "DMABUF import (zero copy)",
            InputPath::Copy => "MMAP + one copy per frame",
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct M2mSettings {
    /// Coded format on the CAPTURE queue: H264, MJPG or JPEG (FWHT for vicodec in tests).
    pub codec: [u8; 4],
    /// Raw format on the OUTPUT queue.
    pub input: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Wanted OUTPUT line stride in bytes (the camera's).
    pub stride: u32,
    pub fps: u32,
    pub bitrate: u32,
    pub idr_period: u32,
    /// JPEG quality (1–100) for `MJPG`/`JPEG` encoders with a quality control.
    pub jpeg_quality: u8,
    /// Try DMABUF import first (false: go straight to the copy path, for comparisons).
    pub dmabuf: bool,
}

/// OUTPUT slots and CAPTURE buffers: few, latency first.
const INPUT_SLOTS: u32 = 2;
const OUTPUT_BUFFERS: u32 = 4;

/// The first M2M node whose CAPTURE queue offers `codec` and whose OUTPUT queue takes `input`
/// (any raw format when `None`).
pub fn find_encoder(codec: [u8; 4], input: Option<[u8; 4]>) -> Option<NodeInfo> {
    device::scan().into_iter().filter(NodeInfo::is_m2m).find(|n| {
        let Ok(fd) = open_node(&n.path) else { return false };
        let caps: Vec<[u8; 4]> = formats(&fd, n.capture_queue()).iter().map(|d| fourcc_of(d.pixelformat)).collect();
        let outs: Vec<[u8; 4]> = formats(&fd, n.output_queue()).iter().map(|d| fourcc_of(d.pixelformat)).collect();
        caps.contains(&codec)
            && match input {
                Some(i) => outs.contains(&i),
                None => outs.iter().any(|f| luma_bytes_per_pixel(*f).is_some()),
            }
    })
}

#[derive(Debug)]
pub struct M2mEncoder {
    pub node: NodeInfo,
    fd: File,
    input: BufferQueue,
    output: BufferQueue,
    pub path: InputPath,
    /// The OUTPUT queue's line stride, as the driver set it.
    pub stride: u32,
    /// Camera buffer each OUTPUT slot holds (DMABUF path).
    held: Vec<Option<usize>>,
    has_force_key: bool,
    s: M2mSettings,
    /// Why the copy path is in use, when it is.
    pub copy_reason: Option<String>,
    pub frames_in: u64,
    pub units_out: u64,
}

fn ctrl(fd: &File, id: u32, value: i32, name: &str) -> bool {
    match ioctl::s_ctrl(fd, id, value) {
        Ok(_) => true,
        Err(e) => {
            log::debug!("encoder control {name}={value} not applied: {e}");
            false
        }
    }
}

fn h264_level(w: u32, h: u32, fps: u32) -> u32 {
    // Macroblocks per second against the H.264 level limits (Table A-1).
    let mbs = u64::from(w.div_ceil(16)) * u64::from(h.div_ceil(16)) * u64::from(fps);
    if mbs <= 108_000 {
        bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_1
    } else if mbs <= 245_760 {
        bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0
    } else {
        bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_2
    }
}

impl M2mEncoder {
    pub fn open(node: &NodeInfo, s: &M2mSettings) -> Result<M2mEncoder, String> {
        let name = format!("{} ({})", node.path.display(), node.card);
        let mut fd = open_node(&node.path).map_err(|e| format!("{name}: {e}"))?;
        let (oq, cq) = (node.output_queue(), node.capture_queue());
        let out_fmt = device::set_format(&mut fd, oq, s.input, s.width, s.height, s.stride)
            .map_err(|e| format!("{name}: input format {}: {e}", fourcc_str(s.input)))?;
        if (out_fmt.width, out_fmt.height, fourcc_of(out_fmt.pixelformat)) != (s.width, s.height, s.input) {
            return Err(format!(
                "{name}: cannot take {} {}x{} (it offers {} {}x{})",
                fourcc_str(s.input),
                s.width,
                s.height,
                fourcc_str(fourcc_of(out_fmt.pixelformat)),
                out_fmt.width,
                out_fmt.height
            ));
        }
        let stride = out_fmt.plane_fmt.first().map_or(s.stride, |p| p.bytesperline);
        device::set_format(&mut fd, cq, s.codec, s.width, s.height, 0)
            .and_then(|_| device::get_format(&fd, cq))
            .map_err(|e| format!("{name}: coded format {}: {e}", fourcc_str(s.codec)))
            .and_then(|f| {
                if fourcc_of(f.pixelformat) == s.codec {
                    Ok(())
                } else {
                    Err(format!("{name}: does not produce {}", fourcc_str(s.codec)))
                }
            })?;
        match device::set_fps(&fd, oq, s.fps) {
            Some(r) => log::debug!("{name}: frame rate {r:.2} fps (S_PARM)"),
            None => log::debug!("{name}: no frame-rate control (S_PARM)"),
        }
        use bindings as b;
        let jpeg = matches!(&s.codec, b"MJPG" | b"JPEG");
        if jpeg {
            // bcm2835-codec's image encoder takes a quality; its video encoder's MJPG is
            // rate-controlled (the bitrate then comes from the quality, see the caller).
            ctrl(&fd, b::V4L2_CID_JPEG_COMPRESSION_QUALITY, i32::from(s.jpeg_quality), "JPEG_COMPRESSION_QUALITY");
        }
        if s.codec != *b"JPEG" {
            ctrl(&fd, b::V4L2_CID_MPEG_VIDEO_BITRATE, s.bitrate as i32, "BITRATE");
        }
        if s.codec == *b"H264" {
            ctrl(
                &fd,
                b::V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
                b::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR as i32,
                "BITRATE_MODE=CBR",
            );
            ctrl(&fd, b::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, s.idr_period as i32, "H264_I_PERIOD");
            ctrl(
                &fd,
                b::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
                b::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE as i32,
                "H264_PROFILE=constrained baseline",
            );
            ctrl(&fd, b::V4L2_CID_MPEG_VIDEO_H264_LEVEL, h264_level(s.width, s.height, s.fps) as i32, "H264_LEVEL");
            // SPS/PPS before every IDR: a joining RTSP client needs them in-band.
            ctrl(&fd, b::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1, "REPEAT_SEQ_HEADER");
        }
        if !jpeg {
            ctrl(&fd, b::V4L2_CID_MPEG_VIDEO_GOP_SIZE, s.idr_period as i32, "GOP_SIZE");
        }
        let has_force_key = ioctl::queryctrl::<bindings::v4l2_queryctrl>(
            &fd,
            ioctl::CtrlId::new(b::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME).map_err(|e| e.to_string())?,
            ioctl::QueryCtrlFlags::empty(),
        )
        .is_ok();

        let mut output = BufferQueue::allocate(&fd, cq, MemoryType::Mmap, OUTPUT_BUFFERS, false)
            .map_err(|e| format!("{name}: coded buffers: {e}"))?;
        for i in 0..output.len() {
            output.queue_mmap(&fd, i, 0, Duration::ZERO).map_err(|e| format!("{name}: QBUF coded {i}: {e}"))?;
        }
        output.stream_on(&fd).map_err(|e| format!("{name}: {e}"))?;

        let mut copy_reason = None;
        let input = if !s.dmabuf {
            copy_reason = Some("DMABUF import disabled".to_owned());
            None
        } else if stride != s.stride {
            copy_reason = Some(format!("strides differ: camera {} bytes, encoder {stride}", s.stride));
            None
        } else {
            match BufferQueue::allocate(&fd, oq, MemoryType::DmaBuf, INPUT_SLOTS, false) {
                Ok(q) => Some(q),
                Err(e) => {
                    copy_reason = Some(format!("REQBUFS(DMABUF) refused: {e}"));
                    None
                }
            }
        };
        let (input, path) = match input {
            Some(q) => (q, InputPath::Dmabuf),
            None => (
                BufferQueue::allocate(&fd, oq, MemoryType::Mmap, INPUT_SLOTS, false)
                    .map_err(|e| format!("{name}: input buffers: {e}"))?,
                InputPath::Copy,
            ),
        };
        let mut enc = M2mEncoder {
            node: node.clone(),
            held: vec![None; input.len()],
            fd,
            input,
            output,
            path,
            stride,
            has_force_key,
            s: *s,
            copy_reason,
            frames_in: 0,
            units_out: 0,
        };
        enc.input.stream_on(&enc.fd).map_err(|e| format!("{name}: {e}"))?;
        Ok(enc)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({}) {} {}x{} -> {}, input by {}{}",
            self.node.path.display(),
            self.node.card,
            fourcc_str(self.s.input),
            self.s.width,
            self.s.height,
            fourcc_str(self.s.codec),
            self.path,
            self.copy_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        )
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Poll events to wait for: coded units (IN) and, while frames are in flight, slots (OUT).
    pub fn poll_events(&self) -> i16 {
        let mut ev = libc::POLLIN;
        if self.input.queued_count() > 0 {
            ev |= libc::POLLOUT;
        }
        ev
    }

    pub fn has_free_slot(&self) -> bool {
        self.input.free_index().is_some()
    }

    /// Queues camera buffer `cap_index` by its DMABUF fd. `Ok(false)`: every slot is busy (the
    /// caller drops the frame). An error from QBUF means the import was refused: call
    /// [`M2mEncoder::fall_back_to_copy`].
    pub fn push_dmabuf(
        &mut self,
        cap_index: usize,
        plane: &DmabufPlane,
        bytesused: usize,
        ts: Duration,
    ) -> io::Result<bool> {
        let Some(slot) = self.input.free_index() else { return Ok(false) };
        self.input.queue_dmabuf(&self.fd, slot, plane, bytesused, ts)?;
        self.held[slot] = Some(cap_index);
        self.frames_in += 1;
        Ok(true)
    }

    /// Copies a frame (with the camera's `src_stride`) into a free MMAP slot and queues it.
    pub fn push_copy(&mut self, frame: &[u8], src_stride: u32, ts: Duration) -> io::Result<bool> {
        let Some(slot) = self.input.free_index() else { return Ok(false) };
        let dst = self.input.maps.get_mut(slot).ok_or_else(|| io::Error::other("no mapping"))?;
        let n = copy_frame(self.s.input, self.s.width, self.s.height, frame, src_stride, dst, self.stride)?;
        self.input.queue_mmap(&self.fd, slot, n, ts)?;
        self.frames_in += 1;
        Ok(true)
    }

    /// Leaves the DMABUF path for MMAP + copy (the import was refused at QBUF time).
    pub fn fall_back_to_copy(&mut self, why: &str) -> io::Result<()> {
        self.input.release(&self.fd);
        self.input = BufferQueue::allocate(&self.fd, self.node.output_queue(), MemoryType::Mmap, INPUT_SLOTS, false)?;
        self.held = vec![None; self.input.len()];
        self.input.stream_on(&self.fd)?;
        self.path = InputPath::Copy;
        self.copy_reason = Some(why.to_owned());
        log::warn!("{}: DMABUF import refused ({why}); using MMAP + one copy per frame", self.node.path.display());
        Ok(())
    }

    /// Takes back OUTPUT slots the encoder is done with; `release(cap_index)` for each camera
    /// buffer a DMABUF slot held.
    pub fn reclaim(&mut self, mut release: impl FnMut(usize)) -> io::Result<()> {
        while let Some(d) = self.input.dequeue(&self.fd)? {
            if let Some(cap) = self.held.get_mut(d.index).and_then(Option::take) {
                release(cap);
            }
        }
        Ok(())
    }

    /// Hands every finished coded unit to `sink(bytes, capture_timestamp, keyframe)` and
    /// requeues its buffer.
    pub fn drain(&mut self, mut sink: impl FnMut(&[u8], Duration, bool)) -> io::Result<usize> {
        let mut n = 0;
        while let Some(d) = self.output.dequeue(&self.fd)? {
            if !d.error && d.bytesused > d.data_offset {
                let map = &self.output.maps[d.index];
                let end = d.bytesused.min(map.len());
                sink(&map[d.data_offset.min(end)..end], d.timestamp, d.keyframe);
                self.units_out += 1;
                n += 1;
            }
            self.output.queue_mmap(&self.fd, d.index, 0, Duration::ZERO)?;
        }
        Ok(n)
    }

    /// Asks for the next unit to be a key frame (FORCE_KEY_FRAME), where the driver has it.
    pub fn request_key_frame(&mut self) -> bool {
        self.has_force_key && ctrl(&self.fd, bindings::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1, "FORCE_KEY_FRAME")
    }

    /// Changes the bitrate while streaming.
    pub fn set_bitrate(&mut self, bps: u32) -> bool {
        ctrl(&self.fd, bindings::V4L2_CID_MPEG_VIDEO_BITRATE, bps as i32, "BITRATE")
    }

    /// Camera buffers currently held by the encoder.
    pub fn held(&self) -> impl Iterator<Item = usize> + '_ {
        self.held.iter().filter_map(|h| *h)
    }
}

impl Drop for M2mEncoder {
    fn drop(&mut self) {
        self.input.release(&self.fd);
        self.output.release(&self.fd);
    }
}

/// Copies a raw frame between strides, plane by plane; returns the bytes written.
pub fn copy_frame(
    fourcc: [u8; 4],
    width: u32,
    height: u32,
    src: &[u8],
    src_stride: u32,
    dst: &mut [u8],
    dst_stride: u32,
) -> io::Result<usize> {
    let (w, h, ss, ds) = (width as usize, height as usize, src_stride as usize, dst_stride as usize);
    let need_src = raw_frame_size(fourcc, src_stride, height);
    let need_dst = raw_frame_size(fourcc, dst_stride, height);
    if src.len() < need_src || dst.len() < need_dst {
        return Err(io::Error::other("frame smaller than its format"));
    }
    if ss == ds {
        dst[..need_dst].copy_from_slice(&src[..need_dst]);
        return Ok(need_dst);
    }
    // (rows, bytes per row, source stride, destination stride) for each plane.
    let planes: &[(usize, usize, usize, usize)] = match &fourcc {
        b"NV12" => &[(h, w, ss, ds), (h / 2, w, ss, ds)],
        b"YU12" => &[(h, w, ss, ds), (h / 2, w / 2, ss / 2, ds / 2), (h / 2, w / 2, ss / 2, ds / 2)],
        b"YUYV" => &[(h, 2 * w, ss, ds)],
        _ => return Err(io::Error::other("not a raw format")),
    };
    let (mut so, mut d_o) = (0, 0);
    for &(rows, bytes, s_stride, d_stride) in planes {
        for r in 0..rows {
            dst[d_o + r * d_stride..d_o + r * d_stride + bytes]
                .copy_from_slice(&src[so + r * s_stride..so + r * s_stride + bytes]);
        }
        so += rows * s_stride;
        d_o += rows * d_stride;
    }
    Ok(need_dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_between_strides_plane_by_plane() {
        let (w, h) = (4u32, 2u32);
        // NV12 with stride 6: Y rows "abcd..", "efgh..", UV row "ijkl..".
        let src = b"abcd..efgh..ijkl..";
        let mut dst = vec![0xa5; 12];
        let n = copy_frame(*b"NV12", w, h, src, 6, &mut dst, 4).unwrap();
        assert_eq!(&dst[..n], b"abcdefghijkl");
        let mut back = vec![b'.'; 18];
        copy_frame(*b"NV12", w, h, &dst, 4, &mut back, 6).unwrap();
        assert_eq!(&back, src);
    }

    #[test]
    fn levels_follow_macroblock_rate() {
        assert_eq!(h264_level(1280, 720, 30), bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_1);
        assert_eq!(h264_level(1920, 1080, 30), bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0);
    }
}
