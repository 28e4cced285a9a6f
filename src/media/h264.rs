//! H.264 (ITU-T H.264 / ISO 14496-10) bitstream parsing: Annex B NAL units, access unit
//! boundaries and the parts of the SPS the SDP and logs need.
//!
//! Everything here borrows from the input and never allocates. Untrusted input (files, cameras)
//! gets `Err`/`None`, never a panic.

/// NAL unit types (Table 7-1) we act on.
pub mod nal_type {
    pub const NON_IDR: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
    pub const END_OF_SEQ: u8 = 10;
    pub const END_OF_STREAM: u8 = 11;
    pub const FILLER: u8 = 12;
    /// RFC 6184 aggregation / fragmentation types.
    pub const STAP_A: u8 = 24;
    pub const FU_A: u8 = 28;
}

/// The type of a NAL unit from its first byte.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether a NAL unit type carries slice data (VCL).
pub fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// Iterator over the NAL units of an Annex B byte stream (start codes `00 00 01` or
/// `00 00 00 01`). Yields each unit without its start code and trailing zero bytes; bytes
/// before the first start code are skipped; empty units are skipped.
#[derive(Debug, Clone)]
pub struct AnnexB<'a> {
    rest: &'a [u8],
}

pub fn annex_b(data: &[u8]) -> AnnexB<'_> {
    let rest = match find_start_code(data) {
        Some((_, after)) => &data[after..],
        None => &[],
    };
    AnnexB { rest }
}

/// Position of the first `00 00 01` in `data` as (start of the zeros, first byte after it).
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i + 2] == 1 && data[i] == 0 && data[i + 1] == 0 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

fn trim_trailing_zeros(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., 0] = s {
        s = rest;
    }
    s
}

