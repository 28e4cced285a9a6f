//! WHEP offers on HTTP connections: the body is read into the connection's body buffer, then
//! the loop (which owns the WebRTC sessions) answers each complete offer in the same turn.
//!
//! Invariants: an offer is at most [`http::MAX_OFFER_BYTES`] (checked on the head, before a byte
//! of body is read); a connection that sent an offer closes after its answer (whatever came after
//! the body is never parsed); a body that does not arrive within `request-timeout` gets `408`.

use std::time::Instant;

use super::conn::{Close, State};
use super::HttpCore;
use crate::http::{self, Persistence};
use crate::wbuf::WBuf;

/// What the loop answers an offer with.
#[derive(Debug)]
pub(in crate::event_loop) enum WhepAnswer<'a> {
    /// `201 Created`: the session's id (its `Location` is `PATH/whep/ID`) and the answer SDP.
    Created { id: u64, sdp: &'a str },
    /// Any other status, with a one-line reason.
    Refused { status: u16, why: &'a str },
}

impl HttpCore<'_> {
    /// A connection reading a WHEP body moves on once the body is complete; one whose client
    /// hung up before that is closed.
    pub(super) fn body_progress(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut().filter(|c| c.is_open()) else { return };
        let State::ReadingBody { stream, len, .. } = c.state else { return };
        if c.body.len() >= len {
            c.state = State::WaitingWhep { stream };
        } else if c.peer_eof {
            log::debug!("http {}: WHEP offer cut short ({} of {len} bytes)", c.peer, c.body.len());
            c.close(Close::Drop);
        }
    }

    /// The complete offers waiting for an answer: `(connection, stream)`; the offer is
    /// [`HttpCore::whep_offer`].
    pub(in crate::event_loop) fn whep_offers(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.conns.iter().enumerate().filter_map(|(i, c)| match c.as_ref().filter(|c| c.is_open())?.state {
            State::WaitingWhep { stream } => Some((i, stream)),
            _ => None,
        })
    }

    /// The offer of connection `i` (empty when it has none) and its peer's address.
    pub(in crate::event_loop) fn whep_offer(&self, i: usize) -> (&[u8], Option<std::net::SocketAddr>) {
        self.conns.get(i).and_then(|c| c.as_ref()).map_or((&[][..], None), |c| (&c.body[..], Some(c.peer)))
    }

    /// Answers the offer of connection `i`; `path` is its stream's path (for the `Location`).
    pub(in crate::event_loop) fn answer_whep(&mut self, i: usize, answer: WhepAnswer<'_>, now: Instant) {
        let Some(c) = self.conns.get_mut(i).and_then(|c| c.as_mut()).filter(|c| c.is_open()) else { return };
        let State::WaitingWhep { stream } = c.state else { return };
        let path = self.streams[stream].path.trim_end_matches('/');
        let mut w = WBuf::new(&mut self.scratch);
        let (written, body) = match answer {
            WhepAnswer::Created { id, sdp } => {
                let mut location = heapless::String::<320>::new();
                let _ = core::fmt::Write::write_fmt(&mut location, format_args!("{path}/whep/{id:016x}"));
                log::info!("http {}: WHEP session {id:016x} for {path} created", c.peer);
                (http::write_created(&mut w, "application/sdp", &location, sdp.len()), Some(sdp))
            }
            WhepAnswer::Refused { status, why } => {
                log::info!("http {}: WHEP offer for {path} refused: {status} {why}", c.peer);
                (http::write_text(&mut w, status, why, Persistence::Close), None)
            }
        };
        if written.is_err() {
            c.close(Close::Drop);
            return;
        }
        c.queue(w.written(), body.map(str::as_bytes), now);
        c.body.clear();
        c.state = State::Closing;
        self.advance(i, now);
    }
}
