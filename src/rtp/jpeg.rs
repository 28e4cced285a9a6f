//! RFC 2435 RTP payload format for JPEG: a parser that checks a JPEG is one the format can
//! carry, a packetizer, and a depacketizer that rebuilds a decodable JPEG (used to verify
//! round trips).
//!
//! The format carries only baseline (SOF0), 8-bit, 3-component YCbCr JPEGs with 4:2:2 (type 0)
//! or 4:2:0 (type 1) sampling, the standard Huffman tables, and sizes up to 2040×2040 in steps of
//! 8. [`parse`] refuses anything else with a [`JpegError`]: a frame that cannot be carried is
//! dropped, never sent broken. Restart markers (DRI) make the types 64/65 with a restart header
//! (§3.1.7). Quantization tables always travel in-band (Q = 255, §3.1.8) in the first packet of
//! each frame, so the tables of a camera or an encoder whose quality changes are always right.
//!
//! The packetizer is a push/pull state machine like the H.264 one: [`Packetizer::push`] one
//! parsed frame, then call [`Packets::next`] with a caller-owned buffer until it returns `None`.
//! Every packet carries the frame's 90 kHz timestamp; the last one has the marker bit.
//!
//! ```text
//! main JPEG header (§3.1)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Type-specific |              Fragment Offset                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Type     |       Q       |     Width     |     Height    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! restart marker header (types 64-127, §3.1.7)
//! |       Restart Interval        |F|L|       Restart Count       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! quantization table header (Q >= 128, fragment offset 0, §3.1.8)
//! |      MBZ      |   Precision   |             Length            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Quantization Table Data                    |
//! ```

use core::fmt;

use super::h264::PacketInfo;
use super::header::{RtpHeader, HEADER_LEN};
use crate::wbuf::{Full, WBuf};

/// Static payload type of JPEG (RFC 3551 §6).
pub const JPEG_PAYLOAD_TYPE: u8 = 26;
/// Largest width or height the 8-bit `Width`/`Height` fields (in units of 8 pixels) can hold.
pub const MAX_DIMENSION: u16 = 2040;
/// Q value meaning "quantization tables in-band, may change with every frame".
pub const Q_IN_BAND: u8 = 255;
/// Smallest `max_packet` the packetizer accepts: the first packet carries 140 bytes of headers.
pub const MIN_PACKET: usize = 256;

const MAIN_HEADER_LEN: usize = 8;
const RESTART_HEADER_LEN: usize = 4;
const QTABLE_HEADER_LEN: usize = 4;
/// Fragment offsets are 24 bits.
const MAX_SCAN_BYTES: usize = 1 << 24;