impl<'a> Iterator for AnnexB<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (nal, rest) = match find_start_code(self.rest) {
                Some((zeros, after)) => (&self.rest[..zeros], &self.rest[after..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let nal = trim_trailing_zeros(nal);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Whether `nal` starts a new access unit, given whether a VCL NAL has been seen in the
/// current one (H.264 §7.4.1.2.3, simplified to what encoders emit: AUD, SPS, PPS, SEI and
/// types 14–18 after a VCL NAL start a new unit; a VCL NAL with `first_mb_in_slice == 0`
/// after a VCL NAL does too).
pub fn starts_access_unit(nal: &[u8], seen_vcl: bool) -> bool {
    let Some(t) = nal_unit_type(nal) else {
        return false;
    };
    if !seen_vcl {
        return false;
    }
    match t {
        nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI | 14..=18 => true,
        1 | 5 => nal.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// An access unit found by [`AuSplitter`]: byte range in the stream and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuSpan {
    pub start: u64,
    pub end: u64,
    pub idr: bool,
    pub has_sps: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitState {
    /// Inside a NAL (or before the first start code).
    Body,
    /// Just after a start code: the next byte is the NAL header.
    Header,
    /// After a slice NAL header: the next byte tells whether `first_mb_in_slice == 0`.
    FirstMb,
}

/// Splits an Annex B stream fed in arbitrary chunks into access units, without buffering it
/// (used to index files of any length). Bytes before the first start code are skipped.
#[derive(Debug, Clone)]
pub struct AuSplitter {
    pos: u64,
    zeros: u64,
    state: SplitState,
    header: u8,
    nal_start: u64,
    au_start: Option<u64>,
    seen_vcl: bool,
    idr: bool,
    has_sps: bool,
}

impl Default for AuSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuSplitter {
    pub fn new() -> Self {
        Self {
            pos: 0,
            zeros: 0,
            state: SplitState::Body,
            header: 0,
            nal_start: 0,
            au_start: None,
            seen_vcl: false,
            idr: false,
            has_sps: false,
        }
    }

    fn nal_begins(&mut self, boundary: bool, emit: &mut impl FnMut(AuSpan)) {
        if boundary || self.au_start.is_none() {
            if let Some(start) = self.au_start {
                emit(AuSpan { start, end: self.nal_start, idr: self.idr, has_sps: self.has_sps });
            }
            self.au_start = Some(self.nal_start);
            self.seen_vcl = false;
            self.idr = false;
            self.has_sps = false;
        }
        let t = self.header & 0x1f;
        self.seen_vcl |= is_vcl(t);
        self.idr |= t == nal_type::IDR;
        self.has_sps |= t == nal_type::SPS;
    }

    /// Feeds the next chunk of the stream; completed units are passed to `emit`.
    pub fn feed(&mut self, chunk: &[u8], emit: &mut impl FnMut(AuSpan)) {
        for &b in chunk {
            match self.state {
                SplitState::Header => {
                    self.header = b;
                    let t = b & 0x1f;
                    if (t == 1 || t == 5) && self.seen_vcl {
                        self.state = SplitState::FirstMb;
                    } else {
                        let boundary = starts_access_unit(&[b], self.seen_vcl);
                        self.nal_begins(boundary, emit);
                        self.state = SplitState::Body;
                    }
                }
                SplitState::FirstMb => {
                    let boundary = starts_access_unit(&[self.header, b], self.seen_vcl);
                    self.nal_begins(boundary, emit);
                    self.state = SplitState::Body;
                }
                SplitState::Body => {}
            }
            if b == 0 {
                self.zeros += 1;
            } else {
                if b == 1 && self.zeros >= 2 && self.state == SplitState::Body {
                    self.nal_start = self.pos - self.zeros.min(3);
                    self.state = SplitState::Header;
                }
                self.zeros = 0;
            }
            self.pos += 1;
        }
    }

    /// Ends the stream: emits the last unit.
    pub fn finish(mut self, emit: &mut impl FnMut(AuSpan)) {
        if self.state == SplitState::FirstMb {
            // A slice cut after its header byte: it belongs to the current unit.
            self.nal_begins(false, emit);
        }
        if let Some(start) = self.au_start.take() {
            emit(AuSpan { start, end: self.pos, idr: self.idr, has_sps: self.has_sps });
        }
    }
}

/// Bit reader over an RBSP that removes emulation prevention bytes (`00 00 03`) on the fly.
#[derive(Debug)]
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    zeros: u8,
    cur: u8,
    bits_left: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpsError {
    Truncated,
    NotSps,
    Unsupported,
    Invalid,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, zeros: 0, cur: 0, bits_left: 0 }
    }

    fn next_byte(&mut self) -> Result<u8, SpsError> {
        loop {
            let b = *self.data.get(self.pos).ok_or(SpsError::Truncated)?;
            self.pos += 1;
            if self.zeros >= 2 && b == 3 {
                self.zeros = 0;
                continue;
            }
            self.zeros = if b == 0 { self.zeros.saturating_add(1) } else { 0 };
            return Ok(b);
        }
    }

    fn bit(&mut self) -> Result<u32, SpsError> {
        if self.bits_left == 0 {
            self.cur = self.next_byte()?;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Ok(u32::from((self.cur >> self.bits_left) & 1))
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::Invalid);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Result<i32, SpsError> {
        let k = self.ue()?;
        let mag = k.div_ceil(2) as i32;
        Ok(if k % 2 == 1 { mag } else { -mag })
    }
}

/// The fields of a sequence parameter set that the server needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
}

impl Sps {
    /// Parses an SPS NAL unit (with its one-byte NAL header).
    pub fn parse(nal: &[u8]) -> Result<Sps, SpsError> {
        if nal_unit_type(nal) != Some(nal_type::SPS) {
            return Err(SpsError::NotSps);
        }
        let mut r = BitReader::new(&nal[1..]);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        let _sps_id = r.ue()?;
        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc > 3 {
                return Err(SpsError::Invalid);
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.bit()? == 1;
            }
            let _bit_depth_luma = r.ue()?;
            let _bit_depth_chroma = r.ue()?;
            let _qpprime_y_zero = r.bit()?;
            if r.bit()? == 1 {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? == 1 {
                        let size = if i < 6 { 16 } else { 64 };
                        let (mut last, mut next) = (8i64, 8i64);
                        for _ in 0..size {
                            if next != 0 {
                                // i64: delta_scale is meant to be -128..=127 but comes from
                                // untrusted bytes.
                                next = (last + i64::from(r.se()?) + 256).rem_euclid(256);
                            }
                            if next != 0 {
                                last = next;
                            }
                        }
                    }
                }
            }
        }
        let _log2_max_frame_num = r.ue()?;
        match r.ue()? {
            0 => {
                let _log2_max_poc_lsb = r.ue()?;
            }
            1 => {
                let _delta_always_zero = r.bit()?;
                let _offset_non_ref = r.se()?;
                let _offset_top_bottom = r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return Err(SpsError::Invalid);
                }
                for _ in 0..cycle {
                    let _ = r.se()?;
                }
            }
            2 => {}
            _ => return Err(SpsError::Invalid),
        }
        let _max_num_ref_frames = r.ue()?;
        let _gaps = r.bit()?;
        let width_mbs = r.ue()?.checked_add(1).ok_or(SpsError::Invalid)?;
        let height_map_units = r.ue()?.checked_add(1).ok_or(SpsError::Invalid)?;
        let frame_mbs_only = r.bit()?;
        if frame_mbs_only == 0 {
            let _mb_adaptive = r.bit()?;
        }
        let _direct_8x8 = r.bit()?;
        let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
        if r.bit()? == 1 {
            crop_l = r.ue()?;
            crop_r = r.ue()?;
            crop_t = r.ue()?;
            crop_b = r.ue()?;
        }
        if width_mbs > 1024 || height_map_units > 1024 {
            return Err(SpsError::Unsupported);
        }
        let height_mbs = (2 - frame_mbs_only) * height_map_units;
        let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
            (1, _) => (2, 2),
            (2, _) => (2, 1),
            (3, false) => (1, 1),
            _ => (1, 1),
        };
        let crop_unit_x = if chroma_format_idc == 0 || separate_colour_plane { 1 } else { sub_w };
        let crop_unit_y =
            (2 - frame_mbs_only) * if chroma_format_idc == 0 || separate_colour_plane { 1 } else { sub_h };
        let crop_x = crop_unit_x * (u64::from(crop_l) + u64::from(crop_r));
        let crop_y = crop_unit_y as u64 * (u64::from(crop_t) + u64::from(crop_b));
        let width = u64::from(width_mbs * 16).checked_sub(crop_x).ok_or(SpsError::Invalid)?;
        let height = u64::from(height_mbs * 16).checked_sub(crop_y).ok_or(SpsError::Invalid)?;
        if width == 0 || height == 0 {
            return Err(SpsError::Invalid);
        }
        Ok(Sps { profile_idc, constraint_flags, level_idc, width: width as u32, height: height as u32 })
    }

    /// `profile-level-id` for the SDP (RFC 6184 §8.1): the three bytes after the NAL header.
    pub fn profile_level_id(&self) -> [u8; 3] {
        [self.profile_idc, self.constraint_flags, self.level_idc]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPS of a 1280x720 constrained-baseline stream (x264), and of a 1920x1080 High stream
    // whose height needs frame cropping (1088 coded rows).
    const SPS_720P_BASELINE: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
        0x0f, 0x23, 0xc6, 0x0c, 0xa8,
    ];
    const SPS_1080P_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];

    #[test]
    fn sps_gives_size_and_profile() {
        let s = Sps::parse(SPS_720P_BASELINE).unwrap();
        assert_eq!((s.width, s.height), (1280, 720));
        assert_eq!(s.profile_level_id(), [0x42, 0xc0, 0x1f]);
        let s = Sps::parse(SPS_1080P_HIGH).unwrap();
        assert_eq!((s.width, s.height), (1920, 1080));
        assert_eq!(s.profile_idc, 100);
    }

    #[test]
    fn sps_rejects_truncation_at_every_length() {
        // Cut before the size fields: an error. Any cut: no panic.
        for n in 0..SPS_720P_BASELINE.len() {
            let r = Sps::parse(&SPS_720P_BASELINE[..n]);
            if n < 6 {
                assert!(r.is_err(), "len {n}");
            }
        }
        assert_eq!(Sps::parse(&[0x68, 0xce]), Err(SpsError::NotSps));
    }

    #[test]
    fn annex_b_splits_three_and_four_byte_start_codes() {
        let data = [0xff, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 5, 0, 0];
        let nals: heapless::Vec<&[u8], 4> = annex_b(&data).collect();
        assert_eq!(&nals[..], &[&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert_eq!(annex_b(&[0, 0, 1]).count(), 0);
        assert_eq!(annex_b(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn splitter_finds_units_in_any_chunking() {
        // AUD SPS PPS IDR(2 slices) | P | AUD P
        let stream: &[u8] = &[
            0, 0, 0, 1, 0x09, 0x10, 0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 1,
            0x65, 0x11, 0x22, 0, 0, 0, 1, 0x41, 0x9a, 0x01, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0x9b,
        ];
        let want = [
            AuSpan { start: 0, end: 29, idr: true, has_sps: true },
            AuSpan { start: 29, end: 36, idr: false, has_sps: false },
            AuSpan { start: 36, end: 46, idr: false, has_sps: false },
        ];
        assert_eq!(stream.len(), 46);
        for chunk in 1..=stream.len() {
            let mut got: heapless::Vec<AuSpan, 4> = heapless::Vec::new();
            let mut sp = AuSplitter::new();
            for c in stream.chunks(chunk) {
                sp.feed(c, &mut |a| got.push(a).unwrap());
            }
            sp.finish(&mut |a| got.push(a).unwrap());
            assert_eq!(&got[..], &want[..], "chunk {chunk}");
        }
    }

    #[test]
    fn splitter_keeps_flags_of_a_unit_cut_after_a_slice_header() {
        // Found by fuzzing: SPS, P slice, then a 1-byte slice at the very end.
        let stream = [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x41, 0x9a, 0, 0, 0, 1, 0x41];
        let mut got: heapless::Vec<AuSpan, 4> = heapless::Vec::new();
        let mut sp = AuSplitter::new();
        sp.feed(&stream, &mut |a| got.push(a).unwrap());
        sp.finish(&mut |a| got.push(a).unwrap());
        assert_eq!(&got[..], &[AuSpan { start: 0, end: 17, idr: false, has_sps: true }]);
    }

    #[test]
    fn sps_with_huge_scaling_deltas_is_no_panic() {
        // Found by fuzzing: delta_scale far outside -128..=127 overflowed i32.
        let _ = Sps::parse(&[0x67, 0x64, 0x00, 0x1f, 0xad, 0x80, 0x00, 0x00, 0x03, 0x00, 0xff, 0xff, 0xff, 0xfe]);
    }

    #[test]
    fn access_unit_boundaries() {
        assert!(!starts_access_unit(&[0x67], false));
        assert!(starts_access_unit(&[0x09, 0x10], true));
        assert!(starts_access_unit(&[0x41, 0x9a], true)); // first_mb_in_slice == 0
        assert!(!starts_access_unit(&[0x41, 0x1a], true)); // second slice of the same picture
        assert!(!starts_access_unit(&[], true));
    }
}
