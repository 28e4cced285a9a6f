//! RTCP: compound packets, receiver reports, NACK/PLI/FIR feedback and retransmission.

use super::*;

/// Iterates every packet and report block; an error ends the iteration.
pub(super) fn walk_rtcp(data: &[u8]) {
    let mut packets = 0;
    let mut errored = false;
    for p in parse_compound(data) {
        assert!(!errored, "a packet after an error");
        packets += 1;
        assert!(packets <= data.len() / 4 + 1, "more packets than words");
        match p {
            Ok(RtcpPacket::SenderReport { blocks, .. }) | Ok(RtcpPacket::ReceiverReport { blocks, .. }) => {
                assert!(blocks.count() <= 31);
            }
            Ok(_) => {}
            Err(_) => errored = true,
        }
    }
}

/// `parse_compound` over the raw input, then SR/SDES/BYE written with fields taken from the
/// input parse back to the same fields, and a receiver report encoded by hand (RFC 3550 §6.4.2)
/// parses to its fields.
pub fn rtcp(data: &[u8]) {
    walk_rtcp(data);

    let mut c = Cursor::new(data);
    let sr = SenderReport {
        ssrc: c.u32(),
        ntp: c.u64(),
        rtp_timestamp: c.u32(),
        packet_count: c.u32(),
        octet_count: c.u32(),
    };
    let small = usize::from(c.u16()) % 128;
    let cname_raw = c.long();
    let cname = String::from_utf8_lossy(cname_raw);
    for bye in [false, true] {
        let write = |buf: &mut [u8]| {
            if bye {
                rtcp::write_bye(&sr, &cname, buf)
            } else {
                rtcp::write_sender_report(&sr, &cname, buf)
            }
        };
        let mut buf = vec![0xa5u8; 2048];
        let n = write(&mut buf).expect("SR fits 2048 bytes");
        assert_eq!(n % 4, 0);
        let mut small_buf = vec![0xa5u8; small];
        match write(&mut small_buf) {
            Ok(m) => assert_eq!(&small_buf[..m], &buf[..n]),
            Err(Full) => assert!(small < n),
        }
        let pkts: Vec<_> = parse_compound(&buf[..n]).collect();
        assert_eq!(pkts.len(), if bye { 3 } else { 2 }, "{pkts:?}");
        match pkts[0] {
            Ok(RtcpPacket::SenderReport { report, mut blocks }) => {
                assert_eq!(report, sr);
                assert!(blocks.next().is_none());
            }
            ref other => panic!("{other:?}"),
        }
        assert_eq!(pkts[1], Ok(RtcpPacket::Other(rtcp::PT_SDES)));
        let cn = cname.as_bytes();
        let cn = &cn[..cn.len().min(255)];
        assert_eq!((buf[36], usize::from(buf[37])), (1, cn.len()), "SDES CNAME item");
        assert_eq!(&buf[38..38 + cn.len()], cn);
        if bye {
            assert_eq!(pkts[2], Ok(RtcpPacket::Bye));
        }
    }

    // A receiver report encoded by hand.
    let count = usize::from(c.u8() % 32);
    let ssrc = c.u32();
    let blocks: Vec<ReportBlock> = (0..count)
        .map(|_| {
            let lost = c.u32();
            ReportBlock {
                ssrc: c.u32(),
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: ((lost << 8) as i32) >> 8,
                highest_sequence: c.u32(),
                jitter: c.u32(),
                last_sr: c.u32(),
                delay_since_last_sr: c.u32(),
            }
        })
        .collect();
    let pad = usize::from(c.u8() % 4) * 4;
    let mut p = vec![0x80 | if pad > 0 { 0x20 } else { 0 } | count as u8, rtcp::PT_RR];
    p.extend_from_slice(&((1 + 6 * count + pad / 4) as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for b in &blocks {
        p.extend_from_slice(&b.ssrc.to_be_bytes());
        p.push(b.fraction_lost);
        p.extend_from_slice(&(b.cumulative_lost as u32).to_be_bytes()[1..]);
        for v in [b.highest_sequence, b.jitter, b.last_sr, b.delay_since_last_sr] {
            p.extend_from_slice(&v.to_be_bytes());
        }
    }
    if pad > 0 {
        p.resize(p.len() + pad - 1, 0);
        p.push(pad as u8);
    }
    match parse_compound(&p).collect::<Vec<_>>().as_slice() {
        [Ok(RtcpPacket::ReceiverReport { ssrc: s, blocks: got })] => {
            assert_eq!(*s, ssrc);
            assert_eq!(got.collect::<Vec<_>>(), blocks);
        }
        other => panic!("hand-made RR parsed as {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// h264

/// RTCP feedback (generic NACK, PLI, FIR) parsed from the raw input: every NACK's sequence
/// numbers, written again with `write_nack`, parse back to the same set;
/// `nacked_seqs` keeps its limit. Then the input drives one session's `Retransmitter` (sends,
/// NACKs, time steps, some backwards): every verdict is consistent with the ring and the
/// counters add up; RTX headers of fuzzed packets never read or write out of bounds.
pub fn rtcp_feedback(data: &[u8]) {
    walk_rtcp(data);
    for p in parse_compound(data).map_while(Result::ok) {
        match p {
            RtcpPacket::Nack { sender_ssrc, media_ssrc, items } => {
                assert!(items.seqs().count() <= 17 * items.count(), "more than 17 numbers per NACK entry");
                let mut seqs: Vec<u16> = items.seqs().collect();
                let mut buf = vec![0xa5u8; 12 + 4 * seqs.len()];
                let n = feedback::write_nack(sender_ssrc, media_ssrc, &seqs, &mut buf).expect("fits");
                let Some(Ok(RtcpPacket::Nack { items: again, media_ssrc: m, .. })) = parse_compound(&buf[..n]).next()
                else {
                    panic!("written NACK does not parse")
                };
                assert_eq!(m, media_ssrc);
                // A NACK names a set: a number repeated within one entry's reach is one bit.
                let mut back: Vec<u16> = again.seqs().collect();
                seqs.sort_unstable();
                seqs.dedup();
                back.sort_unstable();
                back.dedup();
                assert_eq!(back, seqs, "NACK round trip");
                let limit = seqs.len() / 2;
                assert!(nacked_seqs(data, media_ssrc, limit).count() <= limit);
            }
            RtcpPacket::Fir { entries, .. } => assert!(entries.count() * 8 <= data.len()),
            _ => {}
        }
    }

    let mut c = Cursor::new(data);
    let policy = RtxPolicy {
        window: match c.u16() {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        },
        frame_interval: Duration::from_micros(u64::from(c.u16()) * 10),
        rate_bytes: c.u32() % 10_000_000,
        burst_bytes: c.u32() % 1_000_000,
    };
    let mut now = u64::from(c.u32());
    let mut r = Retransmitter::new(policy, c.u16(), Instant::from_micros(now));
    let head = u64::from(c.u32()) + 1;
    let capacity = u64::from(c.u16() % 4096) + 1;
    let ring = RingPos { head, oldest: head.saturating_sub(capacity), newest_seq: c.u16() };
    let seq_at = |i: u64| ring.newest_seq.wrapping_sub((head - 1 - i) as u16);
    let packet = |i: u64| (i >= ring.oldest && i < head).then(|| (seq_at(i), 1200usize));
    while !c.is_empty() {
        match c.u8() % 4 {
            0 => {
                let first = u64::from(c.u32());
                let until = first + u64::from(c.u8());
                r.on_sent(first, until, Instant::from_micros(now));
            }
            1 => {
                let seq = c.u16();
                let rtt = c.bool().then(|| Duration::from_micros(u64::from(c.u32())));
                match r.handle_nack(seq, ring, packet, rtt, Instant::from_micros(now)) {
                    Verdict::Send { index } => {
                        assert!(index >= ring.oldest && index < head, "index {index} outside the ring");
                        assert_eq!(seq_at(index), seq, "wrong packet for the sequence number");
                    }
                    Verdict::TooOld | Verdict::OverBudget | Verdict::Unknown => {}
                }
            }
            2 => now = now.wrapping_add(u64::from(c.u16()) * 100) % (1 << 50),
            _ => now = now.saturating_sub(u64::from(c.u16())),
        }
        let k = r.counters;
        assert_eq!(k.nacked, k.retransmitted + k.too_old + k.over_budget + k.unknown, "counters: {k:?}");
    }
    let pkt = c.long();
    let mut hdr = [0xa5u8; RTX_HEADER_MAX];
    if let Some((n, offset)) = write_rtx_header(pkt, 97, 1, 2, &mut hdr) {
        assert!((14..=RTX_HEADER_MAX).contains(&n) && offset <= pkt.len());
        assert_eq!(&hdr[n - 2..n], &pkt[2..4], "OSN");
    }
}

// ---------------------------------------------------------------------------------------------
// rtsp_client
