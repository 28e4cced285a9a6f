//! The last [`LATENCY_RING`] latency samples of a stream (µs), for the percentiles of
//! `/status` and `/metrics`. Fixed size, allocated once; a push overwrites the oldest.

/// Samples behind a stream's latency percentiles.
pub(super) const LATENCY_RING: usize = 256;

#[derive(Debug)]
pub(super) struct LatencyRing {
    v: Box<[u32; LATENCY_RING]>,
    next: usize,
}

impl Default for LatencyRing {
    fn default() -> Self {
        LatencyRing { v: Box::new([0; LATENCY_RING]), next: 0 }
    }
}

impl LatencyRing {
    pub(super) fn push(&mut self, us: u32) {
        self.v[self.next % LATENCY_RING] = us;
        self.next = self.next.wrapping_add(1);
    }

    /// p50 and p99 of the samples kept; `(0, 0)` before the first.
    pub(super) fn p50_p99(&self) -> (u32, u32) {
        let n = self.next.min(LATENCY_RING);
        if n == 0 {
            return (0, 0);
        }
        let mut v = [0u32; LATENCY_RING];
        v[..n].copy_from_slice(&self.v[..n]);
        let v = &mut v[..n];
        v.sort_unstable();
        let pick = |q: f64| v[((n - 1) as f64 * q).round() as usize];
        (pick(0.5), pick(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_last_samples_only() {
        let mut r = LatencyRing::default();
        assert_eq!(r.p50_p99(), (0, 0));
        for us in 1..=100 {
            r.push(us);
        }
        assert_eq!(r.p50_p99(), (51, 99));
        for _ in 0..LATENCY_RING {
            r.push(7);
        }
        assert_eq!(r.p50_p99(), (7, 7));
    }
}
