//! Adaptive bitrate: a loss-based controller for one stream's live encoder (sans-IO, `no_std`,
//! no allocation).
//!
//! # Rules
//! - `handle_*` in, `poll_*` out. The loop feeds receiver reports with [`Abr::handle_report`]
//!   (fraction lost, as RTCP carries it, per receiver), receivers that leave with
//!   [`Abr::handle_leave`] and the stream's measured payload rate with
//!   [`Abr::handle_send_rate`]; then it drains [`Abr::poll_change`] and applies each change to
//!   the encoder. [`Abr::poll_timeout`] says when a probe step may next be due.
//! - The core never reads a clock: every call takes `now`; a `now` older than the latest seen is
//!   treated as the latest.
//! - Fixed capacity: at most [`MAX_RECEIVERS`] receivers are followed; a report from one more
//!   replaces the receiver heard from longest ago.
//!
//! # Invariants
//! - The target is always within `[min, max]` of [`AbrConfig`], and `min` is never below
//!   [`FLOOR_BPS`] whatever the configuration says (the CM4's bcm2835 H.264 encoder hangs below
//!   about 100 kbit/s, rpicam-apps #664).
//! - Each report acts at most once: a cut follows new evidence only, never the same report twice.
//! - Without evidence nothing goes up: with no live receiver, or any live receiver at 2 % loss or
//!   more, the target holds.
//!
//! # Policy (after GCC's loss-based controller, draft-ietf-rmcat-gcc-02 §6, and GStreamer's
//! webrtcsink, which share the thresholds)
//! - The controller follows the **worst live receiver**. A receiver is live while it reports at
//!   least every [`AbrConfig::receiver_timeout`]; a receiver that went silent (stalled client,
//!   dead link, a player that never sends receiver reports) is ignored, so it can neither hold
//!   the stream down nor, being silent, count as evidence for going up.
//! - Loss > 10 %: **cut**. GCC's cut is `rate × (1 − 0.5·loss)`; it is designed for feedback
//!   every ~100 ms. Plain RTCP receiver reports come every 2–7 s (RFC 3550's 5 s minimum,
//!   randomised), so a GCC cut alone needs several reports, tens of seconds, to get under a
//!   capacity drop. When the stream's measured send rate is known, heavy loss is also a
//!   measurement of the link: `delivered = send_rate × (1 − loss)`. The cut goes to the lower of
//!   GCC's rate and 90 % of `delivered` less the packets' headers (RTP/UDP/IP, about 4 %: the
//!   send rate counts the encoder's bytes), never below half the target in one step (cut factor
//!   0.5–0.98). The link also carries the receivers' retransmissions; receiver reports count
//!   loss before retransmission repairs it (GStreamer's `rtpsession` sees the RTX SSRC as a
//!   source of its own), so `loss` is the link's. A report whose interval lies mostly before the last cut describes the old rate and
//!   cuts nothing.
//! - Loss 2–10 %: **hold**, except right after a probe: loss that appears in the interval in which
//!   the target went up is the probe's doing, so the target goes back to the rate of that
//!   receiver's previous (clean) report (hysteresis upwards).
//! - Loss < 2 % from every live receiver: **probe** ×1.05, at most once per
//!   [`AbrConfig::probe_interval`], not before [`AbrConfig::hold_after_cut`] has passed since the
//!   last cut or failed probe.
//! - Each cut or failed probe remembers the delivered rate as a **ceiling**: probing stops where
//!   the cut would have gone (90 % of it, less headers) for [`AbrConfig::ceiling_ttl`] (so a settled stream does not keep knocking at a fixed
//!   cap), after which it probes past it in case the link got better — one step per round of
//!   reports, so an overshoot lasts one report interval, until it is 10 % past the old ceiling.
//!   Hitting about the same ceiling again that way doubles that time, up to
//!   [`AbrConfig::ceiling_ttl_max`].

use core::time::Duration;

use crate::time::Instant;