/// Why a JPEG cannot be sent as RTP/JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegError {
    /// No SOI marker at the start.
    NotJpeg,
    /// A segment runs past the end, or the scan has no EOI.
    Truncated,
    /// Progressive (SOF2) JPEG.
    Progressive,
    /// Another non-baseline frame type (extended, lossless, arithmetic, hierarchical): its SOF marker.
    NotBaseline(u8),
    /// Sample precision other than 8 bits (e.g. 12-bit).
    Precision(u8),
    /// Not 3 components (grayscale, CMYK).
    Components(u8),
    /// Sampling other than 4:2:0 (type 1) or 4:2:2 (type 0): luma and first chroma factors `0xHV`.
    Sampling { luma: u8, chroma: u8 },
    /// Wider or taller than 2040 pixels, or zero.
    TooLarge { width: u16, height: u16 },
    /// Width or height not a multiple of 8.
    NotMultipleOf8 { width: u16, height: u16 },
    /// A quantization table is missing, 16-bit, or the two chroma components use different ones.
    QuantTable,
    /// Huffman tables other than the standard ones (the receiver rebuilds the standard ones).
    HuffmanTable,
    /// No SOF/SOS, or a scan that is not one interleaved baseline scan of all three components.
    Scan,
    /// Entropy-coded data longer than the 24-bit fragment offset can address.
    TooBig,
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::NotJpeg => f.write_str("not a JPEG (no SOI marker)"),
            JpegError::Truncated => f.write_str("truncated JPEG (segment past the end or no EOI)"),
            JpegError::Progressive => f.write_str("progressive JPEG; RTP/JPEG carries baseline only"),
            JpegError::NotBaseline(m) => {
                write!(f, "non-baseline JPEG (SOF marker 0x{m:02X}); RTP/JPEG carries baseline only")
            }
            JpegError::Precision(p) => write!(f, "{p}-bit JPEG; RTP/JPEG carries 8-bit only"),
            JpegError::Components(n) => write!(f, "JPEG with {n} components; RTP/JPEG carries YCbCr (3)"),
            JpegError::Sampling { luma, chroma } => write!(
                f,
                "sampling Y {}x{} C {}x{}; RTP/JPEG carries Y 2x2 (4:2:0) or 2x1 (4:2:2) with C 1x1",
                luma >> 4,
                luma & 15,
                chroma >> 4,
                chroma & 15
            ),
            JpegError::TooLarge { width, height } => {
                write!(f, "{width}x{height} JPEG; RTP/JPEG carries 8..={MAX_DIMENSION} pixels per side")
            }
            JpegError::NotMultipleOf8 { width, height } => {
                write!(f, "{width}x{height} JPEG; RTP/JPEG needs sides that are multiples of 8")
            }
            JpegError::QuantTable => f.write_str("missing or 16-bit quantization table, or chroma tables differ"),
            JpegError::HuffmanTable => f.write_str("non-standard Huffman tables; RTP/JPEG implies the standard ones"),
            JpegError::Scan => f.write_str("not one interleaved baseline scan of Y, Cb and Cr"),
            JpegError::TooBig => f.write_str("scan data larger than 16 MiB (24-bit fragment offsets)"),
        }
    }
}

/// A JPEG the format can carry: what the RTP/JPEG headers need, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegFrame<'a> {
    pub width: u16,
    pub height: u16,
    /// 0 = 4:2:2, 1 = 4:2:0 (before adding 64 for restart markers).
    pub kind: u8,
    /// MCUs per restart interval (DRI); 0 = none.
    pub restart_interval: u16,
    /// Luma and chroma quantization tables, 64 bytes each in zigzag order as in DQT.
    pub qtables: [&'a [u8]; 2],
    /// Entropy-coded data from after the SOS header to before EOI (restart markers included).
    pub scan: &'a [u8],
}

