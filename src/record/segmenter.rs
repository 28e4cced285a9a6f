//! The recorder's sans-IO core: access units in, "open segment / write bytes / fragment done /
//! close segment" actions out. No files, no clock: capture times and `now` are handed in.
//!
//! Rules of use (`handle_*` in, `poll_*` out): after each `handle_*` call, drain
//! [`Segmenter::poll_action`] until `None`, then sleep until [`Segmenter::poll_timeout`] (or the
//! next access unit) and call [`Segmenter::handle_timeout`].
//!
//! - A segment starts at an IDR that carries SPS and PPS (or follows ones already seen) and
//!   lasts at least `segment` of capture time: it is closed at the first IDR after that, or when
//!   SPS/PPS change. Units before the first IDR are skipped.
//! - A fragment holds the units of at most one GOP and spans at most `fragment` of capture time
//!   (measured from its first unit to the unit that ends it), so a power cut costs at most one
//!   fragment. Each fragment is written when the unit after it arrives, because a sample's
//!   duration is the distance to the next capture time; if no unit comes for `fragment` (by
//!   `now`, the time units reach the recorder), the fragment is written anyway with its last
//!   duration estimated.
//! - Decode times are capture times on the 90 kHz timescale, relative to the segment's first
//!   unit, forced strictly increasing: a gap in capture (units dropped upstream) stays a gap in
//!   the timeline, a capture clock that steps back never makes time run backwards.

use std::collections::VecDeque;
use std::time::Duration;

use crate::limits::{RECORD_MAX_FRAGMENT_BYTES, RECORD_MAX_FRAGMENT_SAMPLES};
use crate::media::fmp4::{self, AvcTrack, SampleInfo};
use crate::media::h264::{annex_b, nal_type, nal_unit_type, Sps};
use crate::time::Instant;

/// Durations of segments and fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub segment: Duration,
    pub fragment: Duration,
}

/// What the writer does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Create segment file number `index` (0, 1, …, counted by this segmenter).
    OpenSegment { index: u64 },
    /// Append these bytes to the open segment (the init segment, or one whole fragment).
    Write(&'a [u8]),
    /// The fragment just written is complete: a durable point (fsync policy `fragment`).
    FragmentDone,
    /// The open segment is complete; `duration` is the sum of its sample durations.
    CloseSegment { duration: Duration },
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Open(u64),
    Write(usize, usize),
    FragmentDone,
    Close(u64),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    dts: u64,
    sync: bool,
    size: u32,
    capture: Instant,
    /// `now` when it was handed in.
    arrival: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    start: Instant,
    /// Decode time just past the last sample written.
    end_dts: u64,
}

/// Why a unit was not recorded (counted by the caller, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Waiting for an IDR (start, after a reset, or after an unusable unit).
    WaitingForIdr,
    /// An IDR without SPS/PPS and none seen before, or an SPS we cannot parse.
    NoParameterSets,
    /// The unit alone exceeds the fragment limits.
    TooLarge,
}

#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    sps: Vec<u8>,
    pps: Vec<u8>,
    size: (u16, u16),
    open: Option<Open>,
    /// The last IDR brought SPS/PPS different from the open segment's.
    params_changed: bool,
    next_index: u64,
    sequence: u32,
    pending: Vec<Pending>,
    /// Sample bytes (length-prefixed NAL units) of `pending`.
    data: Vec<u8>,
    infos: Vec<SampleInfo>,
    out: Vec<u8>,
    ops: VecDeque<Op>,
    last_now: Instant,
    last_duration: u32,
}

fn ticks(d: Duration) -> u64 {
    (d.as_micros().saturating_mul(u128::from(fmp4::TIMESCALE)) / 1_000_000).min(u128::from(u64::MAX)) as u64
}

