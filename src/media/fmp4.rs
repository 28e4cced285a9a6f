//! Fragmented MP4 (ISO/IEC 14496-12 ISOBMFF, 14496-15 AVC file format) for one H.264 video
//! track: an init segment (`ftyp` + `moov` with `mvex`/`trex`) and fragments (`moof` + `mdat`).
//!
//! Writers follow the crate's caller-owned buffer rule: `write_to(&mut [u8]) -> Result<usize,
//! Full>`, with an exact `*_len` to size the buffer. Nothing allocates; `no_std` without `alloc`.
//!
//! ```text
//!  init segment                          fragment (one per `record-fragment`, or per GOP)
//!  ftyp                                  moof
//!  moov                                    mfhd  sequence_number
//!    mvhd                                  traf
//!    trak                                    tfhd  track 1, default-base-is-moof
//!      tkhd                                  tfdt  base media decode time (v1, 64 bit)
//!      mdia                                  trun  data offset + per sample: duration,
//!        mdhd  timescale 90 kHz                    size, flags (sync / non-sync)
//!        hdlr  vide                        mdat    length-prefixed NAL units (4 bytes)
//!        minf  vmhd dinf stbl(stsd: avc1+avcC, empty stts/stsc/stsz/stco)
//!    mvex
//!      trex
//! ```
//!
//! Every box header here is 8 bytes (32-bit size); a fragment larger than 4 GiB is refused.
//! The [`read`] half is a small checked parser of the same boxes: the recorder uses it to
//! find the last complete fragment of a file cut short by a crash, and the tests and the fuzz
//! target use it for write → parse round trips.

use crate::wbuf::{Full, WBuf};

/// Media timescale of the video track: 90 kHz, like RTP video.
pub const TIMESCALE: u32 = 90_000;
const MOVIE_TIMESCALE: u32 = 1000;
const TRACK_ID: u32 = 1;

/// `trun` sample flags (14496-12 §8.8.3.1): a sync sample depends on no other sample.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// A non-sync sample depends on others and has `sample_is_non_sync_sample` set.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x001;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_WRITTEN: u32 = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;

/// The H.264 track an init segment describes.
#[derive(Debug, Clone, Copy)]
pub struct AvcTrack<'a> {
    pub width: u16,
    pub height: u16,
    /// SPS and PPS NAL units (with their NAL header, without start codes).
    pub sps: &'a [u8],
    pub pps: &'a [u8],
}

/// Why an init segment cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    Full,
    /// The SPS is shorter than its 4 fixed bytes, or SPS/PPS are longer than 65535 bytes.
    BadParameterSets,
}

impl From<Full> for InitError {
    fn from(_: Full) -> Self {
        InitError::Full
    }
}

/// One sample of a fragment as `trun` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// In [`TIMESCALE`] ticks.
    pub duration: u32,
    /// Bytes in `mdat` (length-prefixed NAL units).
    pub size: u32,
    pub sync: bool,
}

impl SampleInfo {
    pub fn flags(&self) -> u32 {
        if self.sync {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        }
    }
}

/// Opens a box: writes a placeholder size and the type; returns the offset to patch.
fn open(w: &mut WBuf<'_>, typ: &[u8; 4]) -> Result<usize, Full> {
    let at = w.len();
    w.put_u32(0)?;
    w.put(typ)?;
    Ok(at)
}

fn open_full(w: &mut WBuf<'_>, typ: &[u8; 4], version: u8, flags: u32) -> Result<usize, Full> {
    let at = open(w, typ)?;
    w.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff))?;
    Ok(at)
}