/// No target below this, whatever `abr-min` says: above the CM4 encoder's ~100 kbit/s hang.
pub const FLOOR_BPS: u32 = 150_000;
/// Receivers followed per stream; one more replaces the one heard from longest ago.
pub const MAX_RECEIVERS: usize = 32;
/// Changes remembered, to find the rate in effect at a receiver's previous report.
const HISTORY: usize = 16;

/// What the link carries on top of the encoder's bytes, in 1/1000: RTP, UDP and IPv4 headers
/// (40 bytes on packets of about 1000 to 1400 bytes: 3 to 4 %), and a little of the receivers'
/// retransmissions. The send rate the loop measures is the encoder's output, so a rate
/// measured from it is scaled by this before the link's headroom is taken.
const WIRE_OVERHEAD_PERMILLE: u32 = 40;

/// Loss thresholds in 1/256 (RTCP's `fraction lost` unit): > 10 % cuts, < 2 % probes.
const CUT_LOSS: u8 = 26; // 10.2 %
const PROBE_LOSS: u8 = 5; // 1.95 %

/// A receiver, as the loop names it (the RTSP session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiverId(pub u64);

/// How a receiver gets the stream, which says what its loss means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RTP over UDP: `fraction lost` from its receiver reports.
    Udp,
    /// Interleaved in the RTSP connection: TCP loses nothing, so its reports say 0; the loop
    /// reports instead the share of packets the session skipped because its socket backed up.
    Tcp,
}

/// Settings of one stream's controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbrConfig {
    pub min_bps: u32,
    pub max_bps: u32,
    /// The encoder's bitrate when the controller starts.
    pub start_bps: u32,
    pub probe_interval: Duration,
    pub hold_after_cut: Duration,
    pub receiver_timeout: Duration,
    pub ceiling_ttl: Duration,
    pub ceiling_ttl_max: Duration,
}

impl AbrConfig {
    /// The defaults for a stream between `min_bps` and `max_bps` starting at `start_bps`.
    pub const fn new(min_bps: u32, max_bps: u32, start_bps: u32) -> AbrConfig {
        AbrConfig {
            min_bps,
            max_bps,
            start_bps,
            probe_interval: Duration::from_secs(1),
            hold_after_cut: Duration::from_secs(3),
            // Three times RFC 3550's 5 s minimum report interval.
            receiver_timeout: Duration::from_secs(15),
            ceiling_ttl: Duration::from_secs(20),
            ceiling_ttl_max: Duration::from_secs(160),
        }
    }
}

/// Why the target changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The worst receiver reported more than 10 % loss (`loss` in 1/256).
    Loss { receiver: ReceiverId, transport: Transport, loss: u8 },
    /// Loss of 2–10 % right after a probe step: back to the last clean rate.
    ProbeFailed { receiver: ReceiverId, transport: Transport, loss: u8 },
    /// Every live receiver under 2 % loss; `worst` is the highest of them.
    Probe { receivers: u8, worst: u8 },
    /// Set from outside (RTSP `SET_PARAMETER bitrate:`), clamped to the bounds.
    Manual,
}

/// One change of the target, to apply to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from_bps: u32,
    pub to_bps: u32,
    pub reason: Reason,
}

/// What the controller is doing, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No live receiver: nothing to follow, the target holds.
    Idle,
    /// After a cut or a failed probe, or loss of 2–10 %: the target holds.
    Hold,
    /// Every live receiver clean: going up step by step.
    Probing,
    /// Clean, but at 90 % of a recently measured ceiling: holding below it.
    Ceiling,
    /// Clean and at `max`.
    AtMax,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Hold => "hold",
            State::Probing => "probing",
            State::Ceiling => "ceiling",
            State::AtMax => "max",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Receiver {
    id: ReceiverId,
    transport: Transport,
    loss: u8,
    at: Instant,
    /// When its report before this one came.
    prev_at: Option<Instant>,
    /// Not acted on yet.
    fresh: bool,
}

