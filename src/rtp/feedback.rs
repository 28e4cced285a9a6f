//! RTCP feedback messages (RFC 4585 §6, RFC 5104 §4.3.1): generic NACK, PLI and FIR, as typed
//! views over a received packet's body, and writers for them (tests, benchmarks, the fuzzer's
//! round trips).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|   FMT   |       PT      |          length               |
//! |                  SSRC of packet sender                        |
//! |                  SSRC of media source                         |
//! :            Feedback Control Information (FCI)                 :
//!
//! Generic NACK (PT=205 RTPFB, FMT=1), FCI = one or more of:
//! |            PID                |             BLP               |
//!   PID: a lost sequence number; BLP bit i (LSB = 0): PID + i + 1 lost too.
//! PLI (PT=206 PSFB, FMT=1): no FCI.
//! FIR (PT=206 PSFB, FMT=4), FCI = one or more of:
//! |                              SSRC                             |
//! | Seq nr.       |    Reserved                                   |
//! ```
//!
//! Invariants: the views only ever index inside the body they were built from (its length was
//! checked by the compound parser: a multiple of 4, or 8 for FIR); iterators never panic.

use super::rtcp::{parse_compound, RtcpPacket};
use crate::wbuf::{Full, WBuf};

/// Transport-layer feedback (RFC 4585 §6.2).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.3).
pub const PT_PSFB: u8 = 206;
/// RTPFB FMT of the generic NACK.
pub const FMT_NACK: u8 = 1;
/// PSFB FMT of the Picture Loss Indication.
pub const FMT_PLI: u8 = 1;
/// PSFB FMT of the Full Intra Request (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The FCI of a generic NACK: `(PID, BLP)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackItems<'a> {
    pub(super) data: &'a [u8],
}

impl<'a> NackItems<'a> {
    /// Every sequence number the NACK reports lost, in packet order (a PID, then its BLP bits).
    pub fn seqs(self) -> NackSeqs<'a> {
        NackSeqs { items: self, current: None }
    }
}

impl Iterator for NackItems<'_> {
    /// `(PID, BLP)`.
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let b = self.data.get(..4)?;
        self.data = &self.data[4..];
        Some((u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])))
    }
}

/// The sequence numbers of a generic NACK, flattened.
#[derive(Debug, Clone)]
pub struct NackSeqs<'a> {
    items: NackItems<'a>,
    /// The item being expanded: its PID and the BLP bits not yielded yet; `None` = PID next.
    current: Option<(u16, u16, bool)>,
}

impl Iterator for NackSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            match self.current {
                None => {
                    let (pid, blp) = self.items.next()?;
                    self.current = Some((pid, blp, true));
                }
                Some((pid, _, true)) => {
                    if let Some(c) = self.current.as_mut() {
                        c.2 = false;
                    }
                    return Some(pid);
                }
                Some((_, 0, false)) => self.current = None,
                Some((pid, blp, false)) => {
                    let bit = blp.trailing_zeros() as u16;
                    self.current = Some((pid, blp & (blp - 1), false));
                    return Some(pid.wrapping_add(bit + 1));
                }
            }
        }
    }
}

/// The FCI of a FIR: `(SSRC, command sequence number)` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntries<'a> {
    pub(super) data: &'a [u8],
}

impl Iterator for FirEntries<'_> {
    /// `(SSRC of the media sender asked for a decoder refresh, command sequence number)`.
    type Item = (u32, u8);

    fn next(&mut self) -> Option<(u32, u8)> {
        let b = self.data.get(..8)?;
        self.data = &self.data[8..];
        Some((word(b, 0), b[4]))
    }
}

