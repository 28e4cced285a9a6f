//! Media framing: H.264 access units, RTP H.264 and RTP/JPEG round trips, fMP4.

use super::*;

pub(super) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub(super) fn split_spans(data: &[u8], mut next_chunk: impl FnMut() -> usize) -> Vec<AuSpan> {
    let mut spans = Vec::new();
    let mut sp = AuSplitter::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = next_chunk().clamp(1, rest.len());
        sp.feed(&rest[..n], &mut |a| spans.push(a));
        rest = &rest[n..];
    }
    sp.finish(&mut |a| spans.push(a));
    spans
}

/// `annex_b`, `Sps::parse` on every NAL unit, and `AuSplitter` fed whole, byte by byte and in
/// pseudo-random chunks (seeded from the input), which must all give the same spans.
pub fn h264(data: &[u8]) {
    let nals: Vec<&[u8]> = annex_b(data).collect();
    let mut rebuilt = Vec::new();
    for nal in &nals {
        let _ = offset_in(data, nal);
        assert!(!nal.is_empty() && nal.last() != Some(&0), "NAL {nal:02x?} empty or ends in zero");
        assert!(!nal.windows(3).any(|w| w == [0, 0, 1]), "NAL {nal:02x?} holds a start code");
        if let Ok(sps) = Sps::parse(nal) {
            assert!(sps.width > 0 && sps.height > 0 && sps.width <= 16 * 1024 && sps.height <= 32 * 1024, "{sps:?}");
        }
        let _ = starts_access_unit(nal, false);
        let _ = starts_access_unit(nal, true);
        rebuilt.extend_from_slice(&[0, 0, 0, 1]);
        rebuilt.extend_from_slice(nal);
    }
    let again: Vec<&[u8]> = annex_b(&rebuilt).collect();
    assert_eq!(again, nals, "annex_b of its own output with 4-byte start codes");
    let _ = Sps::parse(data);

    let whole = split_spans(data, || usize::MAX);
    let mut end = None;
    for s in &whole {
        assert!(s.start < s.end && s.end <= data.len() as u64, "{s:?}");
        if let Some(e) = end {
            assert_eq!(s.start, e, "spans are not contiguous");
        }
        end = Some(s.end);
        let unit = &data[s.start as usize..s.end as usize];
        let types: Vec<u8> = annex_b(unit).filter_map(nal_unit_type).collect();
        assert_eq!(s.idr, types.contains(&5), "idr flag of {s:?}, NAL types {types:?}");
        assert_eq!(s.has_sps, types.contains(&7), "has_sps flag of {s:?}, NAL types {types:?}");
    }
    if let Some(e) = end {
        assert_eq!(e, data.len() as u64, "last span does not end the stream");
    }
    assert_eq!(split_spans(data, || 1), whole, "byte-by-byte feeding");
    let mut state =
        0x9e37_79b9_7f4a_7c15 ^ data.len() as u64 ^ data.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    for _ in 0..2 {
        let spans = split_spans(data, || (xorshift(&mut state) % 64) as usize + 1);
        assert_eq!(spans, whole, "chunked feeding");
    }
}

// ---------------------------------------------------------------------------------------------
// rtp_h264_roundtrip

