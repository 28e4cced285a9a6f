//! A request head becomes a response, a stream, or a wait (for a frame or the loop).

use std::time::Instant;

use super::conn::{Appender, Close, State};
use super::jpeg::index_entries;
use super::{HttpCore, Report};
use crate::http::{self, Method, Parsed, Persistence, Route};
use crate::rtsp::auth::Verdict;
use crate::wbuf::WBuf;

impl HttpCore<'_> {
    /// Parses the request at the start of the input buffer, if the connection waits for one, and
    /// queues its response (or starts the stream, or the wait for a frame).
    pub(super) fn handle_input(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns[i].as_mut().filter(|c| c.is_open()) else { return };
        let since = match c.state {
            State::Idle { .. } if c.inlen > 0 => now,
            State::Reading { since } => since,
            _ => return,
        };
        c.state = State::Reading { since };
        let mut w = WBuf::new(&mut self.scratch);
        let (request, consumed) = match http::parse_request(&c.inbuf[..c.inlen]) {
            Ok(Parsed::Incomplete) => return,
            Err(e) => {
                log::debug!("http {}: bad request ({e:?}): {}", c.peer, e.status());
                let _ = http::write_error(&mut w, e.status(), Persistence::Close);
                c.queue(w.written(), None, now);
                c.state = State::Closing;
                c.inlen = 0;
                return;
            }
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
        };
        let head = request.method == Method::Head;
        let persistence = request.persistence();
        let streams = &self.streams;
        let route = match http::route(&request, streams.iter().map(|s| s.path.as_str())) {
            Route::Index
            | Route::Mjpeg(_)
            | Route::Snapshot(_)
            | Route::Status
            | Route::Metrics
            | Route::Record(..)
            | Route::BadRecordAction
            | Route::WhepEnd(..)
                if request.has_body =>
            {
                None
            }
            route => Some(route),
        };
        // Everything but a malformed or unsupported request needs the credentials, when set: a
        // picture those of its stream's path, the page and 404s those of any stream.
        let denied = match (&self.auth, route) {
            (None, _) | (_, None | Some(Route::MethodNotAllowed)) => None,
            (Some((auth, epoch)), Some(route)) => {
                let now_s = now.saturating_duration_since(*epoch).as_secs();
                let method = match request.method {
                    Method::Head => "HEAD",
                    Method::Post => "POST",
                    Method::Delete => "DELETE",
                    _ => "GET",
                };
                let authorization = request.authorization;
                let verdict = match route {
                    Route::Mjpeg(s)
                    | Route::Snapshot(s)
                    | Route::Record(s, _)
                    | Route::Whep(s)
                    | Route::WhepEnd(s, _) => auth.verify(authorization, method, &streams[s].path, now_s),
                    _ => verify_any(auth, authorization, method, streams.iter().map(|s| s.path.as_str()), now_s),
                };
                match verdict {
                    Verdict::Allowed { .. } => None,
                    Verdict::Denied => Some((auth, now_s, false)),
                    Verdict::Stale => Some((auth, now_s, true)),
                }
            }
        };
        let mut frame = None;
        let mut index_body = false;
        let mut demand = None;
        let written = match (route, denied) {
            // Bodies are not read, so the connection cannot go on (persistence is Close).
            (None, _) => http::write_error(&mut w, 400, Persistence::Close).map(|_| State::Closing),
            (Some(Route::MethodNotAllowed), _) => {
                http::write_error(&mut w, 405, persistence).map(|_| State::after_response(persistence))
            }
            (Some(_), Some((auth, now_s, stale))) => http::write_unauthorized(&mut w, auth, now_s, stale, persistence)
                .map(|_| State::after_response(persistence)),
            // The head now; the page goes straight into the output buffer after it.
            (Some(Route::Index), None) => {
                index_body = !head;
                let len = http::index_len(index_entries(streams));
                http::write_head(&mut w, 200, "text/html; charset=utf-8", Some(len), persistence)
                    .map(|_| State::after_response(persistence))
            }
            // With a body (not read) the persistence is Close.
            (Some(Route::NotFound), None) => {
                http::write_error(&mut w, 404, persistence).map(|_| State::after_response(persistence))
            }
            (Some(Route::Status), None) => Ok(State::WaitingReport { report: Report::Status, head, persistence }),
            (Some(Route::Metrics), None) => Ok(State::WaitingReport { report: Report::Metrics, head, persistence }),
            (Some(Route::Record(stream, start)), None) => {
                Ok(State::WaitingReport { report: Report::Record { stream, start }, head, persistence })
            }
            (Some(Route::WhepEnd(stream, id)), None) => {
                Ok(State::WaitingReport { report: Report::WhepEnd { stream, id }, head, persistence })
            }
            // The offer's head is checked before a byte of its body is read.
            (Some(Route::Whep(stream)), None) => {
                let len = request.content_length as usize;
                let refused = if !streams[stream].webrtc {
                    Some((404, "this stream is not offered over WebRTC (H.264 streams only, webrtc-port not 0)"))
                } else if !request.is_sdp() {
                    Some((415, "a WHEP offer is Content-Type: application/sdp"))
                } else if !request.body_framed() || len == 0 {
                    Some((400, "a WHEP offer needs a Content-Length and a body"))
                } else if len > http::MAX_OFFER_BYTES {
                    Some((413, "the offer is larger than this server accepts"))
                } else {
                    None
                };
                match refused {
                    Some((status, why)) => {
                        http::write_text(&mut w, status, why, Persistence::Close).map(|_| State::Closing)
                    }
                    None => {
                        // Body bytes that came with the head.
                        let have = (c.inlen - consumed).min(len);
                        c.body.clear();
                        c.body.extend_from_slice(&c.inbuf[consumed..consumed + have]);
                        Ok(State::ReadingBody { stream, len, since: now })
                    }
                }
            }
            (Some(Route::BadRecordAction), None) => {
                http::write_text(&mut w, 400, "POST /PATH/record?start or /PATH/record?stop", persistence)
                    .map(|_| State::after_response(persistence))
            }
            (Some(picture @ (Route::Snapshot(stream) | Route::Mjpeg(stream))), None) => {
                let st = &streams[stream];
                let fresh = st.fresh(now);
                demand = st.unavailable().is_none().then_some(stream);
                match (picture, st.unavailable()) {
                    (_, Some(why)) => {
                        http::write_text(&mut w, 503, why, persistence).map(|_| State::after_response(persistence))
                    }
                    (Route::Snapshot(_), None) if fresh => {
                        frame = (!head).then_some(&st.latest[..]);
                        http::write_head(&mut w, 200, "image/jpeg", Some(st.latest.len()), persistence)
                            .map(|_| State::after_response(persistence))
                    }
                    (Route::Snapshot(_), None) => {
                        Ok(State::WaitingFrame { stream, since: now, seen: st.latest_seq, head, persistence })
                    }
                    (_, None) if head => {
                        http::write_mjpeg_head(&mut w, persistence).map(|_| State::after_response(persistence))
                    }
                    // The stream starts with the latest frame only if it is fresh, else with the next.
                    (_, None) => {
                        let sent = if fresh { st.latest_seq.saturating_sub(1) } else { st.latest_seq };
                        http::write_mjpeg_head(&mut w, Persistence::Close).map(|_| State::Streaming { stream, sent })
                    }
                }
            }
        };
        let Ok(next) = written else {
            log::warn!("http {}: response to {} did not fit its buffer; closing", c.peer, request.path);
            c.close(Close::Drop);
            return;
        };
        let status = std::str::from_utf8(w.written().get(9..12).unwrap_or(b"...")).unwrap_or("...");
        match next {
            State::WaitingFrame { .. } => log::debug!("http {}: {} waits for a fresh frame", c.peer, request.path),
            State::WaitingReport { .. } | State::ReadingBody { .. } => {
                log::debug!("http {}: {:?} {}", c.peer, request.method, request.path)
            }
            _ => log::debug!("http {}: {:?} {} -> {status} {persistence:?}", c.peer, request.method, request.path),
        }
        if let State::Streaming { .. } = next {
            log::info!("http {}: MJPEG stream started: {}", c.peer, request.path);
        }
        c.queue(w.written(), frame, now);
        if index_body {
            // Cannot fail: the sink grows (the pooled output buffer keeps its capacity).
            let _ = http::write_index(&mut Appender(&mut c.out), index_entries(streams));
        }
        c.state = next;
        if matches!(next, State::Closing | State::Streaming { .. } | State::ReadingBody { .. }) {
            c.inlen = 0;
        } else {
            // Pipelined bytes stay for the next request.
            c.inbuf.copy_within(consumed..c.inlen, 0);
            c.inlen -= consumed;
        }
        if let Some(stream) = demand {
            self.streams[stream].last_demand = Some(now);
        }
        // A body that came whole with the head.
        self.body_progress(i);
    }
}

/// The verdict on credentials for a route of no stream (the page, a `404`): allowed for a user
/// allowed on any of `paths` (or on `/` when there is no stream), else stale if a Digest answer
/// on an expired nonce would be allowed, else denied.
fn verify_any<'u, 'p>(
    auth: &'u crate::rtsp::auth::Auth<'_>,
    authorization: Option<&str>,
    method: &str,
    paths: impl Iterator<Item = &'p str>,
    now_s: u64,
) -> Verdict<'u> {
    let mut verdict = None;
    for path in paths {
        match auth.verify(authorization, method, path, now_s) {
            allowed @ Verdict::Allowed { .. } => return allowed,
            Verdict::Stale => verdict = Some(Verdict::Stale),
            Verdict::Denied => verdict = verdict.or(Some(Verdict::Denied)),
        }
    }
    verdict.unwrap_or_else(|| auth.verify(authorization, method, "/", now_s))
}