/// The controller of one stream.
#[derive(Debug)]
pub struct Abr {
    cfg: AbrConfig,
    target: u32,
    receivers: heapless::Vec<Receiver, MAX_RECEIVERS>,
    /// Measured payload rate and when.
    send_rate: Option<(u32, Instant)>,
    last_change: Option<Instant>,
    last_cut: Option<Instant>,
    last_probe: Option<Instant>,
    hold_until: Instant,
    /// Delivered rate measured at the last cut or failed probe, when, and how long it holds.
    ceiling: Option<(u32, Instant, Duration)>,
    /// `(when, from, to)` of the last changes, oldest first.
    history: heapless::Deque<(Instant, u32, u32), HISTORY>,
    latest: Instant,
}

/// `x × num / den` without overflow, saturating at `u32::MAX`.
fn scale(x: u32, num: u32, den: u32) -> u32 {
    (u64::from(x) * u64::from(num) / u64::from(den.max(1))).min(u64::from(u32::MAX)) as u32
}

/// The encoder rate that leaves the link 10 % headroom when `delivered` (encoder bytes, as
/// measured) is what it carried: headers and retransmissions on top
/// ([`WIRE_OVERHEAD_PERMILLE`]), then 90 % of that.
fn headroom(delivered: u32) -> u32 {
    scale(scale(delivered, 9, 10), 1000, 1000 + WIRE_OVERHEAD_PERMILLE)
}

/// Loss in 1/256 as whole percent, for log lines and tests.
pub fn loss_percent(loss: u8) -> u32 {
    (u32::from(loss) * 100 + 128) / 256
}

impl Abr {
    pub fn new(cfg: AbrConfig) -> Abr {
        let min = cfg.min_bps.max(FLOOR_BPS);
        let cfg = AbrConfig { min_bps: min, max_bps: cfg.max_bps.max(min), ..cfg };
        Abr {
            target: cfg.start_bps.clamp(cfg.min_bps, cfg.max_bps),
            cfg,
            receivers: heapless::Vec::new(),
            send_rate: None,
            last_change: None,
            last_cut: None,
            last_probe: None,
            hold_until: Instant::ZERO,
            ceiling: None,
            history: heapless::Deque::new(),
            latest: Instant::ZERO,
        }
    }

    /// The bounds in effect (`min` raised to [`FLOOR_BPS`]).
    pub fn bounds(&self) -> (u32, u32) {
        (self.cfg.min_bps, self.cfg.max_bps)
    }

    /// The encoder's target now.
    pub fn target(&self) -> u32 {
        self.target
    }