impl JpegFrame<'_> {
    /// The `Type` field: 0/1, or 64/65 with restart markers.
    pub fn rtp_type(&self) -> u8 {
        self.kind | if self.restart_interval > 0 { 64 } else { 0 }
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, JpegError> {
    let s = b.get(at..at + 2).ok_or(JpegError::Truncated)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

/// Which standard table a DHT `Tc/Th` byte must hold.
fn standard_table(tc_th: u8) -> Option<(&'static [u8; 16], &'static [u8])> {
    match tc_th {
        0x00 => Some((&LUM_DC_CODELENS, &LUM_DC_SYMBOLS)),
        0x10 => Some((&LUM_AC_CODELENS, &LUM_AC_SYMBOLS)),
        0x01 => Some((&CHM_DC_CODELENS, &CHM_DC_SYMBOLS)),
        0x11 => Some((&CHM_AC_CODELENS, &CHM_AC_SYMBOLS)),
        _ => None,
    }
}

/// A frame component of the SOF: (id, sampling factors 0xHV, quantization table).
type Component = (u8, u8, u8);

/// Parses a JPEG and checks that RTP/JPEG can carry it.
pub fn parse(data: &[u8]) -> Result<JpegFrame<'_>, JpegError> {
    if data.get(..2) != Some(&[0xff, 0xd8]) {
        return Err(JpegError::NotJpeg);
    }
    let mut qt: [Option<&[u8]>; 4] = [None; 4];
    let mut sof: Option<(u16, u16, [Component; 3])> = None;
    let mut restart_interval = 0u16;
    let mut pos = 2;
    let scan_start = loop {
        if *data.get(pos).ok_or(JpegError::Truncated)? != 0xff {
            return Err(JpegError::Truncated);
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while data.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let marker = *data.get(pos + 1).ok_or(JpegError::Truncated)?;
        if marker == 0x01 || (0xd0..=0xd7).contains(&marker) {
            pos += 2; // standalone markers
            continue;
        }
        if marker == 0xd8 || marker == 0xd9 {
            return Err(JpegError::Scan);
        }
        let len = usize::from(be16(data, pos + 2)?);
        if len < 2 {
            return Err(JpegError::Truncated);
        }
        let seg = data.get(pos + 4..pos + 2 + len).ok_or(JpegError::Truncated)?;
        let next = pos + 2 + len;
        match marker {
            0xdb => {
                let mut s = seg;
                while let Some((&pq_tq, rest)) = s.split_first() {
                    if pq_tq >> 4 != 0 || pq_tq & 15 > 3 {
                        return Err(JpegError::QuantTable);
                    }
                    let table = rest.get(..64).ok_or(JpegError::Truncated)?;
                    qt[usize::from(pq_tq & 15)] = Some(table);
                    s = &rest[64..];
                }
            }
            0xc0 => {
                let precision = *seg.first().ok_or(JpegError::Truncated)?;
                if precision != 8 {
                    return Err(JpegError::Precision(precision));
                }
                let height = be16(seg, 1)?;
                let width = be16(seg, 3)?;
                let n = *seg.get(5).ok_or(JpegError::Truncated)?;
                if n != 3 {
                    return Err(JpegError::Components(n));
                }
                let c = seg.get(6..15).ok_or(JpegError::Truncated)?;
                sof = Some((width, height, [(c[0], c[1], c[2]), (c[3], c[4], c[5]), (c[6], c[7], c[8])]));
            }
            0xc2 => return Err(JpegError::Progressive),
            0xc1 | 0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => return Err(JpegError::NotBaseline(marker)),
            0xcc => return Err(JpegError::NotBaseline(marker)),
            0xc4 => {
                let mut s = seg;
                while let Some((&tc_th, rest)) = s.split_first() {
                    let counts = rest.get(..16).ok_or(JpegError::Truncated)?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = rest.get(16..16 + n).ok_or(JpegError::Truncated)?;
                    match standard_table(tc_th) {
                        Some((lens, syms)) if counts == lens && symbols == syms => {}
                        _ => return Err(JpegError::HuffmanTable),
                    }
                    s = &rest[16 + n..];
                }
            }
            0xdd => restart_interval = be16(seg, 0)?,
            0xda => {
                let (_, _, comps) = sof.ok_or(JpegError::Scan)?;
                let ns = *seg.first().ok_or(JpegError::Truncated)?;
                let sel = seg.get(1..7).ok_or(JpegError::Truncated)?;
                let tail = seg.get(7..10).ok_or(JpegError::Truncated)?;
                let tables_ok = sel[1] == 0x00 && sel[3] == 0x11 && sel[5] == 0x11;
                let ids_ok = sel[0] == comps[0].0 && sel[2] == comps[1].0 && sel[4] == comps[2].0;
                if ns != 3 || !tables_ok || !ids_ok || tail != [0, 63, 0] {
                    return Err(JpegError::Scan);
                }
                break next;
            }
            _ => {} // APPn, COM and the rest: not needed
        }
        pos = next;
    };
    let (width, height, comps) = sof.ok_or(JpegError::Scan)?;
    let sampling = JpegError::Sampling { luma: comps[0].1, chroma: comps[1].1 };
    let kind = match comps[0].1 {
        0x21 => 0,
        0x22 => 1,
        _ => return Err(sampling),
    };
    if comps[1].1 != 0x11 || comps[2].1 != 0x11 {
        return Err(sampling);
    }
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(JpegError::TooLarge { width, height });
    }
    if width % 8 != 0 || height % 8 != 0 {
        return Err(JpegError::NotMultipleOf8 { width, height });
    }
    if comps[1].2 != comps[2].2 || comps.iter().any(|c| c.2 > 3) {
        return Err(JpegError::QuantTable);
    }
    let luma = qt[usize::from(comps[0].2)].ok_or(JpegError::QuantTable)?;
    let chroma = qt[usize::from(comps[1].2)].ok_or(JpegError::QuantTable)?;
    let scan = &data[scan_start..scan_end(data, scan_start)?];
    if scan.is_empty() {
        return Err(JpegError::Scan);
    }
    if scan.len() >= MAX_SCAN_BYTES {
        return Err(JpegError::TooBig);
    }
    Ok(JpegFrame { width, height, kind, restart_interval, qtables: [luma, chroma], scan })
}

/// Where the entropy-coded data starting at `from` ends: the index of its EOI marker.
fn scan_end(data: &[u8], from: usize) -> Result<usize, JpegError> {
    let mut i = from;
    while let Some(off) = data.get(i..).and_then(|d| d.iter().position(|&b| b == 0xff)) {
        i += off;
        match data.get(i + 1) {
            None => break,
            // Stuffed zero and restart markers belong to the scan; 0xFF may be a fill byte.
            Some(0x00 | 0xd0..=0xd7) => i += 2,
            Some(0xff) => i += 1,
            Some(0xd9) => return Ok(i),
            // DNL, or a second scan: not baseline single-scan.
            Some(_) => return Err(JpegError::Scan),
        }
    }
    Err(JpegError::Truncated)
}

/// Packetizes JPEG frames: one SSRC and sequence, payload type 26.
#[derive(Debug, Clone)]
pub struct Packetizer {
    ssrc: u32,
    next_sequence: u16,
    max_packet: usize,
}

impl Packetizer {
    /// `max_packet` is the largest RTP packet (header included) to emit; at least [`MIN_PACKET`].
    pub fn new(ssrc: u32, first_sequence: u16, max_packet: usize) -> Self {
        Self { ssrc, next_sequence: first_sequence, max_packet: max_packet.max(MIN_PACKET) }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    #[must_use]
    pub fn push<'a>(&mut self, frame: JpegFrame<'a>, timestamp: u32) -> Packets<'a, '_> {
        Packets { pz: self, frame, timestamp, offset: 0, done: false }
    }
}

/// The packets of one frame, drained with [`Packets::next`].
#[derive(Debug)]
pub struct Packets<'a, 'p> {
    pz: &'p mut Packetizer,
    frame: JpegFrame<'a>,
    timestamp: u32,
    /// Scan bytes already sent (the fragment offset of the next packet).
    offset: usize,
    done: bool,
}

impl Packets<'_, '_> {
    /// Writes the next packet into `buf` (which must hold `max_packet` bytes).
    pub fn next(&mut self, buf: &mut [u8]) -> Option<Result<PacketInfo, Full>> {
        if self.done {
            return None;
        }
        let max_packet = self.pz.max_packet;
        if buf.len() < max_packet {
            return Some(Err(Full));
        }
        let f = &self.frame;
        let mut w = WBuf::new(&mut buf[HEADER_LEN..max_packet]);
        let off = self.offset as u32;
        let headers = (|| {
            w.put(&[0, (off >> 16) as u8, (off >> 8) as u8, off as u8])?;
            w.put(&[f.rtp_type(), Q_IN_BAND, (f.width / 8) as u8, (f.height / 8) as u8])?;
            if f.restart_interval > 0 {
                // F = L = 1 and count 0x3FFF: packets are not aligned to restart intervals, so
                // the receiver reassembles the whole frame (§3.1.7).
                w.put_u16(f.restart_interval)?;
                w.put_u16(0xffff)?;
            }
            if self.offset == 0 {
                w.put(&[0, 0])?;
                w.put_u16(128)?;
                w.put(f.qtables[0])?;
                w.put(f.qtables[1])?;
            }
            Ok::<(), Full>(())
        })();
        if headers.is_err() {
            return Some(Err(Full));
        }
        let chunk = (f.scan.len() - self.offset).min(w.remaining());
        if w.put(&f.scan[self.offset..self.offset + chunk]).is_err() {
            return Some(Err(Full));
        }
        let len = HEADER_LEN + w.len();
        self.offset += chunk;
        let marker = self.offset == f.scan.len();
        let sequence = self.pz.next_sequence;
        let header = RtpHeader {
            marker,
            payload_type: JPEG_PAYLOAD_TYPE,
            sequence,
            timestamp: self.timestamp,
            ssrc: self.pz.ssrc,
        };
        header.write_to(buf)?;
        self.pz.next_sequence = sequence.wrapping_add(1);
        self.done = marker;
        Some(Ok(PacketInfo { len, sequence, marker }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepacketizeError {
    Truncated,
    /// A fragment whose offset is not where the frame so far ends, or one without a first.
    OutOfOrder,
    /// A type other than 0, 1, 64, 65.
    UnsupportedType(u8),
    /// Q below 128 (tables derived from Q are not implemented here), or bad in-band tables.
    UnsupportedQ(u8),
    Full,
}

/// Rebuilds JPEG files from RTP/JPEG payloads into a caller-owned buffer: [`Depacketizer::push`]
/// each payload of a frame in order, then [`Depacketizer::finish`] after the marker packet.
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// Scan bytes of the current frame so far, `None` between frames.
    expected: Option<u32>,
}

impl Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, payload: &[u8], out: &mut WBuf<'_>) -> Result<(), DepacketizeError> {
        let full = |_: Full| DepacketizeError::Full;
        let h = payload.get(..MAIN_HEADER_LEN).ok_or(DepacketizeError::Truncated)?;
        let offset = u32::from_be_bytes([0, h[1], h[2], h[3]]);
        let (ty, q, w8, h8) = (h[4], h[5], h[6], h[7]);
        if !matches!(ty, 0 | 1 | 64 | 65) {
            return Err(DepacketizeError::UnsupportedType(ty));
        }
        let mut rest = &payload[MAIN_HEADER_LEN..];
        let mut restart_interval = 0;
        if ty >= 64 {
            let r = rest.get(..RESTART_HEADER_LEN).ok_or(DepacketizeError::Truncated)?;
            restart_interval = u16::from_be_bytes([r[0], r[1]]);
            rest = &rest[RESTART_HEADER_LEN..];
        }
        if offset == 0 {
            if q < 128 {
                return Err(DepacketizeError::UnsupportedQ(q));
            }
            let qh = rest.get(..QTABLE_HEADER_LEN).ok_or(DepacketizeError::Truncated)?;
            let len = usize::from(u16::from_be_bytes([qh[2], qh[3]]));
            if qh[1] != 0 || len != 128 {
                return Err(DepacketizeError::UnsupportedQ(q));
            }
            let tables = rest.get(QTABLE_HEADER_LEN..QTABLE_HEADER_LEN + len).ok_or(DepacketizeError::Truncated)?;
            rest = &rest[QTABLE_HEADER_LEN + len..];
            let (width, height) = (u16::from(w8) * 8, u16::from(h8) * 8);
            write_headers(out, ty & 1, width, height, restart_interval, tables).map_err(full)?;
            self.expected = Some(0);
        }
        if self.expected != Some(offset) {
            self.expected = None;
            return Err(DepacketizeError::OutOfOrder);
        }
        out.put(rest).map_err(full)?;
        self.expected = Some(offset + rest.len() as u32);
        Ok(())
    }

    /// Ends the frame: writes EOI.
    pub fn finish(&mut self, out: &mut WBuf<'_>) -> Result<(), DepacketizeError> {
        if self.expected.take().is_none() {
            return Err(DepacketizeError::OutOfOrder);
        }
        out.put(&[0xff, 0xd9]).map_err(|_| DepacketizeError::Full)
    }
}

/// SOI, DQT, DRI, SOF0, the standard DHTs and SOS of a frame (RFC 2435 appendix B).
fn write_headers(
    w: &mut WBuf<'_>,
    kind: u8,
    width: u16,
    height: u16,
    restart_interval: u16,
    tables: &[u8],
) -> Result<(), Full> {
    w.put(&[0xff, 0xd8])?;
    w.put(&[0xff, 0xdb])?;
    w.put_u16(2 + 2 * 65)?;
    w.put_u8(0)?;
    w.put(&tables[..64])?;
    w.put_u8(1)?;
    w.put(&tables[64..128])?;
    if restart_interval > 0 {
        w.put(&[0xff, 0xdd, 0, 4])?;
        w.put_u16(restart_interval)?;
    }
    w.put(&[0xff, 0xc0, 0, 17, 8])?;
    w.put_u16(height)?;
    w.put_u16(width)?;
    let luma = if kind == 0 { 0x21 } else { 0x22 };
    w.put(&[3, 1, luma, 0, 2, 0x11, 1, 3, 0x11, 1])?;
    for tc_th in [0x00, 0x10, 0x01, 0x11] {
        if let Some((lens, syms)) = standard_table(tc_th) {
            w.put(&[0xff, 0xc4])?;
            w.put_u16((2 + 1 + 16 + syms.len()) as u16)?;
            w.put_u8(tc_th)?;
            w.put(lens)?;
            w.put(syms)?;
        }
    }
    w.put(&[0xff, 0xda, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
}

// The standard Huffman tables (ITU-T T.81 Annex K.3, RFC 2435 appendix B).
const LUM_DC_CODELENS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const LUM_DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const LUM_AC_CODELENS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const LUM_AC_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const CHM_DC_CODELENS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const CHM_DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const CHM_AC_CODELENS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const CHM_AC_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    #[allow(unused_extern_crates)] // the no_std build of the library needs it for the tests
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

    /// A picture with detail everywhere: gradients, a checkerboard, a pseudo-random patch.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        let mut seed = 0x1234_5678u32;
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let p = &mut rgb[(y * w + x) * 3..][..3];
                let check = if (x / 8 + y / 8) % 2 == 0 { 60 } else { 0 };
                p[0] = ((x * 255 / w) as u8).wrapping_add(check);
                p[1] = (y * 255 / h) as u8;
                p[2] = if x > w / 2 && y > h / 2 { seed as u8 } else { ((x + y) * 3) as u8 };
            }
        }
        rgb
    }

    fn encode(w: u16, h: u16, quality: u8, sampling: SamplingFactor, restart: Option<u16>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out, quality);
        enc.set_sampling_factor(sampling);
        if let Some(r) = restart {
            enc.set_restart_interval(r);
        }
        enc.encode(&picture(usize::from(w), usize::from(h)), w, h, ColorType::Rgb).unwrap();
        out
    }

    /// Packetizes, checks every header, and depacketizes into a JPEG file.
    fn round_trip(jpeg: &[u8], max: usize) -> (Vec<u8>, usize) {
        let frame = parse(jpeg).unwrap();
        let mut pz = Packetizer::new(0xabcd, 65534, max);
        let mut pkts = pz.push(frame, 12345);
        let mut de = Depacketizer::new();
        let mut rebuilt = vec![0u8; jpeg.len() + 1024];
        let mut out = WBuf::new(&mut rebuilt);
        let mut buf = vec![0xa5u8; max];
        let (mut n, mut seq, mut done, mut scan_bytes) = (0, 65534u16, false, 0);
        while let Some(r) = pkts.next(&mut buf) {
            let info = r.unwrap();
            assert!(info.len <= max && !done, "packet after the marker, or too long");
            let (h, payload) = RtpHeader::parse(&buf[..info.len]).unwrap();
            assert_eq!((h.payload_type, h.sequence, h.timestamp, h.ssrc), (26, seq, 12345, 0xabcd));
            assert_eq!(h.marker, info.marker);
            let offset = u32::from_be_bytes([0, payload[1], payload[2], payload[3]]) as usize;
            assert_eq!(offset, scan_bytes, "24-bit fragment offset counts scan bytes only");
            assert_eq!(payload[4], frame.rtp_type());
            assert_eq!(payload[5], 255);
            assert_eq!((payload[6], payload[7]), ((frame.width / 8) as u8, (frame.height / 8) as u8));
            let mut hdr = 8;
            if frame.restart_interval > 0 {
                assert_eq!(
                    &payload[8..12],
                    &[(frame.restart_interval >> 8) as u8, frame.restart_interval as u8, 0xff, 0xff]
                );
                hdr += 4;
            }
            if n == 0 {
                assert_eq!(&payload[hdr..hdr + 4], &[0, 0, 0, 128], "tables in-band in the first packet");
                hdr += 4 + 128;
            }
            scan_bytes += payload.len() - hdr;
            de.push(payload, &mut out).unwrap();
            seq = seq.wrapping_add(1);
            done = h.marker;
            n += 1;
        }
        assert!(done, "no marker on the last packet");
        assert_eq!(scan_bytes, frame.scan.len());
        assert_eq!(pz.next_sequence(), seq);
        de.finish(&mut out).unwrap();
        let len = out.len();
        rebuilt.truncate(len);
        (rebuilt, n)
    }

    fn decode(jpeg: &[u8]) -> Vec<u8> {
        let mut d = jpeg_decoder::Decoder::new(jpeg);
        d.decode().unwrap()
    }

    #[test]
    fn real_jpegs_round_trip_to_the_same_scan_tables_and_pixels() {
        /// Width, height, quality, sampling, restart interval, max packet.
        type Case = (u16, u16, u8, SamplingFactor, Option<u16>, usize);
        let cases: &[Case] = &[
            (64, 48, 80, SamplingFactor::R_4_2_0, None, 1452),
            (320, 240, 50, SamplingFactor::R_4_2_0, None, 1452),
            (320, 240, 95, SamplingFactor::R_4_2_2, None, 1452),
            (640, 480, 80, SamplingFactor::R_4_2_0, Some(4), 1452),
            (640, 360, 30, SamplingFactor::R_4_2_2, Some(1), 576),
            (1280, 720, 80, SamplingFactor::R_4_2_0, None, 1452),
            (2040, 16, 100, SamplingFactor::R_4_2_0, Some(8), 1452),
            (8, 8, 10, SamplingFactor::R_4_2_2, None, 256),
        ];
        for &(w, h, q, sampling, restart, max) in cases {
            let jpeg = encode(w, h, q, sampling, restart);
            let original = parse(&jpeg).unwrap();
            assert_eq!((original.width, original.height), (w, h));
            assert_eq!(original.kind, if sampling == SamplingFactor::R_4_2_2 { 0 } else { 1 });
            assert_eq!(original.restart_interval, restart.unwrap_or(0));
            let (rebuilt, packets) = round_trip(&jpeg, max);
            let back = parse(&rebuilt).unwrap();
            assert_eq!(back.scan, original.scan, "{w}x{h} q{q}: scan data byte for byte");
            assert_eq!(back.qtables, original.qtables, "{w}x{h} q{q}: quantization tables");
            assert_eq!(back.rtp_type(), original.rtp_type());
            assert_eq!(decode(&rebuilt), decode(&jpeg), "{w}x{h} q{q}: decoded pixels");
            let room = max - 12 - 8 - if restart.is_some() { 4 } else { 0 };
            assert_eq!(packets, (original.scan.len() + 132).div_ceil(room), "{w}x{h} q{q}: packets fill the MTU");
        }
    }

    #[test]
    fn jpegs_the_format_cannot_carry_are_refused() {
        let rgb = picture(64, 64);
        let with = |f: &dyn Fn(&mut Encoder<&mut Vec<u8>>), w: u16, h: u16, ct: ColorType| {
            let mut out = Vec::new();
            let mut enc = Encoder::new(&mut out, 80);
            f(&mut enc);
            let data = if ct == ColorType::Luma {
                vec![100u8; usize::from(w) * usize::from(h)]
            } else {
                picture(usize::from(w), usize::from(h))
            };
            enc.encode(&data, w, h, ct).unwrap();
            out
        };
        let _ = rgb;
        let progressive = with(&|e| e.set_progressive(true), 64, 64, ColorType::Rgb);
        assert_eq!(parse(&progressive), Err(JpegError::Progressive));
        let s444 = with(&|e| e.set_sampling_factor(SamplingFactor::R_4_4_4), 64, 64, ColorType::Rgb);
        assert_eq!(parse(&s444), Err(JpegError::Sampling { luma: 0x11, chroma: 0x11 }));
        let gray = with(&|_| {}, 64, 64, ColorType::Luma);
        assert_eq!(parse(&gray), Err(JpegError::Components(1)));
        let optimized = with(&|e| e.set_optimized_huffman_tables(true), 64, 64, ColorType::Rgb);
        assert_eq!(parse(&optimized), Err(JpegError::HuffmanTable));
        let wide = with(&|_| {}, 2048, 16, ColorType::Rgb);
        assert_eq!(parse(&wide), Err(JpegError::TooLarge { width: 2048, height: 16 }));
        let odd = with(&|_| {}, 100, 60, ColorType::Rgb);
        assert_eq!(parse(&odd), Err(JpegError::NotMultipleOf8 { width: 100, height: 60 }));
        // 12-bit: the same file with its SOF precision patched.
        let mut deep = encode(64, 64, 80, SamplingFactor::R_4_2_0, None);
        let sof = deep.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        deep[sof + 4] = 12;
        assert_eq!(parse(&deep), Err(JpegError::Precision(12)));
        assert_eq!(parse(b"GIF89a"), Err(JpegError::NotJpeg));
        assert!(!std::format!("{}", JpegError::Progressive).is_empty());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let jpeg = encode(32, 32, 80, SamplingFactor::R_4_2_0, Some(2));
        for n in 0..jpeg.len() - 1 {
            assert!(parse(&jpeg[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        // Any single corrupted byte: an error or a frame, never a panic.
        for i in 0..jpeg.len() {
            let mut bad = jpeg.clone();
            bad[i] ^= 0x5a;
            let _ = parse(&bad);
        }
    }

    #[test]
    fn small_buffer_is_full_and_depacketizer_rejects_gaps() {
        let jpeg = encode(64, 64, 80, SamplingFactor::R_4_2_0, None);
        let frame = parse(&jpeg).unwrap();
        let mut pz = Packetizer::new(1, 0, 300);
        let mut pkts = pz.push(frame, 0);
        assert_eq!(pkts.next(&mut [0u8; 100]), Some(Err(Full)));
        let mut a = [0u8; 300];
        let mut b = [0u8; 300];
        let la = pkts.next(&mut a).unwrap().unwrap().len;
        let _ = pkts.next(&mut b).unwrap().unwrap();
        let lc = pkts.next(&mut b).unwrap().unwrap().len;
        let mut out = [0u8; 4096];
        let mut o = WBuf::new(&mut out);
        let mut de = Depacketizer::new();
        de.push(&a[12..la], &mut o).unwrap();
        assert_eq!(de.push(&b[12..lc], &mut o), Err(DepacketizeError::OutOfOrder), "a lost packet");
        assert_eq!(de.finish(&mut o), Err(DepacketizeError::OutOfOrder));
        assert_eq!(de.push(&[0; 7], &mut o), Err(DepacketizeError::Truncated));
        assert_eq!(de.push(&[0, 0, 0, 0, 3, 255, 8, 8], &mut o), Err(DepacketizeError::UnsupportedType(3)));
        assert_eq!(de.push(&[0, 0, 0, 0, 1, 50, 8, 8], &mut o), Err(DepacketizeError::UnsupportedQ(50)));
    }
}