/// Turns fuzz bytes into a NAL unit the Annex B framing can carry: a header whose type is a
/// single-NAL type (1..=23), emulation prevention (`00 00 0x` → `00 00 03 0x`, H.264 §7.4.1),
/// and a non-zero last byte (the RBSP stop bit).
pub(super) fn make_nal(raw: &[u8]) -> Vec<u8> {
    let h = raw.first().copied().unwrap_or(0x65);
    let t = match h & 0x1f {
        t @ 1..=23 => t,
        t => 1 + t % 23,
    };
    let mut nal = vec![(h & 0xe0) | t];
    let mut zeros = 0;
    for &b in raw.iter().skip(1) {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    if nal.last() == Some(&0) {
        nal.push(0x80);
    }
    nal
}

/// Access units of arbitrary NAL units (and SPS/PPS to prepend) through `Packetizer` with an
/// arbitrary `max_packet` and `Depacketizer` back: the output is exactly the input NAL units,
/// packets fit, sequence numbers run on without gaps, the marker is on each unit's last packet
/// only, and a short output buffer is `Full` without losing a packet.
pub fn rtp_h264_roundtrip(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_packet = 32 + usize::from(c.u16()) % (limits::MAX_RTP_PACKET - 31);
    let first_seq = c.u16();
    let ssrc = c.u32();
    let pt = c.u8() & 0x7f;
    let mut pz = Packetizer::new(ssrc, pt, first_seq, max_packet);
    assert_eq!(pz.max_packet(), max_packet);
    let mut seq = first_seq;
    let mut de = Depacketizer::new();
    let units = 1 + c.u8() % 4;
    for _ in 0..units {
        let timestamp = c.u32();
        let flags = c.u8();
        let prepend: Vec<Vec<u8>> = (0..2)
            .map(|i| match (flags >> (2 * i)) & 3 {
                0 | 3 => Vec::new(), // none, or an empty one (skipped)
                1 => make_nal(&[0x67, 0x42, 0xc0, 0x1f]),
                _ => make_nal(c.short()),
            })
            .collect();
        let count = usize::from(c.u8() % 6);
        let nals: Vec<Vec<u8>> = (0..count).map(|_| make_nal(c.long())).collect();
        let mut annexb = Vec::new();
        if flags & 0x10 != 0 {
            annexb.extend_from_slice(&[0xff, 0x12]); // bytes before the first start code are skipped
        }
        for (i, n) in nals.iter().enumerate() {
            let three = flags & 0x20 != 0 && i % 2 == 1;
            annexb.extend_from_slice(if three { &[0, 0, 1] } else { &[0, 0, 0, 1] });
            annexb.extend_from_slice(n);
            if flags & 0x40 != 0 {
                annexb.extend_from_slice(&[0, 0]); // trailing_zero_8bits
            }
        }
        let expect_nals: Vec<&[u8]> =
            prepend.iter().filter(|p| !p.is_empty()).chain(nals.iter()).map(Vec::as_slice).collect();
        let mut expect = Vec::new();
        for n in &expect_nals {
            expect.extend_from_slice(&[0, 0, 0, 1]);
            expect.extend_from_slice(n);
        }
        let au = AccessUnit {
            data: &annexb,
            timestamp,
            prepend: [
                (flags & 3 != 0).then_some(prepend[0].as_slice()),
                (flags & 12 != 0).then_some(prepend[1].as_slice()),
            ],
        };

        let mut out = vec![0u8; expect.len() + 64];
        let mut w = WBuf::new(&mut out);
        let mut pkts = pz.push(au);
        let mut buf = vec![0xa5u8; max_packet];
        let mut short = vec![0u8; max_packet - 1];
        let mut n = 0;
        let mut marker_seen = false;
        loop {
            if n == 0 || flags & 0x80 != 0 {
                match pkts.next(&mut short) {
                    None => {}
                    Some(Err(Full)) => {}
                    Some(Ok(p)) => panic!("packet {p:?} written into a buffer below max_packet"),
                }
            }
            buf.fill(0xa5);
            let Some(r) = pkts.next(&mut buf) else { break };
            let info = r.expect("next into a max_packet buffer");
            assert!(info.len <= max_packet && info.len > HEADER_LEN, "packet of {} bytes", info.len);
            assert!(!marker_seen, "a packet after the marker");
            let (h, payload) = RtpHeader::parse(&buf[..info.len]).expect("our RTP header parses");
            assert_eq!(
                (h.sequence, h.timestamp, h.ssrc, h.payload_type, h.marker),
                (seq, timestamp, ssrc, pt, info.marker)
            );
            assert_eq!(info.sequence, seq);
            seq = seq.wrapping_add(1);
            marker_seen = info.marker;
            de.push(payload, &mut w).unwrap_or_else(|e| panic!("depacketize packet {n}: {e:?}"));
            n += 1;
        }
        assert_eq!(n > 0, !expect_nals.is_empty());
        assert_eq!(marker_seen, n > 0, "no marker on the last packet");
        assert_eq!(pz.next_sequence(), seq);
        assert!(w.written() == expect.as_slice(), "depacketize(packetize(x)) != x");
    }
}

// ---------------------------------------------------------------------------------------------
// cmdline

/// RTP/JPEG: any input the JPEG parser accepts packetizes at any MTU and depacketizes back to a
/// JPEG with the same scan bytes and quantization tables; the depacketizer never panics on raw
/// payloads. The input's first two bytes pick the packet size.
pub fn rtp_jpeg_roundtrip(data: &[u8]) {
    use uavstream::rtp::jpeg::{self, Depacketizer, Packetizer};
    let (max, jpeg_bytes) = match data {
        [a, b, rest @ ..] => (256 + usize::from(u16::from_le_bytes([*a, *b])) % 1300, rest),
        _ => return,
    };
    let mut de = Depacketizer::new();
    let mut junk = vec![0u8; 4096];
    let _ = de.push(jpeg_bytes, &mut WBuf::new(&mut junk));
    let Ok(frame) = jpeg::parse(jpeg_bytes) else { return };
    let mut pz = Packetizer::new(1, 0, max);
    let mut pkts = pz.push(frame, 0);
    let mut out = vec![0u8; jpeg_bytes.len() + 2048];
    let mut w = WBuf::new(&mut out);
    let mut de = Depacketizer::new();
    let mut buf = vec![0u8; max];
    let mut marker = false;
    while let Some(r) = pkts.next(&mut buf) {
        let info = r.expect("a max_packet buffer always fits a packet");
        assert!(!marker && info.len <= max);
        let (h, payload) = RtpHeader::parse(&buf[..info.len]).expect("valid RTP");
        de.push(payload, &mut w).expect("our own packets depacketize");
        marker = h.marker;
    }
    assert!(marker, "no marker bit on the last packet");
    de.finish(&mut w).expect("EOI fits");
    let len = w.len();
    let back = jpeg::parse(&out[..len]).expect("the rebuilt JPEG parses");
    assert_eq!(back.scan, frame.scan, "scan bytes differ after the round trip");
    assert_eq!(back.qtables, frame.qtables, "quantization tables differ");
    assert_eq!((back.width, back.height, back.rtp_type()), (frame.width, frame.height, frame.rtp_type()));
}

// ---------------------------------------------------------------------------------------------
// fmp4_roundtrip

/// The fMP4 reader on arbitrary bytes (a crashed recorder's file is untrusted input) never
/// panics; then write → parse round trips from structured input: an init segment gives back
/// its track, a fragment its sequence, decode time and samples byte for byte, an Annex B unit
/// its NAL units (less parameter sets, AUD, filler) with 4-byte lengths; every writer refuses
/// a short buffer with an error and never writes past its exact length.
pub fn fmp4_roundtrip(data: &[u8]) {
    // Untrusted bytes: walk them as a recorded file would be walked.
    if let Ok((_, mut rest)) = mp4read::init(data) {
        while let Ok((f, r)) = mp4read::fragment(rest) {
            let total: usize = f.samples().map(|(_, b)| b.len()).sum();
            assert_eq!(total, f.data.len(), "samples cover mdat exactly");
            assert!(r.len() < rest.len());
            rest = r;
        }
    }
    if let Ok(h) = mp4read::header(data) {
        assert!(h.header_len == 8 || h.header_len == 16);
    }
    let _ = mp4read::moof(data);

    let mut c = Cursor::new(data);
    let (width, height) = (c.u16(), c.u16());
    let sps = c.short();
    let pps = c.short();
    let cut = usize::from(c.u16());
    let track = AvcTrack { width, height, sps, pps };
    let len = fmp4::init_len(&track);
    let mut buf = vec![0xa5u8; len + 16];
    match fmp4::write_init(&track, &mut buf) {
        Ok(n) => {
            assert_eq!(n, len, "init_len");
            assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past init_len");
            let (info, rest) = mp4read::init(&buf[..n]).expect("own init segment parses");
            assert!(rest.is_empty());
            assert_eq!((info.width, info.height, info.sps, info.pps), (width, height, sps, pps));
            assert_eq!(info.timescale, fmp4::TIMESCALE);
            if cut < n {
                assert_eq!(fmp4::write_init(&track, &mut buf[..cut]), Err(InitError::Full));
            }
        }
        Err(InitError::BadParameterSets) => assert!(sps.len() < 4 || pps.is_empty()),
        Err(InitError::Full) => panic!("init segment did not fit init_len"),
    }

    let sequence = c.u32();
    let base = c.u64();
    let count = usize::from(c.u8() % 48);
    let mut samples = Vec::new();
    let mut payload = Vec::new();
    for _ in 0..count {
        let duration = c.u32();
        let size = u32::from(c.u8());
        let sync = c.bool();
        samples.push(SampleInfo { duration, size, sync });
        payload.extend((0..size).map(|i| i as u8 ^ sequence as u8));
    }
    let header = fmp4::fragment_header_len(samples.len());
    let mut frag = vec![0xa5u8; header + 8];
    let n = fmp4::write_fragment_header(sequence, base, &samples, &mut frag).expect("fragment header fits its length");
    assert_eq!(n, header);
    assert!(frag[n..].iter().all(|&b| b == 0xa5), "wrote past fragment_header_len");
    if cut < n {
        assert!(fmp4::write_fragment_header(sequence, base, &samples, &mut vec![0; cut]).is_err());
    }
    frag.truncate(n);
    frag.extend_from_slice(&payload);
    let (f, rest) = mp4read::fragment(&frag).expect("own fragment parses");
    assert!(rest.is_empty());
    assert_eq!((f.moof.sequence, f.moof.base_decode_time, f.moof.sample_count), (sequence, base, count));
    let mut at = 0;
    for ((info, bytes), want) in f.samples().zip(&samples) {
        assert_eq!(info, *want);
        assert_eq!(bytes, &payload[at..at + want.size as usize]);
        at += want.size as usize;
    }
    for cut in [0, n / 2, frag.len() - 1] {
        if cut < frag.len() {
            assert!(mp4read::fragment(&frag[..cut]).is_err(), "a cut fragment parses");
        }
    }

    let au = c.bytes(usize::MAX);
    let len = fmp4::avcc_sample_len(au);
    let mut out = vec![0xa5u8; len + 4];
    let n = fmp4::write_avcc_sample(au, &mut out).expect("sample fits avcc_sample_len");
    assert_eq!(n, len);
    let keep: Vec<&[u8]> = annex_b(au).filter(|n| !matches!(nal_unit_type(n), Some(7 | 8 | 9 | 12))).collect();
    let mut rest = &out[..n];
    for nal in keep {
        let l = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert_eq!(&rest[4..4 + l], nal);
        rest = &rest[4 + l..];
    }
    assert!(rest.is_empty());
    if len > 0 {
        assert!(fmp4::write_avcc_sample(au, &mut out[..len - 1]).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// rtcp_feedback
