//! The stream hub: packetizes each access unit once into a ring of preallocated packet slots
//! that every client reads from, and keeps what joining clients need (SPS/PPS, the RTP clock).
//! The payload format is the stream's [`Codec`]: H.264 (RFC 6184) or JPEG (RFC 2435).
//!
//! Invariants:
//! - Packet `i` (a monotonically increasing index) lives in slot `i % capacity` until packet
//!   `i + capacity` overwrites it; [`Ring::get`] refuses indices that are gone.
//! - Every IDR access unit starts with SPS and PPS on the wire (prepended when the unit lacks
//!   them), and its first packet is flagged `keyframe_start`, so a client that starts there
//!   can decode at once. Every JPEG frame is a keyframe start (fast join = the next frame).
//! - A JPEG the RTP format cannot carry is dropped with a log line, never sent broken.
//! - RTP timestamps come from the capture time on the monotonic clock, never the wall clock.

use std::time::Instant;

use crate::limits;
use crate::media::h264::{annex_b, nal_type, nal_unit_type, Sps};
use crate::rtp::h264::{self, AccessUnit};
use crate::rtp::{jpeg, Codec, H264_PAYLOAD_TYPE, VIDEO_CLOCK_RATE};
use crate::rtsp::session::StreamInfo;

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    len: u16,
    keyframe_start: bool,
    /// Last packet of its access unit (RTP marker).
    marker: bool,
}

/// Fixed ring of RTP packets.
#[derive(Debug)]
pub struct Ring {
    buf: Vec<u8>,
    meta: Vec<Meta>,
    slot: usize,
    head: u64,
    /// Indices of recent keyframe starts, oldest first (bounded).
    keyframes: std::collections::VecDeque<u64>,
}

/// A packet in the ring.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub bytes: &'a [u8],
    pub keyframe_start: bool,
    pub marker: bool,
}

impl Ring {
    pub fn new(capacity: usize, slot: usize) -> Ring {
        // Touch every page now: the ring is fixed memory, resident from the start, so RSS stays
        // flat under any load (a lazily faulted ring would look like growth for seconds).
        let mut buf = vec![0u8; capacity * slot];
        for page in buf.chunks_mut(4096) {
            page[0] = 0xa5;
        }
        std::hint::black_box(&mut buf);
        Ring {
            buf,
            meta: vec![Meta::default(); capacity],
            slot,
            head: 0,
            keyframes: std::collections::VecDeque::with_capacity(64),
        }
    }

    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Index the next packet will get.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Oldest index still held.
    pub fn oldest(&self) -> u64 {
        self.head.saturating_sub(self.capacity() as u64)
    }

    pub fn get(&self, i: u64) -> Option<Packet<'_>> {
        if i >= self.head || i < self.oldest() {
            return None;
        }
        let s = (i % self.capacity() as u64) as usize;
        let m = self.meta[s];
        Some(Packet {
            bytes: &self.buf[s * self.slot..s * self.slot + usize::from(m.len)],
            keyframe_start: m.keyframe_start,
            marker: m.marker,
        })
    }

    /// First keyframe start at or after `from` that is still held.
    pub fn next_keyframe(&self, from: u64) -> Option<u64> {
        let from = from.max(self.oldest());
        self.keyframes.iter().copied().find(|&k| k >= from)
    }

    /// The newest keyframe start, when its access unit is the newest one in the ring (nothing
    /// came after it yet): a joiner can start there at once and be at most one frame behind.
    pub fn fresh_keyframe(&self) -> Option<u64> {
        let k = *self.keyframes.back()?;
        if k < self.oldest() {
            return None;
        }
        // Markers end access units: only the keyframe's own may follow it.
        let ends = (k..self.head).filter(|&i| self.meta[(i % self.capacity() as u64) as usize].marker).count();
        (ends <= 1).then_some(k)
    }

    /// Appends one packet (tests outside this module).
    #[cfg(test)]
    pub(crate) fn push_packet(&mut self, bytes: &[u8], keyframe_start: bool, marker: bool) {
        self.slot_mut()[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len(), keyframe_start, marker);
    }

    fn slot_mut(&mut self) -> &mut [u8] {
        let s = (self.head % self.capacity() as u64) as usize;
        &mut self.buf[s * self.slot..(s + 1) * self.slot]
    }

    fn commit(&mut self, len: usize, keyframe_start: bool, marker: bool) {
        let s = (self.head % self.capacity() as u64) as usize;
        self.meta[s] = Meta { len: len as u16, keyframe_start, marker };
        if keyframe_start {
            if self.keyframes.len() == self.keyframes.capacity() {
                self.keyframes.pop_front();
            }
            self.keyframes.push_back(self.head);
        }
        self.head += 1;
        let oldest = self.oldest();
        while self.keyframes.front().is_some_and(|&k| k < oldest) {
            self.keyframes.pop_front();
        }
    }
}