fn close(w: &mut WBuf<'_>, at: usize) -> Result<(), Full> {
    let size = u32::try_from(w.len() - at).map_err(|_| Full)?;
    w.written_mut()[at..at + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

fn put_zeros(w: &mut WBuf<'_>, n: usize) -> Result<(), Full> {
    for _ in 0..n {
        w.put_u8(0)?;
    }
    Ok(())
}

/// The unity matrix of `mvhd`/`tkhd` (16.16 and 2.30 fixed point).
fn put_matrix(w: &mut WBuf<'_>) -> Result<(), Full> {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        w.put_u32(v)?;
    }
    Ok(())
}

/// Whether this profile's `avcC` carries the chroma/bit-depth extension (14496-15 §5.3.3.1.2).
fn high_profile(profile_idc: u8) -> bool {
    matches!(profile_idc, 100 | 110 | 122 | 144)
}

/// Exact length of the init segment for `track`.
pub fn init_len(track: &AvcTrack<'_>) -> usize {
    let ext = if track.sps.get(1).is_some_and(|&p| high_profile(p)) { 4 } else { 0 };
    INIT_FIXED_LEN + track.sps.len() + track.pps.len() + ext
}

/// Bytes of the init segment besides SPS, PPS and the high-profile `avcC` extension.
const INIT_FIXED_LEN: usize = 28 // ftyp
    + 8 // moov
    + 108 // mvhd
    + 8 // trak
    + 92 // tkhd
    + 8 // mdia
    + 32 // mdhd
    + 45 // hdlr ("VideoHandler\0")
    + 8 // minf
    + 20 // vmhd
    + 36 // dinf + dref + url
    + 8 // stbl
    + 16 // stsd
    + 86 // avc1 sample entry
    + 8 + 11 // avcC header and fixed fields
    + 16 * 3 // stts, stsc, stco
    + 20 // stsz
    + 8 // mvex
    + 32; // trex

/// Writes `ftyp` + `moov` for one H.264 track at [`TIMESCALE`]. No sample tables: every sample
/// lives in fragments (`mvex` present), and the movie duration is left 0 (unknown).
pub fn write_init(track: &AvcTrack<'_>, buf: &mut [u8]) -> Result<usize, InitError> {
    let (sps, pps) = (track.sps, track.pps);
    if sps.len() < 4 || sps.len() > 0xffff || pps.is_empty() || pps.len() > 0xffff {
        return Err(InitError::BadParameterSets);
    }
    let mut w = WBuf::new(buf);
    let w = &mut w;

    let ftyp = open(w, b"ftyp")?;
    w.put(b"isom")?;
    w.put_u32(0x200)?;
    w.put(b"isomiso6avc1")?;
    close(w, ftyp)?;

    let moov = open(w, b"moov")?;
    let mvhd = open_full(w, b"mvhd", 0, 0)?;
    w.put_u32(0)?; // creation_time
    w.put_u32(0)?; // modification_time
    w.put_u32(MOVIE_TIMESCALE)?;
    w.put_u32(0)?; // duration: unknown (fragmented)
    w.put_u32(0x0001_0000)?; // rate 1.0
    w.put_u16(0x0100)?; // volume 1.0
    put_zeros(w, 10)?;
    put_matrix(w)?;
    put_zeros(w, 24)?; // pre_defined
    w.put_u32(TRACK_ID + 1)?; // next_track_ID
    close(w, mvhd)?;

    let trak = open(w, b"trak")?;
    let tkhd = open_full(w, b"tkhd", 0, 0x3)?; // enabled, in movie
    w.put_u32(0)?;
    w.put_u32(0)?;
    w.put_u32(TRACK_ID)?;
    w.put_u32(0)?; // reserved
    w.put_u32(0)?; // duration
    put_zeros(w, 8)?;
    w.put_u16(0)?; // layer
    w.put_u16(0)?; // alternate_group
    w.put_u16(0)?; // volume: video
    w.put_u16(0)?;
    put_matrix(w)?;
    w.put_u32(u32::from(track.width) << 16)?;
    w.put_u32(u32::from(track.height) << 16)?;
    close(w, tkhd)?;

    let mdia = open(w, b"mdia")?;
    let mdhd = open_full(w, b"mdhd", 0, 0)?;
    w.put_u32(0)?;
    w.put_u32(0)?;
    w.put_u32(TIMESCALE)?;
    w.put_u32(0)?;
    w.put_u16(0x55c4)?; // language "und"
    w.put_u16(0)?;
    close(w, mdhd)?;
    let hdlr = open_full(w, b"hdlr", 0, 0)?;
    w.put_u32(0)?;
    w.put(b"vide")?;
    put_zeros(w, 12)?;
    w.put(b"VideoHandler\0")?;
    close(w, hdlr)?;

    let minf = open(w, b"minf")?;
    let vmhd = open_full(w, b"vmhd", 0, 1)?;
    put_zeros(w, 8)?; // graphicsmode, opcolor
    close(w, vmhd)?;
    let dinf = open(w, b"dinf")?;
    let dref = open_full(w, b"dref", 0, 0)?;
    w.put_u32(1)?;
    let url = open_full(w, b"url ", 0, 1)?; // media in this file
    close(w, url)?;
    close(w, dref)?;
    close(w, dinf)?;

    let stbl = open(w, b"stbl")?;
    let stsd = open_full(w, b"stsd", 0, 0)?;
    w.put_u32(1)?;
    let avc1 = open(w, b"avc1")?;
    put_zeros(w, 6)?;
    w.put_u16(1)?; // data_reference_index
    put_zeros(w, 16)?; // pre_defined, reserved
    w.put_u16(track.width)?;
    w.put_u16(track.height)?;
    w.put_u32(0x0048_0000)?; // 72 dpi
    w.put_u32(0x0048_0000)?;
    w.put_u32(0)?;
    w.put_u16(1)?; // frame_count
    put_zeros(w, 32)?; // compressorname
    w.put_u16(0x0018)?; // depth
    w.put_u16(0xffff)?; // pre_defined = -1
    let avcc = open(w, b"avcC")?;
    w.put_u8(1)?; // configurationVersion
    w.put(&sps[1..4])?; // profile, compatibility, level
    w.put_u8(0xfc | 3)?; // lengthSizeMinusOne = 3
    w.put_u8(0xe0 | 1)?; // one SPS
    w.put_u16(sps.len() as u16)?;
    w.put(sps)?;
    w.put_u8(1)?; // one PPS
    w.put_u16(pps.len() as u16)?;
    w.put(pps)?;
    if high_profile(sps[1]) {
        // 4:2:0, 8 bit: what every camera encoder we drive emits.
        w.put(&[0xfc | 1, 0xf8, 0xf8, 0])?;
    }
    close(w, avcc)?;
    close(w, avc1)?;
    close(w, stsd)?;
    for typ in [b"stts", b"stsc", b"stco"] {
        let b = open_full(w, typ, 0, 0)?;
        w.put_u32(0)?;
        close(w, b)?;
    }
    let stsz = open_full(w, b"stsz", 0, 0)?;
    w.put_u32(0)?;
    w.put_u32(0)?;
    close(w, stsz)?;
    close(w, stbl)?;
    close(w, minf)?;
    close(w, mdia)?;
    close(w, trak)?;

    let mvex = open(w, b"mvex")?;
    let trex = open_full(w, b"trex", 0, 0)?;
    w.put_u32(TRACK_ID)?;
    w.put_u32(1)?; // default_sample_description_index
    w.put_u32(0)?;
    w.put_u32(0)?;
    w.put_u32(0)?;
    close(w, trex)?;
    close(w, mvex)?;
    close(w, moov)?;
    Ok(w.len())
}

/// Length of `moof` + the `mdat` header for `samples` samples.
pub const fn fragment_header_len(samples: usize) -> usize {
    8 + 16 + 8 + 16 + 20 + 20 + 12 * samples + 8
}

/// Writes `moof` and the 8-byte `mdat` header of one fragment; the caller appends the sample
/// data (exactly the sum of the sizes, in order) right after. `base_decode_time` is the
/// decode time of the first sample in [`TIMESCALE`] ticks.
pub fn write_fragment_header(
    sequence: u32,
    base_decode_time: u64,
    samples: &[SampleInfo],
    buf: &mut [u8],
) -> Result<usize, Full> {
    let data_len = samples.iter().try_fold(0u32, |acc, s| acc.checked_add(s.size)).ok_or(Full)?;
    let header_len = fragment_header_len(samples.len());
    let mdat_len = data_len.checked_add(8).ok_or(Full)?;
    let sample_count = u32::try_from(samples.len()).map_err(|_| Full)?;
    let data_offset = u32::try_from(header_len).map_err(|_| Full)?; // from moof start to data
    let mut w = WBuf::new(buf);
    let w = &mut w;
    let moof = open(w, b"moof")?;
    let mfhd = open_full(w, b"mfhd", 0, 0)?;
    w.put_u32(sequence)?;
    close(w, mfhd)?;
    let traf = open(w, b"traf")?;
    let tfhd = open_full(w, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF)?;
    w.put_u32(TRACK_ID)?;
    close(w, tfhd)?;
    let tfdt = open_full(w, b"tfdt", 1, 0)?;
    w.put(&base_decode_time.to_be_bytes())?;
    close(w, tfdt)?;
    let trun = open_full(w, b"trun", 0, TRUN_WRITTEN)?;
    w.put_u32(sample_count)?;
    w.put_u32(data_offset)?;
    for s in samples {
        w.put_u32(s.duration)?;
        w.put_u32(s.size)?;
        w.put_u32(s.flags())?;
    }
    close(w, trun)?;
    close(w, traf)?;
    close(w, moof)?;
    w.put_u32(mdat_len)?;
    w.put(b"mdat")?;
    Ok(w.len())
}

/// Whether a NAL unit goes into an `avc1` sample: parameter sets live in `avcC` and access
/// unit delimiters and filler carry nothing a player needs.
fn keep_in_sample(nal: &[u8]) -> bool {
    use super::h264::{nal_type, nal_unit_type};
    !matches!(nal_unit_type(nal), None | Some(nal_type::SPS | nal_type::PPS | nal_type::AUD | nal_type::FILLER))
}

/// Length of the `avc1` sample made from an Annex B access unit by [`write_avcc_sample`].
pub fn avcc_sample_len(annex_b: &[u8]) -> usize {
    super::h264::annex_b(annex_b).filter(|n| keep_in_sample(n)).map(|n| 4 + n.len()).sum()
}

/// Converts an Annex B access unit into an `avc1` sample: each NAL unit prefixed with its
/// 4-byte length; SPS, PPS, AUD and filler left out.
pub fn write_avcc_sample(annex_b: &[u8], buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = WBuf::new(buf);
    for nal in super::h264::annex_b(annex_b).filter(|n| keep_in_sample(n)) {
        w.put_u32(u32::try_from(nal.len()).map_err(|_| Full)?)?;
        w.put(nal)?;
    }
    Ok(w.len())
}

/// A checked reader of the boxes written above (and of ISOBMFF box headers in general).
pub mod read {
    /// Why bytes are not a box (or not the box expected).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BoxError {
        /// More bytes are needed: the box runs past the end of the input.
        Truncated,
        /// A size field smaller than its header, or a size/offset that does not add up.
        Invalid,
        /// A different box than the one expected.
        Unexpected([u8; 4]),
    }

    /// A box header: type, header length (8, or 16 for a 64-bit size) and total size.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BoxHeader {
        pub typ: [u8; 4],
        pub header_len: usize,
        /// Whole box, header included. `None`: the box runs to the end of the file (size 0).
        pub size: Option<u64>,
    }

    /// Parses the header at the start of `data` (8 bytes, 16 with a 64-bit size).
    pub fn header(data: &[u8]) -> Result<BoxHeader, BoxError> {
        let b = data.get(..8).ok_or(BoxError::Truncated)?;
        let size32 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let typ = [b[4], b[5], b[6], b[7]];
        match size32 {
            0 => Ok(BoxHeader { typ, header_len: 8, size: None }),
            1 => {
                let l = data.get(8..16).ok_or(BoxError::Truncated)?;
                let size = u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]);
                if size < 16 {
                    return Err(BoxError::Invalid);
                }
                Ok(BoxHeader { typ, header_len: 16, size: Some(size) })
            }
            2..=7 => Err(BoxError::Invalid),
            s => Ok(BoxHeader { typ, header_len: 8, size: Some(u64::from(s)) }),
        }
    }

    /// A box split off the front of some bytes: (type, body, the bytes after it).
    pub type Split<'a> = ([u8; 4], &'a [u8], &'a [u8]);

    /// Splits the first complete box off `data`.
    pub fn split(data: &[u8]) -> Result<Split<'_>, BoxError> {
        let h = header(data)?;
        let size = match h.size {
            Some(s) => usize::try_from(s).map_err(|_| BoxError::Truncated)?,
            None => data.len(),
        };
        if size > data.len() {
            return Err(BoxError::Truncated);
        }
        Ok((h.typ, &data[h.header_len..size], &data[size..]))
    }

    /// The body of the box of type `typ` at the start of `data`, and the rest.
    pub fn expect<'a>(data: &'a [u8], typ: &[u8; 4]) -> Result<(&'a [u8], &'a [u8]), BoxError> {
        let (t, body, rest) = split(data)?;
        if &t != typ {
            return Err(BoxError::Unexpected(t));
        }
        Ok((body, rest))
    }

    /// The body of the first child of type `typ` among the boxes in `data`.
    pub fn find<'a>(mut data: &'a [u8], typ: &[u8; 4]) -> Result<&'a [u8], BoxError> {
        while !data.is_empty() {
            let (t, body, rest) = split(data)?;
            if &t == typ {
                return Ok(body);
            }
            data = rest;
        }
        Err(BoxError::Invalid)
    }

    fn u32_at(b: &[u8], at: usize) -> Result<u32, BoxError> {
        let s = b.get(at..at.checked_add(4).ok_or(BoxError::Invalid)?).ok_or(BoxError::Invalid)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// What an init segment says about its track.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InitInfo<'a> {
        pub timescale: u32,
        pub width: u16,
        pub height: u16,
        pub sps: &'a [u8],
        pub pps: &'a [u8],
    }

    /// Parses `ftyp` + `moov` as [`super::write_init`] writes them; returns the rest.
    pub fn init(data: &[u8]) -> Result<(InitInfo<'_>, &[u8]), BoxError> {
        let (_, rest) = expect(data, b"ftyp")?;
        let (moov, rest) = expect(rest, b"moov")?;
        find(moov, b"mvex")?;
        let trak = find(moov, b"trak")?;
        let mdia = find(trak, b"mdia")?;
        let mdhd = find(mdia, b"mdhd")?;
        let timescale = u32_at(mdhd, 12)?;
        let stsd = find(find(find(mdia, b"minf")?, b"stbl")?, b"stsd")?;
        let (avc1, _) = expect(stsd.get(8..).ok_or(BoxError::Invalid)?, b"avc1")?;
        let dims = u32_at(avc1, 24)?;
        let avcc = find(avc1.get(78..).ok_or(BoxError::Invalid)?, b"avcC")?;
        let byte = |i: usize| avcc.get(i).copied().ok_or(BoxError::Invalid);
        if byte(0)? != 1 || byte(4)? & 3 != 3 || byte(5)? & 0x1f != 1 {
            return Err(BoxError::Invalid);
        }
        let sps_len = usize::from(u16::from_be_bytes([byte(6)?, byte(7)?]));
        let sps = avcc.get(8..8 + sps_len).ok_or(BoxError::Invalid)?;
        let at = 8 + sps_len;
        if byte(at)? != 1 {
            return Err(BoxError::Invalid);
        }
        let pps_len = usize::from(u16::from_be_bytes([byte(at + 1)?, byte(at + 2)?]));
        let pps = avcc.get(at + 3..at + 3 + pps_len).ok_or(BoxError::Invalid)?;
        if sps.len() < 4 || sps[1..4] != avcc[1..4] {
            return Err(BoxError::Invalid);
        }
        let info = InitInfo { timescale, width: (dims >> 16) as u16, height: dims as u16, sps, pps };
        Ok((info, rest))
    }

    /// The fields of one `moof` as [`super::write_fragment_header`] writes them.
    #[derive(Debug, Clone, Copy)]
    pub struct Moof<'a> {
        pub sequence: u32,
        pub base_decode_time: u64,
        pub sample_count: usize,
        /// Offset of the first sample from the start of `moof`.
        pub data_offset: u64,
        /// Length of the whole `moof` box.
        pub len: u64,
        trun_samples: &'a [u8],
    }

    impl<'a> Moof<'a> {
        /// The samples `trun` describes.
        pub fn samples(&self) -> impl Iterator<Item = super::SampleInfo> + 'a {
            self.trun_samples.chunks_exact(12).map(|e| {
                let word = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                super::SampleInfo { duration: word(0), size: word(4), sync: word(8) == super::SYNC_SAMPLE_FLAGS }
            })
        }

        /// Sum of the sample sizes: what `mdat` must hold.
        pub fn data_len(&self) -> u64 {
            self.samples().map(|s| u64::from(s.size)).sum()
        }

        pub fn duration(&self) -> u64 {
            self.samples().map(|s| u64::from(s.duration)).sum()
        }
    }

    /// Parses the `moof` at the start of `data`; returns it and the rest.
    pub fn moof(data: &[u8]) -> Result<(Moof<'_>, &[u8]), BoxError> {
        let (moof, rest) = expect(data, b"moof")?;
        let len = (data.len() - rest.len()) as u64;
        let (mfhd, after) = expect(moof, b"mfhd")?;
        let sequence = u32_at(mfhd, 4)?;
        let (traf, _) = expect(after, b"traf")?;
        let (tfhd, after) = expect(traf, b"tfhd")?;
        if u32_at(tfhd, 0)? != super::TFHD_DEFAULT_BASE_IS_MOOF || u32_at(tfhd, 4)? != super::TRACK_ID {
            return Err(BoxError::Invalid);
        }
        let (tfdt, after) = expect(after, b"tfdt")?;
        if u32_at(tfdt, 0)? != 1 << 24 {
            return Err(BoxError::Invalid);
        }
        let base_decode_time = (u64::from(u32_at(tfdt, 4)?) << 32) | u64::from(u32_at(tfdt, 8)?);
        let (trun, _) = expect(after, b"trun")?;
        if u32_at(trun, 0)? != super::TRUN_WRITTEN {
            return Err(BoxError::Invalid);
        }
        let sample_count = u32_at(trun, 4)? as usize;
        let data_offset = u64::from(u32_at(trun, 8)?);
        let trun_samples = trun.get(12..).ok_or(BoxError::Invalid)?;
        if trun_samples.len() / 12 != sample_count || trun_samples.len() % 12 != 0 {
            return Err(BoxError::Invalid);
        }
        Ok((Moof { sequence, base_decode_time, sample_count, data_offset, len, trun_samples }, rest))
    }

    /// Whether a `moof` and an 8-byte `mdat` header of `mdat_len` bytes (header included) that
    /// follows it make one consistent fragment.
    pub fn fragment_fits(moof: &Moof<'_>, mdat_len: u64) -> bool {
        moof.data_offset == moof.len + 8 && mdat_len >= 8 && moof.data_len() == mdat_len - 8
    }

    /// One parsed fragment: its `moof` and the `mdat` payload.
    #[derive(Debug, Clone, Copy)]
    pub struct Fragment<'a> {
        pub moof: Moof<'a>,
        pub data: &'a [u8],
    }

    impl<'a> Fragment<'a> {
        /// The samples of `trun`, each with its bytes from `mdat`.
        pub fn samples(&self) -> impl Iterator<Item = (super::SampleInfo, &'a [u8])> + 'a {
            let mut data = self.data;
            self.moof.samples().map(move |info| {
                let (bytes, rest) = data.split_at((info.size as usize).min(data.len()));
                data = rest;
                (info, bytes)
            })
        }
    }

    /// Parses one `moof` + `mdat` pair as [`super::write_fragment_header`] writes them, checking
    /// that the data offset and the sample sizes match `mdat` exactly; returns the rest.
    pub fn fragment(data: &[u8]) -> Result<(Fragment<'_>, &[u8]), BoxError> {
        let (moof, rest) = moof(data)?;
        let h = header(rest)?;
        let (mdat, after) = expect(rest, b"mdat")?;
        if h.header_len != 8 || !fragment_fits(&moof, (rest.len() - after.len()) as u64) {
            return Err(BoxError::Invalid);
        }
        Ok((Fragment { moof, data: mdat }, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::Sps;

    // 1280x720 constrained baseline SPS and a PPS, as OpenH264 emits them.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
        0x0f, 0x23, 0xc6, 0x0c, 0xa8,
    ];
    const SPS_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn track(sps: &'static [u8]) -> AvcTrack<'static> {
        AvcTrack { width: 1280, height: 720, sps, pps: PPS }
    }

    #[test]
    fn init_is_exactly_init_len_and_round_trips() {
        for sps in [SPS, SPS_HIGH] {
            let t = track(sps);
            let mut buf = [0xa5u8; 1024];
            let n = write_init(&t, &mut buf).unwrap();
            assert_eq!(n, init_len(&t));
            assert_eq!(buf[n], 0xa5, "wrote past its length");
            let (info, rest) = read::init(&buf[..n]).unwrap();
            assert!(rest.is_empty());
            assert_eq!((info.timescale, info.width, info.height), (TIMESCALE, 1280, 720));
            assert_eq!((info.sps, info.pps), (sps, PPS));
            assert!(Sps::parse(info.sps).is_ok());
            assert!(!buf[..n].windows(4).any(|w| w == [0xa5; 4]), "unwritten bytes inside the init segment");
        }
    }

    #[test]
    fn init_refuses_short_buffers_and_bad_parameter_sets() {
        let t = track(SPS);
        let len = init_len(&t);
        let mut buf = [0u8; 1024];
        for n in 0..len {
            assert_eq!(write_init(&t, &mut buf[..n]), Err(InitError::Full), "{n}");
        }
        let bad = AvcTrack { sps: &SPS[..3], ..t };
        assert_eq!(write_init(&bad, &mut buf), Err(InitError::BadParameterSets));
        let bad = AvcTrack { pps: &[], ..t };
        assert_eq!(write_init(&bad, &mut buf), Err(InitError::BadParameterSets));
    }

    #[test]
    fn fragment_header_round_trips_with_flags_and_offsets() {
        let samples = [
            SampleInfo { duration: 3000, size: 5, sync: true },
            SampleInfo { duration: 3003, size: 3, sync: false },
            SampleInfo { duration: 2997, size: 0, sync: false },
        ];
        let mut buf = [0xa5u8; 256];
        let n = write_fragment_header(7, 1 << 33, &samples, &mut buf).unwrap();
        assert_eq!(n, fragment_header_len(samples.len()));
        buf[n..n + 8].copy_from_slice(b"abcdeXYZ");
        let (f, rest) = read::fragment(&buf[..n + 8]).unwrap();
        assert!(rest.is_empty());
        assert_eq!((f.moof.sequence, f.moof.base_decode_time, f.moof.sample_count), (7, 1 << 33, 3));
        let mut got = f.samples();
        assert_eq!(got.next(), Some((samples[0], &b"abcde"[..])));
        assert_eq!(got.next(), Some((samples[1], &b"XYZ"[..])));
        assert_eq!(got.next(), Some((samples[2], &b""[..])));
        assert_eq!(got.next(), None);
        drop(got);
        assert_eq!(f.moof.duration(), 9000);
        // A fragment cut anywhere is not a fragment.
        for cut in 0..n + 8 {
            assert!(read::fragment(&buf[..cut]).is_err(), "{cut}");
        }
        let mut out = [0u8; 256];
        for cut in 0..n {
            assert!(write_fragment_header(7, 0, &samples, &mut out[..cut]).is_err());
        }
    }

    #[test]
    fn avcc_sample_drops_parameter_sets_and_prefixes_lengths() {
        let au =
            [0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 6, 5, 0, 0, 1, 0x65, 0xaa, 0xbb];
        let mut buf = [0xa5u8; 64];
        let n = write_avcc_sample(&au, &mut buf).unwrap();
        assert_eq!(n, avcc_sample_len(&au));
        assert_eq!(&buf[..n], &[0, 0, 0, 2, 6, 5, 0, 0, 0, 3, 0x65, 0xaa, 0xbb]);
        assert_eq!(buf[n], 0xa5);
        assert_eq!(write_avcc_sample(&au, &mut buf[..n - 1]), Err(Full));
    }

    #[test]
    fn headers_with_bad_sizes_are_errors() {
        assert_eq!(read::header(&[0, 0, 0, 7, b'm', b'o', b'o', b'f']), Err(read::BoxError::Invalid));
        assert_eq!(read::header(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0]), Err(read::BoxError::Truncated));
        assert_eq!(read::split(&[0, 0, 0, 9, b'm', b'd', b'a', b't']), Err(read::BoxError::Truncated));
        let (t, body, rest) = read::split(&[0, 0, 0, 0, b'm', b'd', b'a', b't', 1, 2]).unwrap();
        assert_eq!((&t, body, rest), (b"mdat", &[1u8, 2][..], &[][..]));
    }
}
