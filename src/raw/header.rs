//! The raw-frame message: a fixed, versioned, little-endian header that travels with each
//! frame's file descriptor over the raw-frame socket (see [`super`]).
//!
//! ```text
//!  offset  size  field
//!       0     4  magic      "UAVF"
//!       4     2  version    1 (a client refuses other versions)
//!       6     2  length     bytes of this header (80; later fields are appended, never moved)
//!       8     4  fourcc     "YU12" (I420), "NV12" or "YUYV", as 4 ASCII bytes
//!      12     4  width      pixels
//!      16     4  height     pixels
//!      20     4  planes     1..=3
//!      24    12  stride[3]  bytes per line of each plane (0 for a plane that does not exist)
//!      36    12  offset[3]  where each plane starts in the fd (0 for a plane that does not exist)
//!      48     8  size       bytes of the frame in the fd (its file size)
//!      56     8  capture    capture time, CLOCK_MONOTONIC nanoseconds
//!      64     8  sequence   frame number of this socket, +1 per camera frame it was offered
//!      72     8  skipped    frames this client was skipped since it connected (newest wins)
//! ```
//!
//! [`FrameHeader::parse`] is a checked constructor for untrusted bytes: it refuses a wrong
//! magic or version, a short header, planes that lie outside `size`, and never panics.

/// `"UAVF"`.
pub const MAGIC: [u8; 4] = *b"UAVF";
pub const VERSION: u16 = 1;
/// Bytes of a version-1 header.
pub const HEADER_LEN: usize = 80;
pub const MAX_PLANES: usize = 3;

/// One frame's description as sent (see the module docs for the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    pub planes: u32,
    pub stride: [u32; MAX_PLANES],
    pub offset: [u32; MAX_PLANES],
    pub size: u64,
    pub capture_ns: u64,
    pub sequence: u64,
    pub skipped: u64,
}

/// The buffer is shorter than [`HEADER_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Why bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Short,
    Magic,
    Version(u16),
    /// A plane count of 0 or more than [`MAX_PLANES`], or a plane outside `size`.
    Planes,
}

/// The planes of a frame: (count, strides, offsets, total bytes). `None` for a format this
/// socket does not describe, or a layout whose sizes do not fit 32 bits.
pub fn planes_of(fourcc: [u8; 4], height: u32, stride: u32) -> Option<(u32, [u32; 3], [u32; 3], u64)> {
    let (s, h) = (u64::from(stride), u64::from(height));
    let luma = s.checked_mul(h)?;
    let (count, strides, offsets, total) = match &fourcc {
        b"YU12" => {
            let chroma = (s / 2).checked_mul(h.div_ceil(2))?;
            (3, [s, s / 2, s / 2], [0, luma, luma.checked_add(chroma)?], luma.checked_add(chroma)?.checked_add(chroma)?)
        }
        b"NV12" => (2, [s, s, 0], [0, luma, 0], luma.checked_add(s.checked_mul(h.div_ceil(2))?)?),
        b"YUYV" => (1, [s, 0, 0], [0, 0, 0], luma),
        _ => return None,
    };
    let narrow = |v: [u64; 3]| -> Option<[u32; 3]> {
        Some([u32::try_from(v[0]).ok()?, u32::try_from(v[1]).ok()?, u32::try_from(v[2]).ok()?])
    };
    Some((count, narrow(strides)?, narrow(offsets)?, total))
}