/// What one access unit became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub first: u64,
    pub count: usize,
    pub idr: bool,
    pub bytes: usize,
}

/// The packetizer of the stream's payload format.
#[derive(Debug)]
enum Packetizer {
    H264(h264::Packetizer),
    Jpeg(jpeg::Packetizer),
}

#[derive(Debug)]
pub struct Hub {
    pub ring: Ring,
    packetizer: Packetizer,
    /// JPEG frames refused by the RTP/JPEG parser, and when that was last logged.
    pub rejected: u64,
    rejected_logged: Option<Instant>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    epoch: Instant,
    rtp_base: u32,
    last_timestamp: u32,
    pub packets: u64,
    pub octets: u64,
    pub units: u64,
    pub idrs: u64,
    framerate: u32,
    bitrate_kbps: u32,
    size: Option<(u32, u32)>,
}

impl Hub {
    /// `random` seeds the SSRC, the first sequence number and the RTP timestamp base
    /// (RFC 3550 §5.1 asks for random initial values).
    pub fn new(codec: Codec, max_packet: usize, epoch: Instant, random: u64, framerate: u32, bitrate_kbps: u32) -> Hub {
        let max_packet = max_packet.min(limits::MAX_RTP_PACKET);
        let (ssrc, seq) = ((random >> 32) as u32, random as u16);
        let packetizer = match codec {
            Codec::H264 => Packetizer::H264(h264::Packetizer::new(ssrc, H264_PAYLOAD_TYPE, seq, max_packet)),
            Codec::Jpeg => Packetizer::Jpeg(jpeg::Packetizer::new(ssrc, seq, max_packet)),
        };
        Hub {
            ring: Ring::new(limits::RING_PACKETS, max_packet.max(jpeg::MIN_PACKET)),
            packetizer,
            rejected: 0,
            rejected_logged: None,
            sps: Vec::with_capacity(limits::MAX_PARAM_SET_BYTES),
            pps: Vec::with_capacity(limits::MAX_PARAM_SET_BYTES),
            epoch,
            rtp_base: (random >> 16) as u32,
            last_timestamp: 0,
            packets: 0,
            octets: 0,
            units: 0,
            idrs: 0,
            framerate,
            bitrate_kbps,
            size: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        match &self.packetizer {
            Packetizer::H264(p) => p.ssrc(),
            Packetizer::Jpeg(p) => p.ssrc(),
        }
    }

    pub fn codec(&self) -> Codec {
        match self.packetizer {
            Packetizer::H264(_) => Codec::H264,
            Packetizer::Jpeg(_) => Codec::Jpeg,
        }
    }

    /// RTP timestamp of an instant on the capture clock.
    pub fn rtp_time(&self, at: Instant) -> u32 {
        let us = at.saturating_duration_since(self.epoch).as_micros();
        self.rtp_base.wrapping_add((us * u128::from(VIDEO_CLOCK_RATE) / 1_000_000) as u32)
    }

    /// Picture size from the latest SPS.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    pub fn stream_info(&self, now: Instant) -> Option<StreamInfo<'_>> {
        let codec = self.codec();
        // JPEG needs nothing from the stream to be described.
        if codec == Codec::H264 && (self.sps.is_empty() || self.pps.is_empty()) {
            return None;
        }
        Some(StreamInfo {
            codec,
            sps: &self.sps,
            pps: &self.pps,
            ssrc: self.ssrc(),
            rtptime_now: self.rtp_time(now),
            framerate: self.framerate,
            bitrate_kbps: self.bitrate_kbps,
        })
    }

    /// Sets SPS and PPS before the first access unit (from a source that knows them).
    pub fn prime(&mut self, sps: &[u8], pps: &[u8]) {
        if sps.len() <= limits::MAX_PARAM_SET_BYTES && pps.len() <= limits::MAX_PARAM_SET_BYTES {
            self.sps = sps.to_vec();
            self.pps = pps.to_vec();
            self.size = Sps::parse(sps).ok().map(|s| (s.width, s.height));
        }
    }

    /// The current SPS and PPS (empty until the stream has them).
    pub fn parameter_sets(&self) -> (&[u8], &[u8]) {
        (&self.sps, &self.pps)
    }

    /// An instant on the capture clock in 90 kHz units since the hub's epoch: a media time that
    /// never wraps (WebRTC's packetizer derives its RTP timestamps from it).
    pub fn media_time(&self, at: Instant) -> u64 {
        let us = at.saturating_duration_since(self.epoch).as_micros();
        (us * u128::from(VIDEO_CLOCK_RATE) / 1_000_000) as u64
    }

    /// Last RTP timestamp sent (for sender reports).
    pub fn last_timestamp(&self) -> u32 {
        self.last_timestamp
    }