/// Every sequence number the generic NACKs of a compound report lost about `media_ssrc`, at
/// most `limit` of them (a 1500-byte compound can name thousands). A malformed compound names
/// none: it is ignored as a whole, as the session core does.
pub fn nacked_seqs(compound: &[u8], media_ssrc: u32, limit: usize) -> impl Iterator<Item = u16> + '_ {
    let valid = parse_compound(compound).all(|p| p.is_ok());
    parse_compound(compound)
        .filter(move |_| valid)
        .filter_map(move |p| match p {
            Ok(RtcpPacket::Nack { media_ssrc: m, items, .. }) if m == media_ssrc => Some(items.seqs()),
            _ => None,
        })
        .flatten()
        .take(limit)
}

fn put_fb_header(w: &mut WBuf<'_>, fmt: u8, pt: u8, fci_words: usize, sender: u32, media: u32) -> Result<(), Full> {
    let words = u16::try_from(2 + fci_words).map_err(|_| Full)?;
    w.put_u8(0x80 | (fmt & 0x1f))?;
    w.put_u8(pt)?;
    w.put_u16(words)?;
    w.put_u32(sender)?;
    w.put_u32(media)
}

/// Writes a generic NACK for `lost` (each run of up to 17 numbers from a PID becomes one FCI
/// entry; the order of `lost` decides the PIDs); returns its length.
pub fn write_nack(sender: u32, media: u32, lost: &[u16], buf: &mut [u8]) -> Result<usize, Full> {
    // Count the entries first: the header carries the length.
    let entries = nack_entries(lost).count();
    let mut w = WBuf::new(buf);
    put_fb_header(&mut w, FMT_NACK, PT_RTPFB, entries, sender, media)?;
    for (pid, blp) in nack_entries(lost) {
        w.put_u16(pid)?;
        w.put_u16(blp)?;
    }
    Ok(w.len())
}

fn nack_entries(lost: &[u16]) -> impl Iterator<Item = (u16, u16)> + '_ {
    let mut rest = lost;
    core::iter::from_fn(move || {
        let (&pid, tail) = rest.split_first()?;
        let mut blp = 0u16;
        let mut n = 0;
        for &s in tail {
            let d = s.wrapping_sub(pid);
            if !(1..=16).contains(&d) {
                break;
            }
            blp |= 1 << (d - 1);
            n += 1;
        }
        rest = &tail[n..];
        Some((pid, blp))
    })
}

/// Writes a PLI; returns its length (12).
pub fn write_pli(sender: u32, media: u32, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = WBuf::new(buf);
    put_fb_header(&mut w, FMT_PLI, PT_PSFB, 0, sender, media)?;
    Ok(w.len())
}

