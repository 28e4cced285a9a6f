//! Time as the protocol cores see it: an opaque monotonic instant handed in by the loop.
//!
//! The cores never read a clock; the event loop converts `std::time::Instant` into this type
//! (microseconds since the loop started) and passes it to every `handle_*`/`poll_*` call.

use core::ops::Add;
use core::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.as_micros().min(u128::from(u64::MAX)) as u64))
    }
}