    /// Packetizes one access unit (H.264 Annex B, or one JPEG file) into the ring.
    pub fn push(&mut self, data: &[u8], capture: Instant) -> Pushed {
        if let Packetizer::Jpeg(_) = self.packetizer {
            return self.push_jpeg(data, capture);
        }
        let mut idr = false;
        let mut has_sps = false;
        let mut has_pps = false;
        for nal in annex_b(data) {
            match nal_unit_type(nal) {
                Some(nal_type::IDR) => idr = true,
                Some(nal_type::SPS) => {
                    has_sps = true;
                    if nal != self.sps.as_slice() && nal.len() <= limits::MAX_PARAM_SET_BYTES {
                        self.sps.clear();
                        self.sps.extend_from_slice(nal);
                        match Sps::parse(nal) {
                            Ok(s) => {
                                if self.size != Some((s.width, s.height)) {
                                    log::info!(
                                        "stream: H.264 {}x{}, profile_idc {} level_idc {}",
                                        s.width,
                                        s.height,
                                        s.profile_idc,
                                        s.level_idc
                                    );
                                }
                                self.size = Some((s.width, s.height));
                            }
                            Err(e) => log::warn!("stream: SPS not understood ({e:?}); sent as is"),
                        }
                    }
                }
                Some(nal_type::PPS) => {
                    has_pps = true;
                    if nal != self.pps.as_slice() && nal.len() <= limits::MAX_PARAM_SET_BYTES {
                        self.pps.clear();
                        self.pps.extend_from_slice(nal);
                    }
                }
                _ => {}
            }
        }
        let prepend = if idr {
            [(!has_sps).then_some(self.sps.as_slice()), (!has_pps).then_some(self.pps.as_slice())]
        } else {
            [None, None]
        };
        let timestamp = self.rtp_time(capture);
        self.last_timestamp = timestamp;
        let first = self.ring.head();
        let mut count = 0;
        let mut bytes = 0;
        let Packetizer::H264(packetizer) = &mut self.packetizer else {
            return Pushed { first, count: 0, idr: false, bytes: 0 };
        };
        let mut pkts = packetizer.push(AccessUnit { data, timestamp, prepend });
        loop {
            let slot = self.ring.slot_mut();
            match pkts.next(slot) {
                None => break,
                Some(Ok(info)) => {
                    self.ring.commit(info.len, idr && count == 0, info.marker);
                    count += 1;
                    bytes += info.len;
                }
                Some(Err(_)) => break, // slot smaller than max_packet: cannot happen, sized together
            }
        }
        self.units += 1;
        self.idrs += u64::from(idr);
        self.packets += count as u64;
        self.octets += (bytes - count * crate::rtp::header::HEADER_LEN) as u64;
        Pushed { first, count, idr, bytes }
    }

