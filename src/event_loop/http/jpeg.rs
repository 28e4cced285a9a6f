//! Where each stream's JPEG frames come from, its latest frame and the demand for it.

use std::time::Instant;

use super::conn::{Close, State};
use super::{HttpCore, DEMAND_LINGER, FRESH_FRAME_MAX_AGE, MAX_REASON_BYTES};
use crate::http;
use crate::wbuf::WBuf;

/// One stream as HTTP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::event_loop) struct HttpStream {
    /// The stream path, e.g. `/live`: served as `/live.mjpeg` and `/live.jpg`.
    pub(in crate::event_loop) path: String,
    pub(in crate::event_loop) supply: JpegSupply,
    /// Offered over WebRTC (an H.264 stream while WebRTC is on): the page plays it over WHEP.
    pub(in crate::event_loop) webrtc: bool,
}

/// Where the JPEG frames of a stream's HTTP routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::event_loop) enum JpegSupply {
    /// The stream itself is JPEG.
    Stream,
    /// The loop can start a side encoder while [`HttpCore::wants_frames`] says so.
    OnDemand,
    /// No JPEG frames: the JPEG routes answer `503` with this reason.
    Unavailable(String),
}

/// One stream's supply, latest frame and demand.
#[derive(Debug)]
pub(in crate::event_loop) struct StreamState {
    pub(in crate::event_loop) path: String,
    pub(in crate::event_loop) supply: JpegSupply,
    /// The latest JPEG frame, its sequence number (0 = none yet) and when it was stored.
    pub(in crate::event_loop) latest: Vec<u8>,
    pub(in crate::event_loop) latest_seq: u64,
    pub(in crate::event_loop) latest_at: Option<Instant>,
    /// When a client last asked for or took a frame (for [`HttpCore::wants_frames`]).
    pub(in crate::event_loop) last_demand: Option<Instant>,
    pub(in crate::event_loop) parts_sent: u64,
    pub(in crate::event_loop) webrtc: bool,
}

impl StreamState {
    pub(in crate::event_loop) fn unavailable(&self) -> Option<&str> {
        match &self.supply {
            JpegSupply::Unavailable(why) => Some(why),
            JpegSupply::Stream | JpegSupply::OnDemand => None,
        }
    }

    /// The latest frame arrived within [`FRESH_FRAME_MAX_AGE`].
    pub(in crate::event_loop) fn fresh(&self, now: Instant) -> bool {
        self.latest_at.is_some_and(|t| now.saturating_duration_since(t) <= FRESH_FRAME_MAX_AGE)
    }
}

/// The streams as the index page lists them.
pub(in crate::event_loop) fn index_entries(streams: &[StreamState]) -> impl Iterator<Item = http::IndexEntry<'_>> + '_ {
    streams.iter().map(|s| http::IndexEntry { path: &s.path, unavailable: s.unavailable(), webrtc: s.webrtc })
}

impl HttpCore<'_> {
    /// MJPEG streams of `stream` playing.
    pub(in crate::event_loop) fn streaming(&self, stream: usize) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.is_open() && matches!(c.state, State::Streaming { stream: s, .. } if s == stream))
            .count()
    }

    /// MJPEG parts (frames) sent to the clients of `stream` so far.
    pub(in crate::event_loop) fn parts_sent(&self, stream: usize) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.parts_sent)
    }

    /// Tells where the JPEG frames of `stream` come from now (the loop calls it when the
    /// pipeline is rebuilt). Becoming `Unavailable` answers that stream's waiting snapshots with
    /// the reason, ends its MJPEG streams after the part being sent, and forgets its latest frame.
    pub(in crate::event_loop) fn set_supply(&mut self, stream: usize, supply: JpegSupply, now: Instant) {
        let Some(st) = self.streams.get_mut(stream) else { return };
        st.supply = bounded_reason(supply);
        let JpegSupply::Unavailable(why) = &st.supply else { return };
        let why = why.clone();
        st.latest_at = None;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut().filter(|c| c.is_open() && c.state.stream() == Some(stream)) else {
                continue;
            };
            match c.state {
                State::WaitingFrame { persistence, .. } => {
                    let mut w = WBuf::new(&mut self.scratch);
                    if http::write_text(&mut w, 503, &why, persistence).is_err() {
                        c.close(Close::Drop);
                        continue;
                    }
                    log::debug!("http {}: snapshot -> 503 ({why})", c.peer);
                    c.queue(w.written(), None, now);
                    c.state = State::after_response(persistence);
                }
                State::Streaming { .. } => {
                    log::info!("http {}: MJPEG stream ended: {why}", c.peer);
                    c.state = State::Closing;
                }
                _ => continue,
            }
            self.advance(i, now);
        }
    }

    /// Whether JPEG frames of `stream` are wanted: while a client streams it or waits for its
    /// snapshot, and for [`DEMAND_LINGER`] after a client last asked for or took one of it.
    pub(in crate::event_loop) fn wants_frames(&self, stream: usize, now: Instant) -> bool {
        let Some(st) = self.streams.get(stream).filter(|s| s.unavailable().is_none()) else { return false };
        let waiting = self.conns.iter().flatten().any(|c| c.is_open() && c.state.stream() == Some(stream));
        waiting || st.last_demand.is_some_and(|t| now.saturating_duration_since(t) < DEMAND_LINGER)
    }

    /// Keeps the latest frame of `stream` (a copy into that stream's buffer) and when it
    /// arrived. Call [`HttpCore::pump_stream`] after it to send it.
    pub(in crate::event_loop) fn store_frame(&mut self, stream: usize, jpeg: &[u8], now: Instant) {
        let Some(st) = self.streams.get_mut(stream).filter(|s| s.unavailable().is_none()) else { return };
        st.latest.clear();
        st.latest.extend_from_slice(jpeg);
        st.latest_seq += 1;
        st.latest_at = Some(now);
    }

    /// Pumps the clients of one stream (after store_frame of that stream): sends its latest frame
    /// to each of its streaming clients that is idle and each snapshot waiting for it.
    pub(in crate::event_loop) fn pump_stream(&mut self, stream: usize, now: Instant) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.state.stream() == Some(stream)) {
                self.advance(i, now);
            }
        }
    }
}

/// Cuts an `Unavailable` reason to [`MAX_REASON_BYTES`] (at a character boundary) so its `503`
/// always fits the response buffer.
pub(in crate::event_loop) fn bounded_reason(supply: JpegSupply) -> JpegSupply {
    match supply {
        JpegSupply::Unavailable(mut why) if why.len() > MAX_REASON_BYTES => {
            let mut end = MAX_REASON_BYTES;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            JpegSupply::Unavailable(why)
        }
        supply => supply,
    }
}
