//! RTCP (RFC 3550 §6): sender reports, SDES CNAME and BYE that we send; receiver report blocks
//! that clients send us, parsed into loss and jitter figures; and the feedback messages clients
//! send (generic NACK, PLI, FIR: see [`super::feedback`]).
//!
//! Invariant: parsing borrows from the input, never allocates and never panics; a malformed
//! packet ends the walk of its compound with one error (what came before it stays valid).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|    RC   |   PT=SR=200   |             length            |
//! |                         SSRC of sender                        |
//! |              NTP timestamp, most significant word             |
//! |             NTP timestamp, least significant word             |
//! |                         RTP timestamp                         |
//! |                     sender's packet count                     |
//! |                      sender's octet count                     |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |                 SSRC_1 (SSRC of first source)                 |  report
//! | fraction lost |       cumulative number of packets lost       |  block
//! |           extended highest sequence number received           |  (24 B)
//! |                      interarrival jitter                      |
//! |                         last SR (LSR)                         |
//! |                   delay since last SR (DLSR)                  |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! ```

use super::feedback::{FirEntries, NackItems, FMT_FIR, FMT_NACK, FMT_PLI, PT_PSFB, PT_RTPFB};
use crate::wbuf::{Full, WBuf};

pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;

/// What a sender report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    /// NTP timestamp (RFC 5905 format: seconds since 1900 << 32 | fraction).
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about (our SSRC).
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, out of 256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (signed 24-bit).
    pub cumulative_lost: i32,
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

fn put_header(w: &mut WBuf<'_>, count: u8, pt: u8, words_after: u16) -> Result<(), Full> {
    w.put_u8(0x80 | (count & 0x1f))?;
    w.put_u8(pt)?;
    w.put_u16(words_after)
}

/// Writes a compound `SR` + `SDES(CNAME)` packet; returns its length.
pub fn write_sender_report(sr: &SenderReport, cname: &str, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = WBuf::new(buf);
    put_header(&mut w, 0, PT_SR, 6)?;
    w.put_u32(sr.ssrc)?;
    w.put_u32((sr.ntp >> 32) as u32)?;
    w.put_u32(sr.ntp as u32)?;
    w.put_u32(sr.rtp_timestamp)?;
    w.put_u32(sr.packet_count)?;
    w.put_u32(sr.octet_count)?;
    write_sdes(&mut w, sr.ssrc, cname)?;
    Ok(w.len())
}

fn write_sdes(w: &mut WBuf<'_>, ssrc: u32, cname: &str) -> Result<(), Full> {
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    // SSRC + CNAME item (2 + len) + END, padded to a 32-bit boundary.
    let chunk = 4 + 2 + cname.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    put_header(w, 1, PT_SDES, (padded / 4) as u16)?;
    w.put_u32(ssrc)?;
    w.put_u8(1)?;
    w.put_u8(cname.len() as u8)?;
    w.put(cname)?;
    for _ in chunk - 1..padded {
        w.put_u8(0)?;
    }
    Ok(())
}

/// Writes a compound `SR` + `SDES` + `BYE` packet (RFC 3550 §6.6: a BYE goes in a compound).
pub fn write_bye(sr: &SenderReport, cname: &str, buf: &mut [u8]) -> Result<usize, Full> {
    let n = write_sender_report(sr, cname, buf)?;
    let mut w = WBuf::new(&mut buf[n..]);
    put_header(&mut w, 1, PT_BYE, 1)?;
    w.put_u32(sr.ssrc)?;
    Ok(n + w.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    Truncated,
    BadVersion,
    BadLength,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport {
        report: SenderReport,
        blocks: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: ReportBlocks<'a>,
    },
    Bye,
    /// Generic NACK (RFC 4585 §6.2.1).
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        items: NackItems<'a>,
    },
    /// Picture Loss Indication (RFC 4585 §6.3.1).
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    /// Full Intra Request (RFC 5104 §4.3.1).
    Fir {
        sender_ssrc: u32,
        entries: FirEntries<'a>,
    },
    /// SDES, APP, other feedback and anything else we do not interpret.
    Other(u8),
}

/// Report blocks, parsed lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    data: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let b = self.data.get(..24)?;
        self.data = &self.data[24..];
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = word(4) & 0x00ff_ffff;
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        })
    }
}

/// Iterator over the packets of a compound RTCP packet. Stops at the first malformed packet
/// (yielding its error once).
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