    fn push_jpeg(&mut self, data: &[u8], capture: Instant) -> Pushed {
        let first = self.ring.head();
        let frame = match jpeg::parse(data) {
            Ok(f) => f,
            Err(e) => {
                self.rejected += 1;
                // One line per few seconds: a camera that sends such frames sends only those.
                if self.rejected_logged.is_none_or(|t| capture.saturating_duration_since(t).as_secs() >= 5) {
                    self.rejected_logged = Some(capture);
                    log::warn!("stream: JPEG frame dropped ({} so far): {e}", self.rejected);
                }
                return Pushed { first, count: 0, idr: false, bytes: 0 };
            }
        };
        let size = (u32::from(frame.width), u32::from(frame.height));
        if self.size != Some(size) {
            log::info!(
                "stream: JPEG {}x{}, RTP/JPEG type {}{}",
                size.0,
                size.1,
                frame.rtp_type(),
                if frame.restart_interval > 0 { " (restart markers)" } else { "" }
            );
            self.size = Some(size);
        }
        let timestamp = self.rtp_time(capture);
        self.last_timestamp = timestamp;
        let (mut count, mut bytes) = (0, 0);
        if let Packetizer::Jpeg(packetizer) = &mut self.packetizer {
            let mut pkts = packetizer.push(frame, timestamp);
            loop {
                let slot = self.ring.slot_mut();
                match pkts.next(slot) {
                    Some(Ok(info)) => {
                        self.ring.commit(info.len, count == 0, info.marker);
                        count += 1;
                        bytes += info.len;
                    }
                    None | Some(Err(_)) => break,
                }
            }
        }
        self.units += 1;
        self.idrs += 1;
        self.packets += count as u64;
        self.octets += (bytes - count * crate::rtp::header::HEADER_LEN) as u64;
        Pushed { first, count, idr: count > 0, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_overwrites_and_tracks_keyframes() {
        let mut r = Ring::new(4, 8);
        for i in 0..6u64 {
            r.slot_mut()[0] = i as u8;
            r.commit(1, i == 1 || i == 4, false);
        }
        assert_eq!((r.oldest(), r.head()), (2, 6));
        assert!(r.get(1).is_none());
        assert_eq!(r.get(2).unwrap().bytes, &[2]);
        assert!(r.get(6).is_none());
        assert_eq!(r.next_keyframe(0), Some(4));
        assert_eq!(r.next_keyframe(5), None);
    }

    #[test]
    fn a_keyframe_is_fresh_until_another_access_unit_follows_it() {
        let mut r = Ring::new(8, 8);
        assert_eq!(r.fresh_keyframe(), None);
        // IDR of three packets (marker on the last): fresh.
        r.commit(1, true, false);
        r.commit(1, false, false);
        r.commit(1, false, true);
        assert_eq!(r.fresh_keyframe(), Some(0));
        // A P-frame after it: a joiner would be a frame behind, so no longer fresh.
        r.commit(1, false, true);
        assert_eq!(r.fresh_keyframe(), None);
        // A new IDR is fresh again, and stays so only while it is the newest unit.
        r.commit(1, true, true);
        assert_eq!(r.fresh_keyframe(), Some(4));
        for _ in 0..4 {
            r.commit(1, false, true);
        }
        assert_eq!(r.fresh_keyframe(), None);
        // A keyframe overwritten in the ring is never offered.
        let mut r = Ring::new(2, 8);
        r.commit(1, true, false);
        r.commit(1, false, false);
        r.commit(1, false, true);
        assert_eq!(r.fresh_keyframe(), None);
    }

    #[test]
    fn idr_gets_parameter_sets_prepended_and_flagged() {
        let t0 = Instant::now();
        let mut hub = Hub::new(Codec::H264, 200, t0, 0x1111_2222_3333_4444, 30, 1000);
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
            0x0f, 0x23, 0xc6, 0x0c, 0xa8,
        ];
        let mut first = vec![0, 0, 0, 1];
        first.extend_from_slice(&sps);
        first.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, 1, 2, 3]);
        assert!(hub.stream_info(t0).is_none());
        let p = hub.push(&first, t0);
        assert_eq!((p.count, p.idr), (3, true));
        assert_eq!(hub.size(), Some((1280, 720)));
        assert!(hub.ring.get(0).unwrap().keyframe_start);
        // A later IDR without parameter sets gets them in front.
        let t1 = t0 + std::time::Duration::from_millis(1000);
        let p = hub.push(&[0, 0, 1, 0x65, 9, 9], t1);
        assert_eq!(p.count, 3);
        let pkt = hub.ring.get(p.first).unwrap();
        assert!(pkt.keyframe_start);
        assert_eq!(pkt.bytes[12], 0x67);
        assert_eq!(hub.ring.get(p.first + 1).unwrap().bytes[12], 0x68);
        assert!(hub.ring.get(p.first + 2).unwrap().marker);
        // 90 kHz timestamps from the capture clock.
        let ts = |i: u64| u32::from_be_bytes(hub.ring.get(i).unwrap().bytes[4..8].try_into().unwrap());
        assert_eq!(ts(p.first).wrapping_sub(ts(0)), 90_000);
        // A P-frame is not a keyframe start and gets nothing prepended.
        let p = hub.push(&[0, 0, 1, 0x41, 9], t1);
        assert_eq!(p.count, 1);
        assert!(!hub.ring.get(p.first).unwrap().keyframe_start);
        assert_eq!(hub.ring.next_keyframe(0), Some(0));
        assert_eq!(hub.ring.next_keyframe(1), Some(3));
    }

    #[test]
    fn every_jpeg_frame_is_a_keyframe_start_and_unsendable_ones_are_dropped() {
        let t0 = Instant::now();
        let mut hub = Hub::new(Codec::Jpeg, 1452, t0, 42, 30, 0);
        assert!(hub.stream_info(t0).is_some_and(|s| s.codec == Codec::Jpeg));
        let mut jpeg = Vec::new();
        let rgb: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(&rgb, 64, 48, jpeg_encoder::ColorType::Rgb).unwrap();
        for n in 0..3u64 {
            let p = hub.push(&jpeg, t0 + std::time::Duration::from_millis(33 * n));
            assert!(p.idr && p.count >= 1);
            assert!(hub.ring.get(p.first).unwrap().keyframe_start);
            assert!(hub.ring.get(p.first + p.count as u64 - 1).unwrap().marker);
            assert_eq!(hub.ring.get(p.first).unwrap().bytes[1] & 0x7f, 26);
        }
        assert_eq!(hub.size(), Some((64, 48)));
        let p = hub.push(b"not a jpeg", t0);
        assert_eq!((p.count, hub.rejected), (0, 1));
    }
}