/// Writes a FIR asking `media` for a decoder refresh (command `seq`); returns its length (20).
pub fn write_fir(sender: u32, media: u32, seq: u8, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = WBuf::new(buf);
    // RFC 5104 §4.3.1.2: the common header's media source SSRC is not used (0).
    put_fb_header(&mut w, FMT_FIR, PT_PSFB, 2, sender, 0)?;
    w.put_u32(media)?;
    w.put_u32(u32::from(seq) << 24)?;
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::rtcp::RtcpError;

    #[test]
    fn nack_from_gstreamer_expands_pid_and_blp() {
        // RR + SDES + generic NACK as GStreamer's rtpsession sends it (one FCI entry: 1000 and
        // the BLP bits 0 and 2: 1001, 1003).
        let pkt: &[u8] = &[
            0x80, 0xc9, 0x00, 0x01, 0x11, 0x22, 0x33, 0x44, // RR, no blocks
            0x81, 0xcd, 0x00, 0x03, 0x11, 0x22, 0x33, 0x44, 0xab, 0xcd, 0xef, 0x01, 0x03, 0xe8, 0x00, 0x05,
        ];
        let pkts: heapless::Vec<_, 4> = parse_compound(pkt).collect();
        assert_eq!(pkts.len(), 2);
        match pkts[1] {
            Ok(RtcpPacket::Nack { sender_ssrc, media_ssrc, items }) => {
                assert_eq!((sender_ssrc, media_ssrc), (0x1122_3344, 0xabcd_ef01));
                let seqs: heapless::Vec<u16, 8> = items.seqs().collect();
                assert_eq!(&seqs[..], &[1000, 1001, 1003]);
            }
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nack_round_trip_wraps_and_splits_runs() {
        let lost = [65534u16, 65535, 0, 15, 40, 41];
        let mut buf = [0xa5u8; 64];
        let n = write_nack(1, 2, &lost, &mut buf).unwrap();
        // 65534 covers up to 14 (16 after it): 15 needs a new entry, 40 too.
        assert_eq!(n, 12 + 3 * 4);
        let Some(Ok(RtcpPacket::Nack { items, .. })) = parse_compound(&buf[..n]).next() else { panic!() };
        let seqs: heapless::Vec<u16, 8> = items.seqs().collect();
        assert_eq!(&seqs[..], &lost);
        // A full BLP yields 17 numbers.
        let all: heapless::Vec<u16, 17> = (100..117).collect();
        let n = write_nack(1, 2, &all, &mut buf).unwrap();
        assert_eq!(n, 16);
        let Some(Ok(RtcpPacket::Nack { items, .. })) = parse_compound(&buf[..n]).next() else { panic!() };
        assert!(items.seqs().eq(100..117));
        assert_eq!(write_nack(1, 2, &lost, &mut [0u8; 20]), Err(Full));
    }

    #[test]
    fn nacked_seqs_keeps_our_ssrc_and_the_limit_and_ignores_malformed_compounds() {
        let mut buf = [0u8; 128];
        let a = write_nack(1, 0xaa, &[10, 11], &mut buf).unwrap();
        let b = write_nack(1, 0xbb, &[20], &mut buf[a..]).unwrap();
        let c = write_nack(1, 0xaa, &[30, 31, 32], &mut buf[a + b..]).unwrap();
        let all = &buf[..a + b + c];
        assert!(nacked_seqs(all, 0xaa, 100).eq([10, 11, 30, 31, 32]));
        assert!(nacked_seqs(all, 0xaa, 3).eq([10, 11, 30]));
        assert_eq!(nacked_seqs(&buf[..a + b + c - 1], 0xaa, 100).count(), 0);
    }

    #[test]
    fn pli_and_fir_round_trip() {
        let mut buf = [0xa5u8; 64];
        let n = write_pli(7, 9, &mut buf).unwrap();
        assert_eq!(n, 12);
        assert_eq!(parse_compound(&buf[..n]).next(), Some(Ok(RtcpPacket::Pli { sender_ssrc: 7, media_ssrc: 9 })));
        let n = write_fir(7, 9, 3, &mut buf).unwrap();
        assert_eq!(n, 20);
        match parse_compound(&buf[..n]).next() {
            Some(Ok(RtcpPacket::Fir { sender_ssrc: 7, entries })) => {
                assert!(entries.eq([(9u32, 3u8)]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_feedback_is_an_error_never_a_panic() {
        // NACK without a media SSRC; NACK without FCI; FIR with half an entry.
        assert_eq!(parse_compound(&[0x81, 205, 0, 1, 0, 0, 0, 1]).next(), Some(Err(RtcpError::BadLength)));
        assert_eq!(parse_compound(&[0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]).next(), Some(Err(RtcpError::BadLength)));
        let fir = [0x84, 206, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(parse_compound(&fir).next(), Some(Err(RtcpError::BadLength)));
        // Unknown feedback types are skipped like any other packet.
        assert_eq!(parse_compound(&[0x8f, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]).next(), Some(Ok(RtcpPacket::Other(206))));
        // Every cut of a valid NACK is an error or a shorter valid packet, never a panic.
        let mut buf = [0u8; 32];
        let n = write_nack(1, 2, &[5, 6, 30], &mut buf).unwrap();
        for cut in 0..n {
            for p in parse_compound(&buf[..cut]) {
                if let Ok(RtcpPacket::Nack { items, .. }) = p {
                    let _ = items.seqs().count();
                }
            }
        }
    }
}