pub fn parse_compound(data: &[u8]) -> Compound<'_> {
    Compound { rest: data }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.parse_one();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl<'a> Compound<'a> {
    fn parse_one(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let d = self.rest;
        if d.len() < 4 {
            return Err(RtcpError::Truncated);
        }
        if d[0] >> 6 != 2 {
            return Err(RtcpError::BadVersion);
        }
        let count = usize::from(d[0] & 0x1f);
        let pt = d[1];
        let len = (usize::from(u16::from_be_bytes([d[2], d[3]])) + 1) * 4;
        let pkt = d.get(..len).ok_or(RtcpError::Truncated)?;
        self.rest = &d[len..];
        let mut body = &pkt[4..];
        if pkt[0] & 0x20 != 0 {
            let pad = usize::from(pkt[len - 1]);
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::BadLength);
            }
            body = &body[..body.len() - pad];
        }
        let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        match pt {
            PT_SR => {
                if body.len() < 24 + 24 * count {
                    return Err(RtcpError::BadLength);
                }
                let report = SenderReport {
                    ssrc: word(body, 0),
                    ntp: (u64::from(word(body, 4)) << 32) | u64::from(word(body, 8)),
                    rtp_timestamp: word(body, 12),
                    packet_count: word(body, 16),
                    octet_count: word(body, 20),
                };
                Ok(RtcpPacket::SenderReport { report, blocks: ReportBlocks { data: &body[24..24 + 24 * count] } })
            }
            PT_RR => {
                if body.len() < 4 + 24 * count {
                    return Err(RtcpError::BadLength);
                }
                Ok(RtcpPacket::ReceiverReport {
                    ssrc: word(body, 0),
                    blocks: ReportBlocks { data: &body[4..4 + 24 * count] },
                })
            }
            PT_BYE => Ok(RtcpPacket::Bye),
            PT_RTPFB | PT_PSFB => {
                // `count` is the FMT here. Sender and media SSRC come first.
                let fmt = count as u8;
                if body.len() < 8 {
                    return Err(RtcpError::BadLength);
                }
                let (sender_ssrc, media_ssrc) = (word(body, 0), word(body, 4));
                let fci = &body[8..];
                match (pt, fmt) {
                    // (Padding may leave a body that is not whole words.)
                    (PT_RTPFB, FMT_NACK) if fci.is_empty() || fci.len() % 4 != 0 => Err(RtcpError::BadLength),
                    (PT_RTPFB, FMT_NACK) => {
                        Ok(RtcpPacket::Nack { sender_ssrc, media_ssrc, items: NackItems { data: fci } })
                    }
                    (PT_PSFB, FMT_PLI) => Ok(RtcpPacket::Pli { sender_ssrc, media_ssrc }),
                    (PT_PSFB, FMT_FIR) if fci.is_empty() || fci.len() % 8 != 0 => Err(RtcpError::BadLength),
                    (PT_PSFB, FMT_FIR) => Ok(RtcpPacket::Fir { sender_ssrc, entries: FirEntries { data: fci } }),
                    _ => Ok(RtcpPacket::Other(pt)),
                }
            }
            other => Ok(RtcpPacket::Other(other)),
        }
    }
}

/// Converts a duration since the Unix epoch into an NTP timestamp.
pub fn ntp_from_unix(secs: u64, nanos: u32) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let frac = (u64::from(nanos) << 32) / 1_000_000_000;
    ((secs + UNIX_TO_NTP) << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_round_trip_and_padding() {
        let sr = SenderReport {
            ssrc: 0xabcd,
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 9,
            packet_count: 10,
            octet_count: 11,
        };
        for cname in ["", "a", "ab", "abc", "uavstream@host"] {
            let mut buf = [0xa5u8; 128];
            let n = write_bye(&sr, cname, &mut buf).unwrap();
            assert_eq!(n % 4, 0);
            let pkts: heapless::Vec<_, 4> = parse_compound(&buf[..n]).collect();
            assert_eq!(pkts.len(), 3, "{cname}");
            match pkts[0] {
                Ok(RtcpPacket::SenderReport { report, mut blocks }) => {
                    assert_eq!(report, sr);
                    assert!(blocks.next().is_none());
                }
                ref other => panic!("{other:?}"),
            }
            assert_eq!(pkts[1], Ok(RtcpPacket::Other(PT_SDES)));
            assert_eq!(pkts[2], Ok(RtcpPacket::Bye));
        }
        assert_eq!(write_sender_report(&sr, "x", &mut [0u8; 30]), Err(Full));
    }

    #[test]
    fn receiver_report_from_ffmpeg() {
        // RR + SDES as ffmpeg's RTP receiver sends it (one report block).
        let rr: &[u8] = &[
            0x81, 0xc9, 0x00, 0x07, 0x5e, 0x2f, 0x41, 0x0a, 0x00, 0x00, 0xab, 0xcd, 0x05, 0xff, 0xff, 0xfe, 0x00, 0x01,
            0x10, 0x20, 0x00, 0x00, 0x01, 0x2c, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x80, 0x00, 0x81, 0xca, 0x00, 0x02,
            0x5e, 0x2f, 0x41, 0x0a, 0x01, 0x00, 0x00, 0x00,
        ];
        let mut it = parse_compound(rr);
        match it.next() {
            Some(Ok(RtcpPacket::ReceiverReport { ssrc, mut blocks })) => {
                assert_eq!(ssrc, 0x5e2f_410a);
                let b = blocks.next().unwrap();
                assert_eq!(b.ssrc, 0xabcd);
                assert_eq!(b.fraction_lost, 5);
                assert_eq!(b.cumulative_lost, -2);
                assert_eq!(b.highest_sequence, 0x0001_1020);
                assert_eq!(b.jitter, 300);
                assert!(blocks.next().is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(it.next(), Some(Ok(RtcpPacket::Other(PT_SDES))));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn malformed_compounds_are_errors_at_every_cut() {
        let mut buf = [0u8; 64];
        let sr = SenderReport { ssrc: 1, ntp: 2, rtp_timestamp: 3, packet_count: 4, octet_count: 5 };
        let n = write_sender_report(&sr, "c", &mut buf).unwrap();
        for cut in 1..n {
            let ok = parse_compound(&buf[..cut]).all(|p| p.is_ok());
            // Cuts on a packet boundary parse; every other cut must report an error.
            assert_eq!(ok, cut == 28, "cut {cut}");
        }
        assert_eq!(parse_compound(&[0x40, 200, 0, 0]).next(), Some(Err(RtcpError::BadVersion)));
        // RC says one block but the length holds none.
        assert_eq!(parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]).next(), Some(Err(RtcpError::BadLength)));
    }

    #[test]
    fn ntp_epoch() {
        assert_eq!(ntp_from_unix(0, 500_000_000), (2_208_988_800u64 << 32) | 0x8000_0000);
    }
}
