//! RFC 6184 H.264 RTP payload format: packetizer (single NAL unit and FU-A, packetization-mode
//! 1) and a depacketizer (single NAL, STAP-A, FU-A) used to verify round trips.
//!
//! The packetizer is a push/pull state machine: [`Packetizer::push`] one access unit, then call
//! [`Packets::next`] with a caller-owned buffer until it returns `None`. Sequence numbers run on
//! across access units; the marker bit is set on the last packet of each unit (§5.1).
//!
//! ```text
//! FU indicator     FU header
//! +-+-+-+-+-+-+-+-+ +-+-+-+-+-+-+-+-+
//! |F|NRI|  Type=28| |S|E|R|  Type   |
//! +-+-+-+-+-+-+-+-+ +-+-+-+-+-+-+-+-+
//! ```

use super::header::{RtpHeader, HEADER_LEN};
use crate::media::h264::{annex_b, nal_type, AnnexB};
use crate::wbuf::{Full, WBuf};

/// One access unit to packetize.
#[derive(Debug, Clone, Copy)]
pub struct AccessUnit<'a> {
    /// Annex B byte stream of the unit's NAL units.
    pub data: &'a [u8],
    /// RTP timestamp (90 kHz) shared by all its packets.
    pub timestamp: u32,
    /// NAL units sent before the unit's own (SPS and PPS ahead of an IDR that lacks them).
    pub prepend: [Option<&'a [u8]>; 2],
}

/// What [`Packets::next`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    pub len: usize,
    pub sequence: u16,
    pub marker: bool,
}

#[derive(Debug, Clone)]
pub struct Packetizer {
    ssrc: u32,
    payload_type: u8,
    next_sequence: u16,
    max_packet: usize,
}

impl Packetizer {
    /// `max_packet` is the largest RTP packet (header included) to emit; at least 32.
    pub fn new(ssrc: u32, payload_type: u8, first_sequence: u16, max_packet: usize) -> Self {
        Self { ssrc, payload_type, next_sequence: first_sequence, max_packet: max_packet.max(32) }
    }

    /// Sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    #[must_use]
    pub fn push<'a>(&mut self, au: AccessUnit<'a>) -> Packets<'a, '_> {
        let mut p = Packets { pz: self, au, prepend_idx: 0, nals: annex_b(au.data), cur: None, offset: 0 };
        p.cur = p.next_nal();
        p
    }
}

/// The packets of one access unit, drained with [`Packets::next`].
#[derive(Debug)]
pub struct Packets<'a, 'p> {
    pz: &'p mut Packetizer,
    au: AccessUnit<'a>,
    prepend_idx: usize,
    nals: AnnexB<'a>,
    cur: Option<&'a [u8]>,
    /// Bytes of `cur` (after its header byte, for FU-A) already sent.
    offset: usize,
}

