//! The input side of one RTSP connection, sans-IO: buffering, pipelined requests and
//! interleaved frames, the request-rate bucket, the slow-request and idle timers, and the peer's
//! half-close.
//!
//! # Rules
//! - `handle_*` in, `poll_*` out: the loop reads into [`ConnInput::read_space`] and reports it
//!   with [`ConnInput::handle_read`] (or the peer's FIN with [`ConnInput::handle_peer_closed`]),
//!   then drains [`ConnInput::poll_item`] while it has room for a response, and asks
//!   [`ConnInput::poll_expired`] once a second.
//! - Every call takes `now`; the core never reads a clock.
//! - Fixed memory: the caller's buffer, nothing else. A request that does not fit is the
//!   parser's `413`/`431`.
//!
//! # Half-close
//! After the peer's FIN no more bytes come: every complete request already received is still
//! handed out (and answered by the caller), then [`ConnInput::finished`] says the connection is
//! done. An incomplete rest can never complete and is dropped.

use core::time::Duration;

use super::parse::{parse_input, Input, ParseError, Request};
use crate::limits;
use crate::time::Instant;

/// The per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnPolicy {
    /// Longest a request may take from its first byte to its end (slowloris guard).
    pub request_timeout: Duration,
    /// Longest a connection without a session may stay silent.
    pub idle_timeout: Duration,
    /// Requests per second, in bursts of [`limits::REQUEST_BURST`].
    pub max_request_rate: u32,
}

/// What came in. Short-lived, on the stack: the request's fixed header table is the big variant.
#[derive(Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Item<'a> {
    Request(Request<'a>),
    /// A `$`-framed binary frame (RFC 2326 §10.12): client RTCP on an interleaved session.
    Interleaved {
        channel: u8,
        data: &'a [u8],
    },
    /// A request over the rate: answer `503` (with this CSeq), then close.
    OverRate {
        cseq: Option<&'a str>,
    },
    /// Input that is not RTSP: answer the error's status, then close.
    Bad(ParseError),
}

/// A timer that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request did not complete within the request timeout: answer `408`, close.
    SlowRequest,
    /// No session and silent for the idle timeout: close.
    Idle,
}

