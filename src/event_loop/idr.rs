//! The per-stream IDR budget (sans-IO: every call takes `now`).

use std::time::{Duration, Instant};

use crate::limits::{FORCED_IDR_BURST, FORCED_IDR_RATE};

/// Rate-limits the IDRs a live encoder is asked for (joiners, and later PLI and bitrate steps).
///
/// Trade-off: a joiner wants a picture at once, and a burst of joiners (a radio link coming
/// back: ground station, recorder and tablet reconnect together) wants it for every one of them;
/// but every forced IDR costs bitrate, and a flood of PLAYs must not turn the stream into all
/// IDRs. So:
/// - joiners share the IDR in flight: a request while one is pending asks for nothing more, and
///   a joiner that arrives when the newest access unit in the ring is an IDR starts on it (at
///   most one frame behind; see [`crate::hub::Ring::fresh_keyframe`]);
/// - otherwise a new IDR may be forced [`IdrLimiter::spacing`] (two frame intervals) after the
///   last one, from a budget of [`limits::FORCED_IDR_BURST`] refilled at [`limits::FORCED_IDR_RATE`] per second.
///
/// Bound: a flood of PLAYs forces at most `FORCED_IDR_BURST` IDRs at once and `FORCED_IDR_RATE` per second
/// after that, never two closer than two frame intervals (plus the encoder's own periodic IDR).
/// A burst of joiners waits at most two frame intervals and one encode for its first IDR.
#[derive(Debug)]
pub(super) struct IdrLimiter {
    spacing: Duration,
    last: Option<Instant>,
    /// Budget in thousandths of an IDR, refilled at `FORCED_IDR_RATE` per second up to `FORCED_IDR_BURST`.
    tokens: u64,
    tokens_at: Option<Instant>,
    pub(super) deferred: bool,
}

impl IdrLimiter {
    pub(super) fn new(fps: u32) -> IdrLimiter {
        let spacing = Duration::from_micros(2_000_000 / u64::from(fps.max(1)));
        IdrLimiter { spacing, last: None, tokens: FORCED_IDR_BURST * 1000, tokens_at: None, deferred: false }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self.tokens_at.map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
        self.tokens = (self.tokens + elapsed * FORCED_IDR_RATE).min(FORCED_IDR_BURST * 1000);
        self.tokens_at = Some(now);
    }

    /// When the next forced IDR may be: spacing after the last, and a whole token.
    fn allowed_at(&self) -> Option<Instant> {
        let spaced = self.last.map(|l| l + self.spacing);
        let missing = 1000u64.saturating_sub(self.tokens);
        let funded = self
            .tokens_at
            .filter(|_| missing > 0)
            .map(|t| t + Duration::from_millis(missing.div_ceil(FORCED_IDR_RATE)));
        match (spaced, funded) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether to ask the encoder for an IDR now; `false` defers it to [`IdrLimiter::deadline`].
    pub(super) fn request(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.allowed_at().is_some_and(|t| now < t) {
            self.deferred = true;
            return false;
        }
        self.take(now);
        true
    }

    fn take(&mut self, now: Instant) {
        self.tokens = self.tokens.saturating_sub(1000);
        self.last = Some(now);
        self.deferred = false;
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        // Deferred only while `allowed_at` was in the future, so it is known.
        self.allowed_at().filter(|_| self.deferred)
    }

    /// A deferred request whose time has come: ask now.
    pub(super) fn poll(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.refill(now);
            self.take(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_burst_gets_idrs_two_frames_apart_and_a_flood_is_bounded() {
        let t = Instant::now();
        let mut l = IdrLimiter::new(30);
        assert_eq!(l.spacing, Duration::from_micros(66_666));
        assert!(l.request(t));
        // 20 ms later: too soon; deferred to two frame intervals after the last.
        assert!(!l.request(ms(t, 20)));
        assert_eq!(l.deadline(), Some(t + l.spacing));
        assert!(!l.poll(ms(t, 60)));
        assert!(l.poll(ms(t, 67)));
        assert_eq!(l.deadline(), None);
        // A flood: a request every millisecond for 10 s forces at most the burst plus the rate.
        let mut forced = 2;
        for n in 68..10_068 {
            let now = ms(t, n);
            if l.request(now) || l.poll(now) {
                forced += 1;
            }
        }
        let bound = FORCED_IDR_BURST + FORCED_IDR_RATE * 10;
        assert!(forced <= bound, "{forced} forced IDRs in 10 s, bound {bound}");
        assert!(forced >= FORCED_IDR_RATE * 10 - 1, "the budget refills: {forced}");
    }

    #[test]
    fn a_natural_idr_clears_the_deferred_request_and_the_budget_refills() {
        let t = Instant::now();
        let mut l = IdrLimiter::new(30);
        for k in 0..FORCED_IDR_BURST {
            assert!(l.request(ms(t, k * 70)), "request {k}");
        }
        // Budget spent: past the spacing (140 + 67 ms) the next one still waits for a token.
        assert!(!l.request(ms(t, 210)));
        let d = l.deadline().unwrap();
        assert!(d > ms(t, 210), "{:?}", d.duration_since(t));
        assert!(!l.poll(ms(t, 211)));
        // The encoder's own IDR arrives first and serves the waiting joiner.
        l.deferred = false;
        assert_eq!(l.deadline(), None);
        assert!(!l.poll(ms(t, 2000)));
        assert!(l.request(ms(t, 2000)), "refilled after a quiet while");
    }
}