    fn clamp_now(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn live(&self, r: &Receiver, now: Instant) -> bool {
        now.saturating_since(r.at) <= self.cfg.receiver_timeout
    }

    /// A receiver report: `fraction_lost` in 1/256 since that receiver's previous report.
    pub fn handle_report(&mut self, id: ReceiverId, transport: Transport, fraction_lost: u8, now: Instant) {
        let now = self.clamp_now(now);
        if let Some(r) = self.receivers.iter_mut().find(|r| r.id == id) {
            *r = Receiver { id, transport, loss: fraction_lost, at: now, prev_at: Some(r.at), fresh: true };
            return;
        }
        let new = Receiver { id, transport, loss: fraction_lost, at: now, prev_at: None, fresh: true };
        if self.receivers.push(new).is_err() {
            // Full: the receiver heard from longest ago gives way.
            if let Some(oldest) = self.receivers.iter_mut().min_by_key(|r| r.at) {
                *oldest = new;
            }
        }
    }

    /// A receiver left (session ended).
    pub fn handle_leave(&mut self, id: ReceiverId) {
        self.receivers.retain(|r| r.id != id);
    }

    /// The stream's measured payload bit rate (over the last few seconds).
    pub fn handle_send_rate(&mut self, bps: u32, now: Instant) {
        let now = self.clamp_now(now);
        self.send_rate = Some((bps, now));
    }

    /// Sets the target from outside (clamped), and holds there for a while.
    pub fn set_target(&mut self, bps: u32, now: Instant) -> Option<Change> {
        let now = self.clamp_now(now);
        self.hold_until = now + self.cfg.hold_after_cut;
        self.ceiling = None;
        self.apply(bps, now, Reason::Manual)
    }

    fn apply(&mut self, to: u32, now: Instant, reason: Reason) -> Option<Change> {
        let to = to.clamp(self.cfg.min_bps, self.cfg.max_bps);
        if to == self.target {
            return None;
        }
        let from = self.target;
        self.target = to;
        self.last_change = Some(now);
        if self.history.is_full() {
            self.history.pop_front();
        }
        let _ = self.history.push_back((now, from, to));
        Some(Change { from_bps: from, to_bps: to, reason })
    }

    /// The target in effect when `t` came (changes made at `t` itself not counted).
    fn target_at(&self, t: Instant) -> u32 {
        let mut rate = self.history.front().map_or(self.target, |&(_, from, _)| from);
        for &(at, _, to) in self.history.iter() {
            if at < t {
                rate = to;
            }
        }
        rate
    }

    /// The rate the link carried: the measured send rate (when recent) or the target.
    fn sent_rate(&self, now: Instant) -> u32 {
        match self.send_rate {
            Some((bps, at)) if bps > 0 && now.saturating_since(at) <= Duration::from_secs(3) => bps,
            _ => self.target,
        }
    }

    fn set_ceiling(&mut self, delivered: u32, now: Instant) {
        let ttl = match self.ceiling {
            // Probing past an expired ceiling hit about the same one again: the link really is
            // there; knock less often. (Cuts while it holds, settling, start over.)
            Some((old, at, ttl))
                if now.saturating_since(at) >= ttl
                    && delivered > scale(old, 85, 100)
                    && delivered < scale(old, 115, 100) =>
            {
                (ttl * 2).min(self.cfg.ceiling_ttl_max)
            }
            _ => self.cfg.ceiling_ttl,
        };
        self.ceiling = Some((delivered, now, ttl));
    }

    fn ceiling_limit(&self, now: Instant) -> Option<u32> {
        let (c, at, ttl) = self.ceiling?;
        (now.saturating_since(at) < ttl).then(|| headroom(c))
    }

    /// The next change of the target, if any. Call after feeding input and on
    /// [`Abr::poll_timeout`], until `None`.
    #[must_use]
    pub fn poll_change(&mut self, now: Instant) -> Option<Change> {
        let now = self.clamp_now(now);
        let timeout = self.cfg.receiver_timeout;
        self.receivers.retain(|r| now.saturating_since(r.at) <= timeout);
        // New evidence: the worst report not acted on yet.
        let fresh = self.receivers.iter().filter(|r| r.fresh).max_by_key(|r| r.loss).copied();
        for r in self.receivers.iter_mut() {
            r.fresh = false;
        }
        if let Some(w) = fresh {
            if let Some(c) = self.on_fresh_report(w, now) {
                return Some(c);
            }
        }
        self.probe(now)
    }

    fn on_fresh_report(&mut self, w: Receiver, now: Instant) -> Option<Change> {
        if w.loss > CUT_LOSS {
            // A report whose interval lies mostly before the last cut describes the old rate.
            if let (Some(cut), Some(prev)) = (self.last_cut, w.prev_at) {
                if now.saturating_since(cut) * 2 < now.saturating_since(prev) {
                    return None;
                }
            }
            let keep = 256 - u32::from(w.loss);
            let gcc = scale(self.target, 512 - u32::from(w.loss), 512);
            let delivered = scale(self.sent_rate(now), keep, 256);
            let to = gcc.min(headroom(delivered)).clamp(scale(self.target, 1, 2), scale(self.target, 98, 100));
            self.last_cut = Some(now);
            self.last_probe = None;
            self.hold_until = now + self.cfg.hold_after_cut;
            self.set_ceiling(delivered, now);
            let reason = Reason::Loss { receiver: w.id, transport: w.transport, loss: w.loss };
            return self.apply(to, now, reason);
        }
        if w.loss >= PROBE_LOSS {
            // Hold, unless a probe step fell into this report's interval.
            let probed = match (self.last_probe, w.prev_at) {
                // A step made on the previous report's arrival counts: it ran in this interval.
                (Some(p), Some(prev)) => p >= prev,
                _ => false,
            };
            if !probed {
                return None;
            }
            let clean = w.prev_at.map_or(self.target, |t| self.target_at(t));
            let delivered = scale(self.sent_rate(now), 256 - u32::from(w.loss), 256);
            self.last_probe = None;
            self.last_cut = Some(now);
            self.hold_until = now + self.cfg.hold_after_cut;
            self.set_ceiling(delivered, now);
            let to = clean.min(self.target).min(headroom(delivered).max(scale(self.target, 1, 2)));
            let reason = Reason::ProbeFailed { receiver: w.id, transport: w.transport, loss: w.loss };
            return self.apply(to, now, reason);
        }
        None
    }

    fn probe(&mut self, now: Instant) -> Option<Change> {
        if self.state(now) != State::Probing {
            return None;
        }
        if now < self.hold_until || self.last_change.is_some_and(|t| now.saturating_since(t) < self.cfg.probe_interval)
        {
            return None;
        }
        let mut to = scale(self.target, 105, 100).max(self.target + 1000);
        if let Some(limit) = self.ceiling_limit(now) {
            to = to.min(limit);
        } else if let Some((c, _, _)) = self.ceiling {
            // Past an expired ceiling: one step per round of reports, so an overshoot is one
            // step for one report interval; well past it, the link got better: forget it.
            let heard =
                self.receivers.iter().filter(|r| self.live(r, now)).all(|r| self.last_probe.is_none_or(|p| r.at > p));
            if !heard {
                return None;
            }
            if self.target > scale(c, 11, 10) {
                self.ceiling = None;
            }
        }
        if to <= self.target {
            return None;
        }
        let live = self.receivers.iter().filter(|r| self.live(r, now));
        let (receivers, worst) = live.fold((0u8, 0u8), |(n, w), r| (n.saturating_add(1), w.max(r.loss)));
        self.last_probe = Some(now);
        self.apply(to, now, Reason::Probe { receivers, worst })
    }

    /// What the controller is doing now.
    pub fn state(&self, now: Instant) -> State {
        let now = self.latest.max(now);
        let mut any = false;
        for r in self.receivers.iter().filter(|r| self.live(r, now)) {
            any = true;
            if r.loss >= PROBE_LOSS {
                return State::Hold;
            }
        }
        if !any {
            return State::Idle;
        }
        if now < self.hold_until {
            return State::Hold;
        }
        if self.target >= self.cfg.max_bps {
            return State::AtMax;
        }
        if self.ceiling_limit(now).is_some_and(|l| l <= self.target) {
            return State::Ceiling;
        }
        State::Probing
    }

    /// When a probe step may be due (the loop also calls [`Abr::poll_change`] on every report).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state(self.latest), State::Idle | State::AtMax) {
            return None;
        }
        let step = self.last_change.map_or(self.latest, |t| t + self.cfg.probe_interval);
        Some(step.max(self.hold_until))
    }

    /// The worst live receiver's last report: `(id, transport, loss in 1/256)`.
    pub fn worst(&self, now: Instant) -> Option<(ReceiverId, Transport, u8)> {
        let now = self.latest.max(now);
        self.receivers.iter().filter(|r| self.live(r, now)).max_by_key(|r| r.loss).map(|r| (r.id, r.transport, r.loss))
    }

    /// Live receivers followed now.
    pub fn receivers(&self, now: Instant) -> usize {
        let now = self.latest.max(now);
        self.receivers.iter().filter(|r| self.live(r, now)).count()
    }
}

#[cfg(test)]
mod tests;