impl<'a> Packets<'a, '_> {
    fn next_nal(&mut self) -> Option<&'a [u8]> {
        while self.prepend_idx < self.au.prepend.len() {
            let p = self.au.prepend[self.prepend_idx];
            self.prepend_idx += 1;
            if let Some(nal) = p.filter(|n| !n.is_empty()) {
                return Some(nal);
            }
        }
        self.nals.next()
    }

    fn is_last_nal(&self) -> bool {
        self.au.prepend[self.prepend_idx..].iter().all(|p| p.is_none_or(|n| n.is_empty()))
            && self.nals.clone().next().is_none()
    }

    /// Writes the next packet into `buf` (which must hold `max_packet` bytes).
    pub fn next(&mut self, buf: &mut [u8]) -> Option<Result<PacketInfo, Full>> {
        let nal = self.cur?;
        let max_packet = self.pz.max_packet;
        if buf.len() < max_packet {
            return Some(Err(Full));
        }
        let room = max_packet - HEADER_LEN;
        let payload = &mut buf[HEADER_LEN..max_packet];
        let (len, nal_done) = if self.offset == 0 && nal.len() <= room {
            payload[..nal.len()].copy_from_slice(nal);
            (nal.len(), true)
        } else {
            // FU-A: the NAL header byte is carried in the FU indicator/header.
            let body = &nal[1..];
            let start = self.offset == 0;
            let chunk = (body.len() - self.offset).min(room - 2);
            let end = self.offset + chunk == body.len();
            payload[0] = (nal[0] & 0xe0) | nal_type::FU_A;
            payload[1] = (u8::from(start) << 7) | (u8::from(end) << 6) | (nal[0] & 0x1f);
            payload[2..2 + chunk].copy_from_slice(&body[self.offset..self.offset + chunk]);
            self.offset += chunk;
            (chunk + 2, end)
        };
        let marker = nal_done && self.is_last_nal();
        let sequence = self.pz.next_sequence;
        self.pz.next_sequence = sequence.wrapping_add(1);
        let header = RtpHeader {
            marker,
            payload_type: self.pz.payload_type,
            sequence,
            timestamp: self.au.timestamp,
            ssrc: self.pz.ssrc,
        };
        header.write_to(buf)?;
        if nal_done {
            self.offset = 0;
            self.cur = self.next_nal();
        }
        Some(Ok(PacketInfo { len: HEADER_LEN + len, sequence, marker }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepacketizeError {
    Empty,
    BadStapA,
    /// FU-A continuation without a start, or a start while another fragment is open.
    FragmentOutOfOrder,
    UnsupportedType(u8),
    Full,
}

/// Reassembles RTP payloads into Annex B (4-byte start codes) in a caller-owned buffer.
#[derive(Debug, Default)]
pub struct Depacketizer {
    in_fragment: bool,
}

impl Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the NAL units of one RTP payload to `out`.
    pub fn push(&mut self, payload: &[u8], out: &mut WBuf<'_>) -> Result<(), DepacketizeError> {
        let full = |_: Full| DepacketizeError::Full;
        let first = *payload.first().ok_or(DepacketizeError::Empty)?;
        match first & 0x1f {
            1..=23 => {
                if self.in_fragment {
                    return Err(DepacketizeError::FragmentOutOfOrder);
                }
                out.put(&[0, 0, 0, 1]).map_err(full)?;
                out.put(payload).map_err(full)
            }
            nal_type::STAP_A => {
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err(DepacketizeError::BadStapA);
                    }
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let nal = rest.get(2..2 + n).filter(|n| !n.is_empty()).ok_or(DepacketizeError::BadStapA)?;
                    out.put(&[0, 0, 0, 1]).map_err(full)?;
                    out.put(nal).map_err(full)?;
                    rest = &rest[2 + n..];
                }
                Ok(())
            }
            nal_type::FU_A => {
                let fu = *payload.get(1).ok_or(DepacketizeError::Empty)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start == self.in_fragment {
                    self.in_fragment = false;
                    return Err(DepacketizeError::FragmentOutOfOrder);
                }
                if start {
                    out.put(&[0, 0, 0, 1, (first & 0xe0) | (fu & 0x1f)]).map_err(full)?;
                }
                out.put(&payload[2..]).map_err(full)?;
                self.in_fragment = !end;
                Ok(())
            }
            t => Err(DepacketizeError::UnsupportedType(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 100;

    fn annexb(nals: &[&[u8]], out: &mut WBuf<'_>) {
        for n in nals {
            out.put(&[0, 0, 0, 1]).unwrap();
            out.put(n).unwrap();
        }
    }

    /// Packetizes `au`, checks headers, and depacketizes it back.
    fn round_trip(au: AccessUnit<'_>, first_seq: u16, out: &mut WBuf<'_>) -> usize {
        let mut pz = Packetizer::new(0x1234, 96, first_seq, MAX);
        let mut pkts = pz.push(au);
        let mut de = Depacketizer::new();
        let mut buf = [0xa5u8; MAX];
        let mut n = 0;
        let mut last_marker = false;
        let mut expect_seq = first_seq;
        while let Some(r) = pkts.next(&mut buf) {
            let info = r.unwrap();
            assert!(info.len <= MAX);
            assert!(!last_marker, "marker before the last packet");
            let (h, payload) = RtpHeader::parse(&buf[..info.len]).unwrap();
            assert_eq!(h.sequence, expect_seq);
            assert_eq!(h.timestamp, au.timestamp);
            assert_eq!(h.marker, info.marker);
            expect_seq = expect_seq.wrapping_add(1);
            last_marker = h.marker;
            de.push(payload, out).unwrap();
            n += 1;
        }
        assert!(last_marker, "no marker on the last packet");
        assert_eq!(pz.next_sequence(), expect_seq);
        n
    }

    #[test]
    fn single_nal_units_and_fu_a_round_trip_at_every_size() {
        let big: heapless::Vec<u8, 600> = (0..600u32).map(|i| (i * 7 + 1) as u8).collect();
        for size in 1..big.len() {
            let mut nal = [0u8; 600];
            nal[..size].copy_from_slice(&big[..size]);
            nal[0] = 0x65;
            nal[size - 1] |= 1; // a NAL unit never ends in a zero byte
            let nal = &nal[..size];
            let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1f];
            let sei: &[u8] = &[0x06, 0x05, 0x01];
            let mut input = [0u8; 700];
            let mut w = WBuf::new(&mut input);
            annexb(&[sei, nal], &mut w);
            let len = w.len();
            let au = AccessUnit { data: &input[..len], timestamp: 90_000, prepend: [Some(sps), None] };
            let mut out = [0u8; 800];
            let mut o = WBuf::new(&mut out);
            let pkts = round_trip(au, 65530, &mut o);
            let mut expect = [0u8; 800];
            let mut e = WBuf::new(&mut expect);
            annexb(&[sps, sei, nal], &mut e);
            assert_eq!(o.written(), e.written(), "size {size}");
            let body_room = MAX - HEADER_LEN - 2;
            let nal_pkts = if size <= MAX - HEADER_LEN { 1 } else { (size - 1).div_ceil(body_room) };
            assert_eq!(pkts, 2 + nal_pkts, "size {size}");
        }
    }

    #[test]
    fn fu_a_sets_start_end_and_keeps_nri() {
        let mut nal = [0x33u8; 250];
        nal[0] = 0x45; // NRI 2, IDR
        let mut input = [0u8; 260];
        let mut w = WBuf::new(&mut input);
        annexb(&[&nal], &mut w);
        let len = w.len();
        let mut pz = Packetizer::new(1, 96, 0, MAX);
        let mut pkts = pz.push(AccessUnit { data: &input[..len], timestamp: 3, prepend: [None, None] });
        let mut buf = [0u8; MAX];
        let mut flags: heapless::Vec<(u8, u8, bool), 8> = heapless::Vec::new();
        while let Some(r) = pkts.next(&mut buf) {
            let info = r.unwrap();
            flags.push((buf[12], buf[13], info.marker)).unwrap();
        }
        assert_eq!(&flags[..], &[(0x5c, 0x85, false), (0x5c, 0x05, false), (0x5c, 0x45, true)]);
    }

    #[test]
    fn small_buffer_is_full_not_a_panic() {
        let data = [0, 0, 1, 0x41, 1, 2];
        let mut pz = Packetizer::new(1, 96, 0, MAX);
        let mut pkts = pz.push(AccessUnit { data: &data, timestamp: 0, prepend: [None, None] });
        assert_eq!(pkts.next(&mut [0u8; 10]), Some(Err(Full)));
        let mut empty = pz.push(AccessUnit { data: &[], timestamp: 0, prepend: [None, None] });
        assert_eq!(empty.next(&mut [0u8; MAX]), None);
    }

    #[test]
    fn depacketizer_rejects_broken_fragments_and_stap_a() {
        let mut out = [0u8; 64];
        let mut o = WBuf::new(&mut out);
        let mut de = Depacketizer::new();
        assert_eq!(de.push(&[0x7c, 0x05, 1], &mut o), Err(DepacketizeError::FragmentOutOfOrder));
        assert_eq!(de.push(&[0x78, 0x00, 0x05], &mut o), Err(DepacketizeError::BadStapA));
        assert_eq!(de.push(&[0x78, 0x00, 0x01, 0x67, 0x00, 0x01, 0x68], &mut o), Ok(()));
        assert_eq!(o.written(), &[0, 0, 0, 1, 0x67, 0, 0, 0, 1, 0x68]);
        assert_eq!(de.push(&[], &mut o), Err(DepacketizeError::Empty));
        assert_eq!(de.push(&[0x1e], &mut o), Err(DepacketizeError::UnsupportedType(30)));
    }
}
