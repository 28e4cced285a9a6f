//! The loop's side of adaptive bitrate (the controller and its policy are [`crate::abr`]): which
//! receivers a stream's controller hears, when it runs, and what a change does.
//!
//! Invariants:
//! - Only the loop reads the clock: a stream's controller runs every [`TICK`] from `on_timers`
//!   (its deadline is part of the stream's), never on its own.
//! - Receivers are the stream's playing sessions. UDP sessions: their RTCP receiver reports as the
//!   RTSP core keeps them (a new one shows as the report count going up, so neither the RTCP path
//!   nor the core changes for ABR). Interleaved (TCP) sessions lose nothing, their reports say 0:
//!   their loss is the share of packets they skipped because their socket backed up (the reader
//!   fell behind the ring), taken once a second. Multicast and push receivers are not followed:
//!   their reports reach no session.
//! - A change goes to the encoder at once (`Pipeline::set_bitrate`) and is logged with its reason.
//!   Both the software and the M2M encoder change their rate live, without an IDR. A cut also
//!   asks for an IDR through the stream's IDR budget: receivers that lost packets show a broken
//!   picture until the next IDR. A stream whose pipeline cannot change its bitrate (passthrough)
//!   is left alone, and the log says so once per pipeline.
//! - A rebuilt pipeline is given the controller's current target.

use std::time::{Duration, Instant};

use super::EventLoop;
use crate::abr::{self, loss_percent, Abr, AbrConfig, Change, Reason, ReceiverId, Transport};
use crate::config::AbrSettings;
use crate::rtsp::session::{Delivery, SessionState};
use crate::source::Pipeline;

/// How often a stream's controller runs (receiver reports come every few seconds).
pub(super) const TICK: Duration = Duration::from_millis(250);
/// How often a TCP session's skipped share is taken as its loss.
const TCP_PERIOD: Duration = Duration::from_secs(1);

/// What was last seen of the session in one slot.
#[derive(Debug, Clone, Copy)]
struct Seen {
    session: u64,
    reports: u32,
    sent: u64,
    dropped: u64,
    at: Instant,
}

/// One stream's controller and what the loop keeps around it.
#[derive(Debug)]
pub(super) struct StreamAbr {
    pub(super) ctl: Abr,
    /// Per session slot.
    seen: Vec<Option<Seen>>,
    next_tick: Instant,
    /// Whether the current pipeline takes bitrate changes (not a passthrough).
    pub(super) drives: bool,
    pub(super) changes: u64,
    /// The last change and its reason, as logged.
    pub(super) last: Option<String>,
}

impl StreamAbr {
    pub(super) fn new(s: AbrSettings, bitrate: u32, slots: usize, now: Instant) -> StreamAbr {
        StreamAbr {
            ctl: Abr::new(AbrConfig::new(s.min_bps, s.max_bps, bitrate)),
            seen: vec![None; slots],
            next_tick: now,
            drives: false,
            changes: 0,
            last: None,
        }
    }

    /// When the controller wants to run next (`None` while it drives nothing).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.drives.then_some(self.next_tick)
    }

    /// A (new) pipeline: give it the current target, and find out whether it takes one.
    pub(super) fn attach(&mut self, path: &str, p: &mut dyn Pipeline) {
        self.drives = p.set_bitrate(self.ctl.target());
        let (min, max) = self.ctl.bounds();
        if self.drives {
            log::info!(
                "abr: {path} on: {} kbit/s now, between {} and {} kbit/s, following the worst receiver's loss",
                self.ctl.target() / 1000,
                min / 1000,
                max / 1000
            );
        } else {
            log::info!("abr: {path}: this pipeline cannot change its bitrate ({}): left alone", p.describe());
        }
    }
}