impl FrameHeader {
    /// Bytes of plane `i` (0 for one that does not exist): its stride times its rows.
    pub fn plane_bytes(&self, i: usize) -> u64 {
        let Some(&stride) = self.stride.get(i) else { return 0 };
        if i as u32 >= self.planes {
            return 0;
        }
        let rows = match (&self.fourcc, i) {
            (b"YU12" | b"NV12", 1 | 2) => self.height.div_ceil(2),
            _ => self.height,
        };
        u64::from(stride) * u64::from(rows)
    }

    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Full> {
        let out = buf.get_mut(..HEADER_LEN).ok_or(Full)?;
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.fourcc);
        let words = [self.width, self.height, self.planes];
        for (k, w) in words.iter().chain(&self.stride).chain(&self.offset).enumerate() {
            out[12 + 4 * k..16 + 4 * k].copy_from_slice(&w.to_le_bytes());
        }
        for (k, q) in [self.size, self.capture_ns, self.sequence, self.skipped].iter().enumerate() {
            out[48 + 8 * k..56 + 8 * k].copy_from_slice(&q.to_le_bytes());
        }
        Ok(HEADER_LEN)
    }

    pub fn parse(buf: &[u8]) -> Result<FrameHeader, ParseError> {
        let b = buf.get(..HEADER_LEN).ok_or(ParseError::Short)?;
        if b[0..4] != MAGIC {
            return Err(ParseError::Magic);
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
        let version = u16_at(4);
        if version != VERSION {
            return Err(ParseError::Version(version));
        }
        if usize::from(u16_at(6)) < HEADER_LEN || buf.len() < usize::from(u16_at(6)) {
            return Err(ParseError::Short);
        }
        let h = FrameHeader {
            fourcc: [b[8], b[9], b[10], b[11]],
            width: u32_at(12),
            height: u32_at(16),
            planes: u32_at(20),
            stride: [u32_at(24), u32_at(28), u32_at(32)],
            offset: [u32_at(36), u32_at(40), u32_at(44)],
            size: u64_at(48),
            capture_ns: u64_at(56),
            sequence: u64_at(64),
            skipped: u64_at(72),
        };
        if h.planes == 0 || h.planes as usize > MAX_PLANES {
            return Err(ParseError::Planes);
        }
        for i in 0..h.planes as usize {
            if u64::from(h.offset[i]).saturating_add(h.plane_bytes(i)) > h.size {
                return Err(ParseError::Planes);
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i420_720p() -> FrameHeader {
        let (planes, stride, offset, size) = planes_of(*b"YU12", 720, 1280).unwrap();
        FrameHeader {
            fourcc: *b"YU12",
            width: 1280,
            height: 720,
            planes,
            stride,
            offset,
            size,
            capture_ns: 0x0102_0304_0506_0708,
            sequence: 42,
            skipped: 3,
        }
    }

    #[test]
    fn plane_layouts_of_every_raw_format() {
        assert_eq!(planes_of(*b"YU12", 720, 1280), Some((3, [1280, 640, 640], [0, 921_600, 1_152_000], 1_382_400)));
        assert_eq!(planes_of(*b"NV12", 1080, 1920), Some((2, [1920, 1920, 0], [0, 2_073_600, 0], 3_110_400)));
        assert_eq!(planes_of(*b"YUYV", 480, 1280), Some((1, [1280, 0, 0], [0, 0, 0], 614_400)));
        assert_eq!(planes_of(*b"MJPG", 480, 640), None, "not a raw format");
        assert_eq!(planes_of(*b"NV12", u32::MAX, u32::MAX), None, "offsets beyond 32 bits");
    }

    #[test]
    fn write_fills_exactly_the_header_and_parse_reads_it_back() {
        let h = i420_720p();
        let mut buf = [0xa5u8; HEADER_LEN + 8];
        assert_eq!(h.write_to(&mut buf), Ok(HEADER_LEN));
        assert_eq!(&buf[HEADER_LEN..], &[0xa5; 8], "nothing beyond the header is written");
        assert_eq!(&buf[..12], b"UAVF\x01\x00\x50\x00YU12");
        assert_eq!(&buf[56..64], &[8, 7, 6, 5, 4, 3, 2, 1], "little-endian capture time");
        assert!(!buf[..HEADER_LEN].contains(&0xa5), "every byte of the header is written");
        assert_eq!(FrameHeader::parse(&buf[..HEADER_LEN]), Ok(h));
        assert_eq!(h.write_to(&mut [0; HEADER_LEN - 1]), Err(Full));
    }

    #[test]
    fn parse_refuses_what_is_not_a_frame_and_never_panics() {
        let mut buf = [0u8; HEADER_LEN];
        i420_720p().write_to(&mut buf).unwrap();
        for cut in 0..HEADER_LEN {
            assert_eq!(FrameHeader::parse(&buf[..cut]), Err(ParseError::Short), "cut at {cut}");
        }
        let mut bad = buf;
        bad[0] = b'X';
        assert_eq!(FrameHeader::parse(&bad), Err(ParseError::Magic));
        let mut bad = buf;
        bad[4] = 2;
        assert_eq!(FrameHeader::parse(&bad), Err(ParseError::Version(2)));
        let mut bad = buf;
        bad[48..56].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(FrameHeader::parse(&bad), Err(ParseError::Planes), "planes beyond the size");
        let mut bad = buf;
        bad[20] = 4;
        assert_eq!(FrameHeader::parse(&bad), Err(ParseError::Planes));
        // A longer header of a later revision still parses (fields are only appended).
        let mut longer = [0u8; HEADER_LEN + 16];
        longer[..HEADER_LEN].copy_from_slice(&buf);
        longer[6] = (HEADER_LEN + 16) as u8;
        assert_eq!(FrameHeader::parse(&longer), Ok(i420_720p()));
        assert_eq!(FrameHeader::parse(&longer[..HEADER_LEN + 8]), Err(ParseError::Short));
        // Every single-byte change parses or is refused, without a panic.
        for i in 0..HEADER_LEN {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = buf;
                b[i] = v;
                let _ = FrameHeader::parse(&b);
            }
        }
    }
}