fn ticks_to_duration(t: u64) -> Duration {
    Duration::from_micros(t.saturating_mul(1_000_000) / u64::from(fmp4::TIMESCALE))
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Segmenter {
        Segmenter {
            cfg,
            sps: Vec::new(),
            pps: Vec::new(),
            size: (0, 0),
            open: None,
            params_changed: false,
            next_index: 0,
            sequence: 0,
            pending: Vec::new(),
            data: Vec::new(),
            infos: Vec::new(),
            out: Vec::new(),
            ops: VecDeque::new(),
            last_now: Instant::ZERO,
            last_duration: fmp4::TIMESCALE / 30,
        }
    }

    /// Whether a segment is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Feeds one Annex B access unit with its capture time, at `now` (when it reached the
    /// recorder: the fragment timeout runs from there). `Err` says why it was skipped.
    pub fn handle_access_unit(&mut self, au: &[u8], capture: Instant, is_idr: bool, now: Instant) -> Result<(), Skip> {
        self.last_now = self.last_now.max(now);
        self.compact();
        if is_idr {
            if let Err(e) = self.learn_parameter_sets(au) {
                return self.skip(e);
            }
        }
        let size = fmp4::avcc_sample_len(au);
        if size > RECORD_MAX_FRAGMENT_BYTES {
            return self.skip(Skip::TooLarge);
        }
        let Some(open) = self.open else {
            if !is_idr {
                return Err(Skip::WaitingForIdr);
            }
            self.open_segment(capture);
            return self.append(au, capture, true, size);
        };
        if is_idr && (self.params_changed || capture.saturating_since(open.start) >= self.cfg.segment) {
            self.flush(Some(capture));
            self.close_segment();
            self.open_segment(capture);
        } else if let Some(first) = self.pending.first() {
            if is_idr
                || capture.saturating_since(first.capture) >= self.cfg.fragment
                || self.pending.len() >= RECORD_MAX_FRAGMENT_SAMPLES
                || self.data.len() + size > RECORD_MAX_FRAGMENT_BYTES
            {
                self.flush(Some(capture));
            }
        }
        self.append(au, capture, is_idr, size)
    }

    /// Writes a fragment that waited too long for the unit after it.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.last_now {
            return;
        }
        self.last_now = now;
        self.compact();
        if self.poll_timeout().is_some_and(|t| now >= t) {
            self.flush(None);
        }
    }

    /// Ends recording: writes what is pending and closes the segment. The next unit recorded
    /// must be an IDR.
    pub fn handle_stop(&mut self) {
        self.compact();
        if self.open.is_some() {
            self.flush(None);
            self.close_segment();
        }
    }

    /// Forgets the open segment without writing anything (the writer could not write it: disk
    /// full, I/O error). The next unit recorded must be an IDR, in a new segment.
    pub fn handle_abort(&mut self) {
        self.open = None;
        self.pending.clear();
        self.data.clear();
        self.ops.clear();
        self.out.clear();
    }

    /// When [`Segmenter::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.last().map(|p| p.arrival + self.cfg.fragment)
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<'_>> {
        Some(match self.ops.pop_front()? {
            Op::Open(index) => Action::OpenSegment { index },
            Op::Write(from, to) => Action::Write(&self.out[from..to]),
            Op::FragmentDone => Action::FragmentDone,
            Op::Close(t) => Action::CloseSegment { duration: ticks_to_duration(t) },
        })
    }

    fn skip(&mut self, why: Skip) -> Result<(), Skip> {
        // A unit we cannot record breaks the chain of references: wait for the next IDR.
        if self.open.is_some() {
            self.flush(None);
            self.close_segment();
        }
        Err(why)
    }

    /// The output of the previous call has been drained: reuse the buffer.
    fn compact(&mut self) {
        if self.ops.is_empty() {
            self.out.clear();
        }
    }

    fn learn_parameter_sets(&mut self, au: &[u8]) -> Result<(), Skip> {
        self.params_changed = false;
        let mut sps = None;
        let mut pps = None;
        for nal in annex_b(au) {
            match nal_unit_type(nal) {
                Some(nal_type::SPS) if sps.is_none() => sps = Some(nal),
                Some(nal_type::PPS) if pps.is_none() => pps = Some(nal),
                _ => {}
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps) {
            if sps != self.sps.as_slice() || pps != self.pps.as_slice() {
                let parsed = Sps::parse(sps).map_err(|_| Skip::NoParameterSets)?;
                let size = (u16::try_from(parsed.width).unwrap_or(0), u16::try_from(parsed.height).unwrap_or(0));
                if sps.len() > 0xffff || pps.len() > 0xffff {
                    return Err(Skip::NoParameterSets);
                }
                self.params_changed = !self.sps.is_empty();
                self.sps = sps.to_vec();
                self.pps = pps.to_vec();
                self.size = size;
            }
        }
        if self.sps.is_empty() {
            return Err(Skip::NoParameterSets);
        }
        Ok(())
    }

    fn open_segment(&mut self, capture: Instant) {
        self.open = Some(Open { start: capture, end_dts: 0 });
        self.params_changed = false;
        self.ops.push_back(Op::Open(self.next_index));
        self.next_index += 1;
        let track = AvcTrack { width: self.size.0, height: self.size.1, sps: &self.sps, pps: &self.pps };
        let from = self.out.len();
        self.out.resize(from + fmp4::init_len(&track), 0);
        // learn_parameter_sets checked the lengths, and the buffer has init_len bytes.
        if let Ok(n) = fmp4::write_init(&track, &mut self.out[from..]) {
            self.out.truncate(from + n);
            self.ops.push_back(Op::Write(from, from + n));
        }
    }

    fn append(&mut self, au: &[u8], capture: Instant, sync: bool, size: usize) -> Result<(), Skip> {
        let Some(open) = self.open else { return Err(Skip::WaitingForIdr) };
        let floor = match self.pending.last() {
            Some(p) => p.dts + 1,
            None => open.end_dts,
        };
        let dts = ticks(capture.saturating_since(open.start)).max(floor);
        let at = self.data.len();
        self.data.resize(at + size, 0);
        let n = fmp4::write_avcc_sample(au, &mut self.data[at..]).unwrap_or(0);
        self.data.truncate(at + n);
        self.pending.push(Pending { dts, sync, size: n as u32, capture, arrival: self.last_now });
        Ok(())
    }

    /// Writes the pending samples as one fragment. `next`: capture time of the unit that follows
    /// (gives the last duration); `None` estimates it.
    fn flush(&mut self, next: Option<Instant>) {
        let Some(open) = self.open.as_mut() else { return };
        if self.pending.is_empty() {
            return;
        }
        let last = self.pending[self.pending.len() - 1];
        let end_dts = match next {
            Some(c) => ticks(c.saturating_since(open.start)).max(last.dts + 1),
            None => last.dts + u64::from(self.last_duration),
        };
        self.infos.clear();
        for (i, p) in self.pending.iter().enumerate() {
            let next_dts = self.pending.get(i + 1).map_or(end_dts, |n| n.dts);
            let duration = u32::try_from(next_dts - p.dts).unwrap_or(u32::MAX);
            self.infos.push(SampleInfo { duration, size: p.size, sync: p.sync });
        }
        if let Some(d) = self.infos.last().map(|s| s.duration) {
            if next.is_some() {
                self.last_duration = d.clamp(1, fmp4::TIMESCALE);
            }
        }
        let base = self.pending[0].dts;
        let from = self.out.len();
        let header = fmp4::fragment_header_len(self.infos.len());
        self.out.resize(from + header, 0);
        self.sequence = self.sequence.wrapping_add(1);
        // Sizes are bounded by RECORD_MAX_FRAGMENT_BYTES, far below 4 GiB, and the buffer has
        // exactly the header's length.
        if fmp4::write_fragment_header(self.sequence, base, &self.infos, &mut self.out[from..]).is_ok() {
            self.out.extend_from_slice(&self.data);
            self.ops.push_back(Op::Write(from, self.out.len()));
            self.ops.push_back(Op::FragmentDone);
            open.end_dts = end_dts;
        } else {
            self.out.truncate(from);
        }
        self.pending.clear();
        self.data.clear();
    }

    fn close_segment(&mut self) {
        if let Some(open) = self.open.take() {
            self.ops.push_back(Op::Close(open.end_dts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fmp4::read;

    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
        0x0f, 0x23, 0xc6, 0x0c, 0xa8,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn idr() -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1];
        v.extend_from_slice(SPS);
        v.extend_from_slice(&[0, 0, 0, 1]);
        v.extend_from_slice(PPS);
        v.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        v
    }

    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02];

    /// What the writer saw, per segment: (fragments with their sample durations, closed duration).
    #[derive(Debug, Default)]
    struct Files {
        segments: Vec<(Vec<u8>, Option<Duration>)>,
        fragments_done: usize,
    }

    fn drain(s: &mut Segmenter, files: &mut Files) {
        while let Some(a) = s.poll_action() {
            match a {
                Action::OpenSegment { index } => {
                    assert_eq!(index as usize, files.segments.len());
                    files.segments.push((Vec::new(), None));
                }
                Action::Write(b) => files.segments.last_mut().unwrap().0.extend_from_slice(b),
                Action::FragmentDone => files.fragments_done += 1,
                Action::CloseSegment { duration } => files.segments.last_mut().unwrap().1 = Some(duration),
            }
        }
    }

    /// Parses a whole segment: (sample count, sum of durations, fragment durations, tfdts).
    fn parse(seg: &[u8]) -> (usize, u64, Vec<u64>, Vec<u64>) {
        let (_, mut rest) = read::init(seg).unwrap();
        let (mut n, mut total, mut durs, mut tfdts) = (0, 0, vec![], vec![]);
        while !rest.is_empty() {
            let (f, r) = read::fragment(rest).unwrap();
            assert_eq!(f.moof.base_decode_time, total, "tfdt continues the previous fragment");
            let mut first = true;
            for (info, _) in f.samples() {
                assert_eq!(info.sync, first && info.sync, "only the first sample of a fragment is sync");
                first = false;
            }
            n += f.moof.sample_count;
            total += f.moof.duration();
            durs.push(f.moof.duration());
            tfdts.push(f.moof.base_decode_time);
            rest = r;
        }
        (n, total, durs, tfdts)
    }

    fn ms(t: u64) -> Instant {
        Instant::from_micros(t * 1000)
    }

    fn cfg(segment_s: u64, fragment_ms: u64) -> SegmenterConfig {
        SegmenterConfig { segment: Duration::from_secs(segment_s), fragment: Duration::from_millis(fragment_ms) }
    }

    /// 30 fps (33.333 ms), an IDR every `gop` frames, `frames` frames.
    fn run(s: &mut Segmenter, files: &mut Files, frames: u64, gop: u64) {
        for i in 0..frames {
            let t = Instant::from_micros(i * 1_000_000 / 30);
            let r = if i % gop == 0 {
                s.handle_access_unit(&idr(), t, true, t)
            } else {
                s.handle_access_unit(P, t, false, t)
            };
            assert!(r.is_ok());
            drain(s, files);
        }
    }

    #[test]
    fn segments_start_at_idrs_and_durations_add_up() {
        let mut s = Segmenter::new(cfg(5, 1000));
        let mut files = Files::default();
        // 20 s at 30 fps with a 2 s GOP: segments at 0, 6, 12, 18 s (first IDR past 5 s).
        run(&mut s, &mut files, 600, 60);
        s.handle_stop();
        drain(&mut s, &mut files);
        assert_eq!(files.segments.len(), 4);
        let mut total_samples = 0;
        let mut total_ticks = 0;
        for (bytes, closed) in &files.segments {
            let (n, ticks, durs, _) = parse(bytes);
            total_samples += n;
            total_ticks += ticks;
            assert_eq!(closed.unwrap(), ticks_to_duration(ticks));
            assert!(durs.iter().all(|&d| d <= 90_000 + 3000), "fragments at most 1 s (+1 frame): {durs:?}");
        }
        assert_eq!(total_samples, 600);
        // 600 frames = 20 s; the last duration is estimated as one frame.
        assert!((total_ticks as i64 - 1_800_000).abs() <= 1, "{total_ticks}");
        let (n, ticks, _, _) = parse(&files.segments[0].0);
        assert_eq!((n, ticks), (180, 540_000), "first segment: 0..6 s exactly");
    }

    #[test]
    fn fragments_split_long_gops_at_the_fragment_limit() {
        let mut s = Segmenter::new(cfg(60, 500));
        let mut files = Files::default();
        run(&mut s, &mut files, 120, 1000);
        // 4 s in one GOP, 0.5 s fragments: 7 written so far, the 8th waits for its next unit.
        assert_eq!(files.fragments_done, 7);
        let (n, _, durs, _) = parse(&files.segments[0].0);
        assert_eq!(n, 105);
        assert!(durs.iter().all(|&d| d == 45_000), "{durs:?}");
    }

    #[test]
    fn a_stalled_stream_writes_its_fragment_on_timeout() {
        let mut s = Segmenter::new(cfg(5, 1000));
        let mut files = Files::default();
        run(&mut s, &mut files, 10, 60);
        assert_eq!(files.fragments_done, 0);
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, Instant::from_micros(9 * 1_000_000 / 30) + Duration::from_secs(1));
        s.handle_timeout(ms(500));
        drain(&mut s, &mut files);
        assert_eq!(files.fragments_done, 0);
        s.handle_timeout(deadline);
        drain(&mut s, &mut files);
        assert_eq!(files.fragments_done, 1);
        assert_eq!(s.poll_timeout(), None);
        // A time older than the last one is ignored.
        s.handle_timeout(ms(100));
        // The stream comes back 5 s later: the gap stays in the timeline.
        s.handle_access_unit(P, ms(5000), false, ms(5000)).unwrap();
        s.handle_access_unit(P, ms(5033), false, ms(5033)).unwrap();
        s.handle_stop();
        drain(&mut s, &mut files);
        let (n, _, _, tfdts) = parse_allowing_gaps(&files.segments[0].0);
        assert_eq!(n, 12);
        assert_eq!(tfdts, vec![0, 450_000]);
    }

    #[test]
    fn a_pipeline_that_lags_capture_does_not_cut_fragments_short() {
        let mut s = Segmenter::new(cfg(60, 1000));
        let mut files = Files::default();
        let lag = Duration::from_secs(2);
        for i in 0..90u64 {
            let capture = Instant::from_micros(i * 1_000_000 / 30);
            let unit: &[u8] = if i % 30 == 0 { &idr() } else { P };
            s.handle_access_unit(unit, capture, i % 30 == 0, capture + lag).unwrap();
            s.handle_timeout(capture + lag + Duration::from_millis(20));
            drain(&mut s, &mut files);
        }
        let (_, _, durs, _) = parse(&files.segments[0].0);
        assert_eq!(durs, vec![90_000, 90_000], "two whole 1 s fragments, the third waits");
    }

    fn parse_allowing_gaps(seg: &[u8]) -> (usize, u64, Vec<u64>, Vec<u64>) {
        let (_, mut rest) = read::init(seg).unwrap();
        let (mut n, mut tfdts) = (0, vec![]);
        while !rest.is_empty() {
            let (f, r) = read::fragment(rest).unwrap();
            n += f.moof.sample_count;
            tfdts.push(f.moof.base_decode_time);
            rest = r;
        }
        (n, 0, vec![], tfdts)
    }

    #[test]
    fn units_before_the_first_idr_and_idrs_without_parameter_sets_are_skipped() {
        let mut s = Segmenter::new(cfg(5, 1000));
        assert_eq!(s.handle_access_unit(P, ms(0), false, ms(0)), Err(Skip::WaitingForIdr));
        assert_eq!(s.handle_access_unit(&[0, 0, 1, 0x65, 1], ms(10), true, ms(10)), Err(Skip::NoParameterSets));
        assert!(s.poll_action().is_none());
        assert_eq!(s.handle_access_unit(&idr(), ms(20), true, ms(20)), Ok(()));
        assert_eq!(s.poll_action(), Some(Action::OpenSegment { index: 0 }));
        // Later IDRs may leave the parameter sets out.
        let mut files = Files { segments: vec![(Vec::new(), None)], fragments_done: 0 };
        s.handle_access_unit(&[0, 0, 1, 0x65, 1], ms(53), true, ms(53)).unwrap();
        drain(&mut s, &mut files);
        assert_eq!(files.fragments_done, 1);
    }

    #[test]
    fn new_parameter_sets_start_a_new_segment() {
        let mut s = Segmenter::new(cfg(60, 1000));
        let mut files = Files::default();
        s.handle_access_unit(&idr(), ms(0), true, ms(0)).unwrap();
        s.handle_access_unit(P, ms(33), false, ms(33)).unwrap();
        let mut other = idr();
        other[7] ^= 1; // a different SPS
        s.handle_access_unit(&other, ms(66), true, ms(66)).unwrap();
        drain(&mut s, &mut files);
        assert_eq!(files.segments.len(), 2);
        assert_eq!(files.segments[0].1, Some(ticks_to_duration(ticks(Duration::from_millis(66)))));
    }

    #[test]
    fn a_capture_clock_that_steps_back_never_runs_time_backwards() {
        let mut s = Segmenter::new(cfg(60, 1000));
        let mut files = Files::default();
        s.handle_access_unit(&idr(), ms(1000), true, ms(1000)).unwrap();
        s.handle_access_unit(P, ms(900), false, ms(900)).unwrap();
        s.handle_access_unit(P, ms(900), false, ms(900)).unwrap();
        s.handle_access_unit(&idr(), ms(1100), true, ms(1100)).unwrap();
        s.handle_stop();
        drain(&mut s, &mut files);
        let (_, mut rest) = read::init(&files.segments[0].0).unwrap();
        let (f, r) = read::fragment(rest).unwrap();
        rest = r;
        let durs: Vec<u32> = f.samples().map(|(i, _)| i.duration).collect();
        assert_eq!(durs, vec![1, 1, 9000 - 2]);
        let (f, _) = read::fragment(rest).unwrap();
        assert_eq!(f.moof.base_decode_time, 9000);
    }

    #[test]
    fn abort_forgets_the_segment_and_waits_for_an_idr() {
        let mut s = Segmenter::new(cfg(60, 1000));
        let mut files = Files::default();
        run(&mut s, &mut files, 40, 30);
        s.handle_abort();
        assert!(!s.is_open());
        assert_eq!(s.handle_access_unit(P, ms(2000), false, ms(2000)), Err(Skip::WaitingForIdr));
        s.handle_access_unit(&idr(), ms(2033), true, ms(2033)).unwrap();
        assert_eq!(s.poll_action(), Some(Action::OpenSegment { index: 1 }));
    }

    #[test]
    fn oversized_units_are_skipped_and_end_the_segment() {
        let mut s = Segmenter::new(cfg(60, 1000));
        let mut files = Files::default();
        run(&mut s, &mut files, 5, 30);
        let mut big = vec![0, 0, 1, 0x41];
        big.resize(RECORD_MAX_FRAGMENT_BYTES + 1, 7);
        assert_eq!(s.handle_access_unit(&big, ms(200), false, ms(200)), Err(Skip::TooLarge));
        drain(&mut s, &mut files);
        assert!(files.segments[0].1.is_some());
        assert_eq!(s.handle_access_unit(P, ms(233), false, ms(233)), Err(Skip::WaitingForIdr));
    }

    /// Random sequences of units (IDR, P, IDR without parameter sets, garbage), capture times
    /// that jump forwards and backwards, timeouts, stops and aborts: no panic, and every
    /// segment the writer saw is an init segment plus whole fragments whose decode times only
    /// grow and whose first sample is a sync sample at the start of the segment.
    #[test]
    fn random_operations_keep_every_segment_well_formed() {
        for seed in 1..=40u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut s = Segmenter::new(cfg(1 + next() % 3, 100 + next() % 900));
            let mut files = Files::default();
            let mut t = 0u64; // ms
            let mut aborted = Vec::new();
            for _ in 0..1500 {
                match next() % 100 {
                    0..=4 => t = t.saturating_sub(next() % 500),
                    5..=9 => t += next() % 3000,
                    _ => t += 1 + next() % 60,
                }
                let now = ms(t + next() % 200);
                let r = match next() % 100 {
                    0..=7 => s.handle_access_unit(&idr(), ms(t), true, now),
                    8..=9 => s.handle_access_unit(&[0, 0, 1, 0x65, 7], ms(t), true, now),
                    10 => s.handle_access_unit(&[0, 0, 1, 0x67, 0xff], ms(t), true, now),
                    11 => s.handle_access_unit(&[1, 2, 3], ms(t), next() % 2 == 0, now),
                    12 => {
                        s.handle_stop();
                        Ok(())
                    }
                    13 => {
                        s.handle_timeout(now);
                        Ok(())
                    }
                    14 => {
                        // The writer failed: what it had is cut off, the rest forgotten.
                        drain(&mut s, &mut files);
                        s.handle_abort();
                        if let Some(last) = files.segments.last_mut() {
                            if last.1.is_none() {
                                last.1 = Some(Duration::ZERO);
                                aborted.push(files.segments.len() - 1);
                            }
                        }
                        Ok(())
                    }
                    _ => s.handle_access_unit(P, ms(t), false, now),
                };
                let _ = r;
                drain(&mut s, &mut files);
            }
            s.handle_stop();
            drain(&mut s, &mut files);
            assert!(files.segments.len() >= 5, "seed {seed}: only {} segments", files.segments.len());
            for (i, (bytes, closed)) in files.segments.iter().enumerate() {
                assert!(closed.is_some(), "seed {seed}: segment {i} never closed");
                let (_, mut rest) = read::init(bytes).unwrap();
                let mut end = 0;
                let mut first = true;
                while !rest.is_empty() {
                    let (f, r) = read::fragment(rest).unwrap_or_else(|e| panic!("seed {seed} segment {i}: {e:?}"));
                    assert!(f.moof.base_decode_time >= end, "seed {seed} segment {i}: time ran backwards");
                    if first {
                        assert_eq!(f.moof.base_decode_time, 0);
                        assert!(
                            f.samples().next().is_some_and(|(s, _)| s.sync),
                            "seed {seed}: starts with a sync sample"
                        );
                    }
                    first = false;
                    assert!(f.samples().all(|(s, _)| s.duration > 0));
                    end = f.moof.base_decode_time + f.moof.duration();
                    rest = r;
                }
                if !aborted.contains(&i) {
                    assert_eq!(closed.unwrap(), ticks_to_duration(end), "seed {seed} segment {i}");
                }
            }
        }
    }
}