impl EventLoop<'_> {
    /// Runs stream `si`'s controller when its tick is due: new reports in, changes out.
    pub(super) fn tick_abr(&mut self, si: usize, now: Instant) {
        let core_now = self.core_now(now);
        let st = &mut self.streams[si];
        let measured = st.measured().1;
        let Some(a) = st.abr.as_mut().filter(|a| a.drives && now >= a.next_tick) else { return };
        a.next_tick = now + TICK;
        if measured > 0.0 {
            a.ctl.handle_send_rate(measured.min(f64::from(u32::MAX)) as u32, core_now);
        }
        for (slot, sess) in self.server.sessions().iter().enumerate() {
            let Some(seen) = a.seen.get_mut(slot) else { break };
            let reader = &self.slots[slot].reader;
            let mine = sess.state == SessionState::Playing && sess.stream == si;
            if let Some(old) = *seen {
                if !mine || old.session != sess.id {
                    a.ctl.handle_leave(ReceiverId(old.session));
                    *seen = None;
                }
            }
            if !mine {
                continue;
            }
            let s = seen.get_or_insert(Seen {
                session: sess.id,
                reports: 0,
                sent: reader.sent,
                dropped: reader.dropped,
                at: now,
            });
            let id = ReceiverId(sess.id);
            match sess.delivery {
                Delivery::Udp { .. } => {
                    if sess.reception.reports != s.reports {
                        s.reports = sess.reception.reports;
                        a.ctl.handle_report(id, Transport::Udp, sess.reception.fraction_lost, core_now);
                    }
                }
                Delivery::Interleaved { .. } if now.saturating_duration_since(s.at) >= TCP_PERIOD => {
                    let sent = reader.sent.saturating_sub(s.sent);
                    let skipped = reader.dropped.saturating_sub(s.dropped);
                    (s.sent, s.dropped, s.at) = (reader.sent, reader.dropped, now);
                    if let Some(share) = skipped.saturating_mul(256).checked_div(sent + skipped) {
                        a.ctl.handle_report(id, Transport::Tcp, share.min(255) as u8, core_now);
                    }
                }
                Delivery::Interleaved { .. } | Delivery::Multicast { .. } => {}
            }
        }
        let mut changes = Vec::new();
        while let Some(c) = a.ctl.poll_change(core_now) {
            changes.push(c);
        }
        for c in changes {
            self.apply_abr(si, c, now);
        }
    }

    /// The peer address of the session `id`, for log lines.
    fn receiver_name(&self, id: ReceiverId) -> String {
        let slot = self.server.sessions().iter().position(|s| s.state != SessionState::Free && s.id == id.0);
        match slot.and_then(|s| self.slots[s].peer) {
            Some(p) => p.ip().to_canonical().to_string(),
            None => format!("session {:016X}", id.0),
        }
    }

    fn apply_abr(&mut self, si: usize, c: Change, now: Instant) {
        let why = match c.reason {
            Reason::Loss { receiver, transport: Transport::Udp, loss } => {
                format!("worst receiver {} lost {} %", self.receiver_name(receiver), loss_percent(loss))
            }
            Reason::Loss { receiver, transport: Transport::Tcp, loss } => format!(
                "worst receiver {} (TCP) skipped {} % of packets",
                self.receiver_name(receiver),
                loss_percent(loss)
            ),
            Reason::ProbeFailed { receiver, loss, .. } => format!(
                "receiver {} lost {} % after the last step up: back to the last clean rate",
                self.receiver_name(receiver),
                loss_percent(loss)
            ),
            Reason::Probe { receivers, worst } => {
                format!("{receivers} receiver(s) under 2 % loss (worst {} %): step up", loss_percent(worst))
            }
            Reason::Manual => "set by SET_PARAMETER".to_owned(),
        };
        let st = &mut self.streams[si];
        let line = format!("{} → {} kbit/s: {why}", c.from_bps / 1000, c.to_bps / 1000);
        log::info!("abr: {} {line}", st.cfg.path);
        let applied = st.pipeline.as_mut().is_some_and(|p| p.set_bitrate(c.to_bps));
        if let Some(a) = st.abr.as_mut() {
            a.changes += 1;
            a.last = Some(line);
        }
        if applied && c.to_bps < c.from_bps && !matches!(c.reason, Reason::Manual) {
            st.request_idr(now);
        }
    }

    /// `SET_PARAMETER bitrate:` on a stream with ABR: the controller takes it (clamped to its
    /// bounds) and holds there a while. Returns the bitrate to set.
    pub(super) fn abr_manual(&mut self, si: usize, bps: u32, now: Instant) -> u32 {
        let core_now = self.core_now(now);
        let Some(a) = self.streams[si].abr.as_mut() else { return bps };
        if let Some(c) = a.ctl.set_target(bps, core_now) {
            a.changes += 1;
            a.last = Some(format!("{} → {} kbit/s: set by SET_PARAMETER", c.from_bps / 1000, c.to_bps / 1000));
        }
        a.ctl.target()
    }
}

/// The states `/metrics` names, one series each.
pub(super) const STATES: [abr::State; 5] =
    [abr::State::Idle, abr::State::Hold, abr::State::Probing, abr::State::Ceiling, abr::State::AtMax];
