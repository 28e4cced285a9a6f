//! RTP fixed header (RFC 3550 §5.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers             |
//! |                             ....                              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

/// Length of the header we emit (no CSRC, no extension).
pub const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    Truncated,
    BadVersion,
    BadPadding,
}

impl RtpHeader {
    /// Writes the 12-byte header into `buf[..12]`; returns `None` when `buf` is too short.
    pub fn write_to(&self, buf: &mut [u8]) -> Option<usize> {
        let h = buf.get_mut(..HEADER_LEN)?;
        h[0] = 0x80;
        h[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        h[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Some(HEADER_LEN)
    }

    /// Parses a packet; returns the header and the payload (CSRCs, extension and padding
    /// removed).
    pub fn parse(pkt: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
        if pkt.len() < HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        if pkt[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let cc = usize::from(pkt[0] & 0x0f);
        let mut start = HEADER_LEN + 4 * cc;
        if pkt[0] & 0x10 != 0 {
            let ext = pkt.get(start..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = pkt.len();
        if pkt[0] & 0x20 != 0 {
            let pad = usize::from(pkt[end - 1]);
            if pad == 0 {
                return Err(RtpError::BadPadding);
            }
            end = end.checked_sub(pad).ok_or(RtpError::BadPadding)?;
        }
        if start > end {
            return Err(RtpError::Truncated);
        }
        let header = RtpHeader {
            marker: pkt[1] & 0x80 != 0,
            payload_type: pkt[1] & 0x7f,
            sequence: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
        };
        Ok((header, &pkt[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let h = RtpHeader { marker: true, payload_type: 96, sequence: 0xfffe, timestamp: 0xdead_beef, ssrc: 7 };
        let mut buf = [0xa5u8; 16];
        assert_eq!(h.write_to(&mut buf), Some(12));
        assert_eq!(&buf[..4], &[0x80, 0xe0, 0xff, 0xfe]);
        assert_eq!(&buf[12..], &[0xa5; 4]);
        let (p, payload) = RtpHeader::parse(&buf).unwrap();
        assert_eq!(p, h);
        assert_eq!(payload, &[0xa5; 4]);
        assert_eq!(h.write_to(&mut [0u8; 11]), None);
    }

    #[test]
    fn parse_rejects_bad_packets() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::Truncated));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::BadVersion));
        let mut p = [0u8; 13];
        p[0] = 0xa0; // padding bit with a 0 pad count
        assert_eq!(RtpHeader::parse(&p), Err(RtpError::BadPadding));
        p[12] = 200;
        assert_eq!(RtpHeader::parse(&p), Err(RtpError::BadPadding));
        let mut x = [0u8; 16];
        x[0] = 0x90;
        x[15] = 9; // extension longer than the packet
        assert_eq!(RtpHeader::parse(&x), Err(RtpError::Truncated));
    }
}