/// The input side of one connection over the caller's buffer `B`.
#[derive(Debug)]
pub struct ConnInput<B> {
    buf: B,
    start: usize,
    end: usize,
    /// Last complete request or interleaved frame.
    last_input: Instant,
    /// When the first byte of a still incomplete request arrived.
    partial_since: Option<Instant>,
    /// Request-rate bucket, in thousandths of a request.
    tokens: u64,
    tokens_at: Instant,
    peer_closed: bool,
    /// An error was answered: nothing more is read or handed out.
    closing: bool,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> ConnInput<B> {
    pub fn new(buf: B, now: Instant) -> Self {
        ConnInput {
            buf,
            start: 0,
            end: 0,
            last_input: now,
            partial_since: None,
            tokens: u64::from(limits::REQUEST_BURST) * 1000,
            tokens_at: now,
            peer_closed: false,
            closing: false,
        }
    }

    /// Gives the buffer back (for reuse by the next connection).
    pub fn into_buffer(self) -> B {
        self.buf
    }

    /// Where the next read goes; empty when the buffer is full (TCP backpressure: the parser
    /// answers an oversized request first), after the peer's FIN, or once closing.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.peer_closed || self.closing {
            return &mut [];
        }
        if self.start > 0 {
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    /// `n` bytes were read into [`ConnInput::read_space`].
    pub fn handle_read(&mut self, n: usize, now: Instant) {
        let cap = self.buf.as_ref().len();
        self.end = (self.end + n).min(cap);
        if self.end > self.start && self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// The peer half-closed (FIN) or the connection broke: nothing more comes.
    pub fn handle_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// An error was answered (or the caller gave up on the connection): no more input.
    pub fn close(&mut self) {
        self.closing = true;
        self.start = self.end;
        self.partial_since = None;
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Unparsed bytes.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether the loop should poll for more input.
    pub fn wants_read(&self) -> bool {
        !self.peer_closed && !self.closing
    }

    /// Nothing more will come out: the peer closed and no complete item is left, or closing.
    pub fn finished(&self) -> bool {
        self.closing
            || (self.peer_closed
                && matches!(parse_input(&self.buf.as_ref()[self.start..self.end]), Ok(Input::Incomplete)))
    }

    /// The next complete request or interleaved frame, taken from the buffer; `None` while it is
    /// incomplete (or closing). A request over `max_request_rate` comes as [`Item::OverRate`]
    /// and a parse error as [`Item::Bad`]; after either the caller answers and closes.
    #[must_use]
    pub fn poll_item(&mut self, now: Instant, max_request_rate: u32) -> Option<Item<'_>> {
        if self.closing || self.start == self.end {
            return None;
        }
        let now = now.max(self.tokens_at);
        // Field by field: the item borrows `buf` while the positions and the bucket move.
        let buf = self.buf.as_ref();
        let (item, consumed) = match parse_input(&buf[self.start..self.end]) {
            Ok(Input::Incomplete) => return None,
            Ok(Input::Interleaved { channel, data, consumed }) => (Item::Interleaved { channel, data }, consumed),
            Ok(Input::Request { request, consumed }) => {
                if admit(&mut self.tokens, &mut self.tokens_at, now, max_request_rate) {
                    (Item::Request(request), consumed)
                } else {
                    self.closing = true;
                    (Item::OverRate { cseq: request.cseq() }, consumed)
                }
            }
            Err(e) => {
                self.closing = true;
                self.partial_since = None;
                self.start = self.end;
                return Some(Item::Bad(e));
            }
        };
        self.start += consumed;
        self.last_input = now;
        self.partial_since = (self.start < self.end).then_some(now);
        Some(item)
    }

    /// A timer that fired, if any: a request that takes too long (always), a connection without
    /// a session silent too long (`has_session` false). After [`Expiry::SlowRequest`] the input
    /// is closed.
    #[must_use]
    pub fn poll_expired(&mut self, now: Instant, policy: &ConnPolicy, has_session: bool) -> Option<Expiry> {
        if self.closing {
            return None;
        }
        if self.partial_since.is_some_and(|t| now.saturating_since(t) >= policy.request_timeout) {
            self.close();
            return Some(Expiry::SlowRequest);
        }
        if !has_session && now.saturating_since(self.last_input) >= policy.idle_timeout {
            return Some(Expiry::Idle);
        }
        None
    }

    /// Last complete request or interleaved frame (the oldest connection without a session is
    /// the first to go when there are too many).
    pub fn last_input(&self) -> Instant {
        self.last_input
    }
}

/// Takes one request from the bucket (thousandths of a request, refilled at `rate` per second up
/// to a burst); `false` when the client is over its rate.
fn admit(tokens: &mut u64, tokens_at: &mut Instant, now: Instant, rate: u32) -> bool {
    let cap = u64::from(limits::REQUEST_BURST) * 1000;
    let refill = now.saturating_since(*tokens_at).as_millis() as u64 * u64::from(rate);
    *tokens = (*tokens + refill).min(cap);
    *tokens_at = now;
    if *tokens >= 1000 {
        *tokens -= 1000;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: ConnPolicy = ConnPolicy {
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_request_rate: 20,
    };

    fn at(s: u64) -> Instant {
        Instant::from_micros(s * 1_000_000)
    }

    fn feed<B: AsRef<[u8]> + AsMut<[u8]>>(c: &mut ConnInput<B>, bytes: &[u8], now: Instant) {
        let space = c.read_space();
        let n = bytes.len().min(space.len());
        space[..n].copy_from_slice(&bytes[..n]);
        c.handle_read(n, now);
    }

    fn cseqs<B: AsRef<[u8]> + AsMut<[u8]>>(c: &mut ConnInput<B>, now: Instant) -> heapless::Vec<u32, 16> {
        let mut v = heapless::Vec::new();
        while let Some(item) = c.poll_item(now, 20) {
            match item {
                Item::Request(r) => v.push(r.cseq().and_then(|c| c.parse().ok()).unwrap_or(0)).unwrap(),
                Item::Interleaved { channel, .. } => v.push(1000 + u32::from(channel)).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        v
    }

    const TWO: &[u8] = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n$\x01\x00\x04abcdGET_PARAMETER rtsp://h/live RTSP/1.0\r\nCSeq: 2\r\n\r\n";

    #[test]
    fn pipelined_requests_and_frames_come_out_in_order_at_every_split_point() {
        for cut in 0..=TWO.len() {
            let mut c = ConnInput::new([0u8; 512], at(0));
            feed(&mut c, &TWO[..cut], at(0));
            let mut got = cseqs(&mut c, at(0));
            feed(&mut c, &TWO[cut..], at(1));
            got.extend(cseqs(&mut c, at(1)));
            assert_eq!(&got[..], &[1, 1001, 2], "cut at {cut}");
            assert_eq!(c.buffered(), 0);
        }
    }

    #[test]
    fn half_close_hands_out_what_is_complete_then_finishes() {
        let mut c = ConnInput::new([0u8; 512], at(0));
        feed(&mut c, TWO, at(0));
        feed(&mut c, b"OPTIONS rtsp://", at(0));
        c.handle_peer_closed();
        assert!(!c.finished(), "complete requests are left");
        assert!(c.read_space().is_empty() && !c.wants_read(), "nothing more is read after the FIN");
        assert_eq!(&cseqs(&mut c, at(0))[..], &[1, 1001, 2]);
        assert!(c.finished(), "only an incomplete rest: done");
        // A FIN with nothing pending is done at once.
        let mut c = ConnInput::new([0u8; 64], at(0));
        c.handle_peer_closed();
        assert!(c.finished());
    }

    #[test]
    fn a_bad_request_is_answered_once_and_closes_the_input() {
        let mut c = ConnInput::new([0u8; 512], at(0));
        feed(&mut c, b"HELLO\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", at(0));
        assert!(matches!(c.poll_item(at(0), 20), Some(Item::Bad(_))));
        assert!(c.poll_item(at(0), 20).is_none() && c.closing() && c.finished());
        assert!(c.read_space().is_empty());
    }

    #[test]
    fn the_rate_bucket_allows_bursts_then_refuses_and_refills() {
        let req = b"OPTIONS * RTSP/1.0\r\nCSeq: 7\r\n\r\n";
        let mut c = ConnInput::new([0u8; 4096], at(0));
        for i in 0..limits::REQUEST_BURST {
            feed(&mut c, req, at(0));
            assert!(matches!(c.poll_item(at(0), 20), Some(Item::Request(_))), "request {i} of the burst");
        }
        feed(&mut c, req, at(0));
        assert_eq!(c.poll_item(at(0), 20), Some(Item::OverRate { cseq: Some("7") }));
        assert!(c.closing());
        // A steady client at the rate is never refused.
        let mut c = ConnInput::new([0u8; 4096], at(0));
        for i in 0..200u64 {
            feed(&mut c, req, Instant::from_micros(i * 50_000));
            assert!(matches!(c.poll_item(Instant::from_micros(i * 50_000), 20), Some(Item::Request(_))), "{i}");
        }
    }

    #[test]
    fn slow_requests_and_idle_connections_expire_on_the_virtual_clock() {
        let mut c = ConnInput::new([0u8; 512], at(0));
        feed(&mut c, b"OPTIONS * RTSP/1.0\r\n", at(5));
        assert_eq!(c.poll_expired(at(14), &POLICY, false), None);
        assert_eq!(c.poll_expired(at(15), &POLICY, false), Some(Expiry::SlowRequest));
        assert!(c.closing() && c.poll_expired(at(99), &POLICY, false).is_none());

        let mut c = ConnInput::new([0u8; 512], at(0));
        feed(&mut c, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", at(10));
        assert!(c.poll_item(at(10), 20).is_some());
        assert_eq!(c.poll_expired(at(39), &POLICY, false), None);
        assert_eq!(c.poll_expired(at(40), &POLICY, true), None, "a session keeps it");
        assert_eq!(c.poll_expired(at(40), &POLICY, false), Some(Expiry::Idle));
    }

    #[test]
    fn a_full_buffer_is_backpressure_then_the_parser_answers() {
        let mut c = ConnInput::new([0u8; limits::MAX_REQUEST_BYTES], at(0));
        let big = [b'A'; limits::MAX_REQUEST_BYTES + 10];
        feed(&mut c, &big, at(0));
        assert!(c.read_space().is_empty(), "full: stop reading");
        assert!(matches!(c.poll_item(at(0), 20), Some(Item::Bad(_))), "and it is not a request");
    }
}
