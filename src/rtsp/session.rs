//! The RTSP server core: sessions in fixed slots, request handling, expiry. Sans-IO.
//!
//! # Rules
//! - `handle_*` in, `poll_*` out. The loop feeds each parsed request with
//!   [`Server::handle_request`], receiving the response bytes and at most one [`Event`] to act
//!   on; it feeds client RTCP with [`Server::handle_rtcp`] and connection loss with
//!   [`Server::close_session_of`]. It then asks [`Server::poll_timeout`] when to wake and drains
//!   [`Server::poll_expired`].
//! - Client RTCP ([`Server::handle_rtcp`]) updates the session's [`Reception`] (loss, jitter,
//!   RTT from LSR/DLSR against the sender reports the loop noted with
//!   [`Server::note_sender_report`]) and returns what the loop must act on: a keyframe request
//!   (PLI/FIR) or NACKs (see `session/rtcp.rs`). A malformed packet changes nothing.
//! - The core never reads a clock: every call takes `now`; a `now` older than the latest seen
//!   is treated as the latest (time never runs backwards inside the core).
//! - Slots are allocated by the caller before the server starts (`--max-clients`); nothing grows.
//!   A SETUP when every slot is taken is answered `503 Service Unavailable`.
//!
//! # Session states
//! ```text
//!  Free ──SETUP──▶ Ready ──PLAY──▶ Playing
//!   ▲               ▲  ◀──PAUSE──    │
//!   └──TEARDOWN / timeout / connection closed ─┘
//! ```
//! A session is owned by the connection that created it; when that connection closes, the
//! session is torn down too (a crashed VLC frees its slot at once instead of after the timeout).
//!
//! # Streams
//! The server serves every stream in [`ServerConfig::streams`], each at its own path: DESCRIBE,
//! SETUP, PLAY and SET_PARAMETER are routed by the request's path (`404` for any other), and a
//! session belongs to the one stream it was set up for ([`Session::stream`]; a second SETUP of
//! the same session for another stream is `459`).
//!
//! # Multicast
//! With a stream's [`StreamRoute::multicast`] set, SETUP with `RTP/AVP;multicast` makes a session
//! like any other (a slot, keepalives, expiry, TEARDOWN) whose [`Delivery`] is that stream's
//! group. The loop sends the group ONE stream while [`Server::multicast_playing`] of that stream
//! is above zero; sessions only count receivers. Without it, such a SETUP is answered 461.

use core::time::Duration;

use super::auth::{Auth, Verdict};
use super::parse::{uri_path, Method, Request};
use super::sdp::{write_sdp_offer, FeedbackOffer, RtxOffer, SdpParams, TRACK_CONTROL};
use super::transport::{self, Lower, MulticastGroup, Profile, TransportError};
use crate::limits;
use crate::time::Instant;

mod rtcp;
use crate::wbuf::{Full, WBuf};
pub use rtcp::{Feedback, SR_HISTORY};

/// Identifies a TCP connection; assigned by the loop, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Free,
    Ready,
    Playing,
}

/// Where a session's RTP and RTCP go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// UDP to the RTSP peer's address at these ports.
    Udp { lower: Lower, client_rtp: u16, client_rtcp: u16 },
    /// Interleaved in the RTSP TCP connection on these channels.
    Interleaved { rtp_channel: u8, rtcp_channel: u8 },
    /// The server's multicast group ([`ServerConfig::multicast`]), shared by every such session.
    Multicast { lower: Lower },
}

/// Reception quality as the client last reported it (RTCP RR), and its feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reception {
    pub reports: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    /// Interarrival jitter in 90 kHz units.
    pub jitter: u32,
    pub highest_sequence: u32,
    /// Round-trip time from the last report that named one of our sender reports (µs).
    pub rtt_us: Option<u32>,
    /// Feedback packets about our stream: generic NACKs, PLIs and FIRs.
    pub nacks: u32,
    pub plis: u32,
    pub firs: u32,
}

impl Reception {
    pub const ZERO: Reception = Reception {
        reports: 0,
        fraction_lost: 0,
        cumulative_lost: 0,
        jitter: 0,
        highest_sequence: 0,
        rtt_us: None,
        nacks: 0,
        plis: 0,
        firs: 0,
    };
}

#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub state: SessionState,
    pub id: u64,
    pub conn: ConnId,
    /// The stream it plays (index into [`ServerConfig::streams`]).
    pub stream: usize,
    pub delivery: Delivery,
    /// The UDP ports this slot sends from; set once by the loop when it binds them.
    pub server_ports: (u16, u16),
    pub last_seen: Instant,
    pub reception: Reception,
    /// The profile the client asked for in SETUP: only `RTP/AVPF` sessions get retransmissions.
    pub profile: Profile,
    /// SSRC of the stream it plays (feedback about another SSRC is ignored).
    pub media_ssrc: u32,
}

impl Session {
    pub const FREE: Session = Session {
        state: SessionState::Free,
        id: 0,
        conn: ConnId(0),
        stream: 0,
        delivery: Delivery::Interleaved { rtp_channel: 0, rtcp_channel: 1 },
        server_ports: (0, 0),
        last_seen: Instant::ZERO,
        reception: Reception::ZERO,
        profile: Profile::Avp,
        media_ssrc: 0,
    };
}

/// What the loop must do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Setup {
        slot: usize,
    },
    Play {
        slot: usize,
    },
    Pause {
        slot: usize,
    },
    Teardown {
        slot: usize,
    },
    /// `SET_PARAMETER` with `bitrate: N`: change the live encoder's bitrate (bit/s) of `stream`.
    SetBitrate {
        stream: usize,
        bps: u32,
    },
}

/// The stream as it is right now, for DESCRIBE and PLAY.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo<'a> {
    pub codec: crate::rtp::Codec,
    /// H.264 parameter sets (empty for JPEG).
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    pub ssrc: u32,
    /// RTP timestamp corresponding to `now`.
    pub rtptime_now: u32,
    pub framerate: u32,
    pub bitrate_kbps: u32,
}

/// Per-request context from the loop.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    pub conn: ConnId,
    /// Our address as the client reached it (for SDP `o=`).
    pub local_addr: &'a str,
    /// Every stream, in [`ServerConfig::streams`] order; `None` until it has produced its
    /// parameter sets.
    pub streams: &'a [Option<StreamInfo<'a>>],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes of response written into the output buffer.
    pub len: usize,
    pub event: Option<Event>,
}

/// One stream as RTSP serves it.
#[derive(Debug, Clone, Copy)]
pub struct StreamRoute<'c> {
    /// e.g. `/live`.
    pub path: &'c str,
    /// When set, `RTP/AVP;multicast` is served: to this group, port and TTL.
    pub multicast: Option<MulticastGroup>,
}

#[derive(Debug, Clone, Copy)]
pub struct ServerConfig<'c> {
    /// At least one.
    pub streams: &'c [StreamRoute<'c>],
    pub session_timeout: Duration,
    /// When set, every method but OPTIONS needs valid credentials.
    pub auth: Option<Auth<'c>>,
    /// To whom DESCRIBE offers `RTP/AVPF` with PLI/FIR, and with NACK and RTX (`nack`).
    pub feedback: FeedbackPolicy,
    /// `nack-window`: how long after sending a packet it may be retransmitted; `None` = auto.
    pub nack_window: Option<Duration>,
}

/// To whom DESCRIBE offers feedback and retransmission (`RTP/AVPF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedbackPolicy {
    /// No retransmission (`nack=off`): clients known to use feedback get `RTP/AVPF` with
    /// keyframe requests only (`nack pli`, `ccm fir`: no generic NACK, no RTX), so a GStreamer
    /// viewer asks for an IDR when it loses part of a picture; every other gets plain `RTP/AVP`.
    Off,
    /// `RTP/AVPF` to clients known to use it, `RTP/AVP` to every other (`nack=on`): see
    /// [`client_uses_avpf`].
    #[default]
    KnownClients,
    /// `RTP/AVPF` to every client (`nack=all`); VLC (live555) then finds no playable media.
    All,
}

/// Whether a client that sends this `User-Agent` takes an `RTP/AVPF` offer and uses it.
///
/// - GStreamer's rtspsrc (`GStreamer/1.22.0`; QGroundControl plays through it) sets up
///   `RTP/AVPF` when offered, sends NACKs with `do-retransmission=true` and PLIs, and decodes
///   RTX (`apt=`).
/// - Not offered: live555 clients (VLC, `LibVLC/3.0.x (LIVE555 Streaming Media v...)`) refuse an
///   `m=` line with any profile but `RTP/AVP` (its `sscanf` of `RTP/AVP %u`), so the stream would
///   not play; ffmpeg (`Lavf59.27.100`, and OpenCV through it) would play but never sends NACKs;
///   unknown clients keep today's SDP.
pub fn client_uses_avpf(user_agent: Option<&str>) -> bool {
    user_agent.is_some_and(|ua| ua.trim_start().starts_with("GStreamer"))
}

/// The `auto` `nack-window`'s RTT allowance at most: the window announced as `rtx-time`.
pub const AUTO_WINDOW_MAX_RTT: Duration = Duration::from_millis(500);

/// The `rtx-time` announced for a stream at `framerate` (ms).
pub fn rtx_time_ms(window: Option<Duration>, framerate: u32) -> u32 {
    let w = window.unwrap_or_else(|| {
        Duration::from_micros(1_000_000 / u64::from(framerate.max(1)))
            + AUTO_WINDOW_MAX_RTT
            + crate::rtp::rtx::AUTO_WINDOW_SLACK
    });
    w.as_millis().min(u128::from(u32::MAX)) as u32
}

const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
const SERVER: &str = concat!("uavstream/", env!("CARGO_PKG_VERSION"));

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        431 => "Request Header Fields Too Large",
        451 => "Parameter Not Understood",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Error",
    }
}

fn start(w: &mut WBuf<'_>, status: u16, cseq: Option<&str>) -> Result<(), Full> {
    w.put_fmt(format_args!("RTSP/1.0 {} {}\r\n", status, reason_phrase(status)))?;
    if let Some(c) = cseq {
        w.put_fmt(format_args!("CSeq: {c}\r\n"))?;
    }
    w.put_fmt(format_args!("Server: {SERVER}\r\n"))
}

fn finish(w: &mut WBuf<'_>, content_type: Option<&str>, body: &[u8]) -> Result<(), Full> {
    if let Some(t) = content_type {
        w.put_fmt(format_args!("Content-Type: {t}\r\n"))?;
    }
    if !body.is_empty() {
        w.put_fmt(format_args!("Content-Length: {}\r\n", body.len()))?;
    }
    w.put(b"\r\n")?;
    w.put(body)
}

/// Writes a bodiless error response (for requests that could not even be parsed).
pub fn write_error_response(status: u16, cseq: Option<&str>, out: &mut [u8]) -> usize {
    let mut w = WBuf::new(out);
    if start(&mut w, status, cseq).and_then(|_| finish(&mut w, None, &[])).is_err() {
        return 0;
    }
    w.len()
}

#[derive(Debug)]
pub struct Server<'c, S> {
    cfg: ServerConfig<'c>,
    sessions: S,
    rng: u64,
    latest: Instant,
    /// The last sender reports of each stream: `(NTP middle 32 bits, when sent)`, a ring.
    sr_sent: [[(u32, Instant); SR_HISTORY]; limits::MAX_STREAMS],
    sr_next: [usize; limits::MAX_STREAMS],
}

impl<'c, S: AsRef<[Session]> + AsMut<[Session]>> Server<'c, S> {
    /// `sessions` are the fixed slots (all `Session::FREE`, with `server_ports` filled in);
    /// `seed` seeds session ids (the loop passes bytes from the OS's random source).
    pub fn new(cfg: ServerConfig<'c>, sessions: S, seed: u64) -> Self {
        Self {
            cfg,
            sessions,
            rng: seed,
            latest: Instant::ZERO,
            sr_sent: [[(0, Instant::ZERO); SR_HISTORY]; limits::MAX_STREAMS],
            sr_next: [0; limits::MAX_STREAMS],
        }
    }

    pub fn sessions(&self) -> &[Session] {
        self.sessions.as_ref()
    }

    pub fn session(&self, slot: usize) -> Option<&Session> {
        self.sessions.as_ref().get(slot)
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.sessions().iter().filter(|s| s.state != SessionState::Free).count()
    }

    /// Multicast sessions of `stream` that are playing: its group stream runs while this is
    /// above zero.
    pub fn multicast_playing(&self, stream: usize) -> usize {
        self.sessions()
            .iter()
            .filter(|s| {
                s.state == SessionState::Playing
                    && s.stream == stream
                    && matches!(s.delivery, Delivery::Multicast { .. })
            })
            .count()
    }

    fn clamp_now(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }

    fn next_id(&mut self) -> u64 {
        // splitmix64
        loop {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 && !self.sessions().iter().any(|s| s.state != SessionState::Free && s.id == z) {
                return z;
            }
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        if id.is_empty() || id.len() > 16 {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        self.sessions().iter().position(|s| s.state != SessionState::Free && s.id == id)
    }

    /// The stream whose path `uri` names (with `allow_track`, its track URL too).
    fn stream_of(&self, uri: &str, allow_track: bool) -> Option<usize> {
        let p = uri_path(uri)?;
        self.cfg.streams.iter().position(|st| {
            let Some(rest) = p.strip_prefix(st.path.trim_end_matches('/')) else { return false };
            match rest {
                "" | "/" => true,
                r => allow_track && r.strip_prefix('/').is_some_and(|t| t == TRACK_CONTROL),
            }
        })
    }

    /// Handles one request; writes the response into `out`.
    pub fn handle_request(&mut self, ctx: &RequestCtx<'_>, req: &Request<'_>, now: Instant, out: &mut [u8]) -> Outcome {
        let now = self.clamp_now(now);
        let mut w = WBuf::new(out);
        match self.respond(ctx, req, now, &mut w) {
            Ok(event) => Outcome { len: w.len(), event },
            Err(Full) => {
                let len = write_error_response(500, req.cseq(), out);
                Outcome { len, event: None }
            }
        }
    }

    fn simple(w: &mut WBuf<'_>, status: u16, cseq: Option<&str>) -> Result<Option<Event>, Full> {
        start(w, status, cseq)?;
        finish(w, None, &[])?;
        Ok(None)
    }

    fn put_session(&self, w: &mut WBuf<'_>, slot: usize) -> Result<(), Full> {
        let s = &self.sessions()[slot];
        w.put_fmt(format_args!("Session: {:016X};timeout={}\r\n", s.id, self.cfg.session_timeout.as_secs()))
    }

    fn respond(
        &mut self,
        ctx: &RequestCtx<'_>,
        req: &Request<'_>,
        now: Instant,
        w: &mut WBuf<'_>,
    ) -> Result<Option<Event>, Full> {
        // CSeq is a number (RFC 2326 §12.17); anything else is not echoed (found by fuzzing: a
        // 4 KiB CSeq did not fit any response).
        let Some(cseq) = req.cseq().filter(|c| !c.is_empty() && c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit()))
        else {
            return Self::simple(w, 400, None);
        };
        let cseq = Some(cseq);
        if let Some(req_opt) = req.header("Require") {
            start(w, 551, cseq)?;
            w.put_fmt(format_args!("Unsupported: {req_opt}\r\n"))?;
            finish(w, None, &[])?;
            return Ok(None);
        }
        if let (Some(auth), false) = (&self.cfg.auth, req.method == Method::Options) {
            // `*` (a keepalive) is checked against the path of the session's stream.
            let session_stream = req.session_id().and_then(|id| self.find(id)).map(|slot| self.sessions()[slot].stream);
            let path = uri_path(req.uri).unwrap_or(self.cfg.streams[session_stream.unwrap_or(0)].path);
            let now_s = now.as_micros() / 1_000_000;
            let verdict = auth.verify(req.header("Authorization"), req.method.as_str(), path, now_s);
            if !matches!(verdict, Verdict::Allowed { .. }) {
                start(w, 401, cseq)?;
                auth.write_challenge(w, now_s, verdict == Verdict::Stale)?;
                finish(w, None, &[])?;
                return Ok(None);
            }
        }
        let slot = match req.session_id() {
            Some(id) => match self.find(id) {
                Some(slot) => {
                    self.sessions.as_mut()[slot].last_seen = now;
                    Some(slot)
                }
                None => return Self::simple(w, 454, cseq),
            },
            None => None,
        };
        match req.method {
            Method::Options => {
                start(w, 200, cseq)?;
                if let Some(slot) = slot {
                    self.put_session(w, slot)?;
                }
                w.put_fmt(format_args!("Public: {PUBLIC}\r\n"))?;
                finish(w, None, &[])?;
                Ok(None)
            }
            Method::Describe => self.describe(ctx, req, w),
            Method::Setup => self.setup(ctx, req, slot, now, w),
            Method::Play => {
                let Some(slot) = slot else {
                    return Self::simple(w, 454, cseq);
                };
                let stream = self.sessions()[slot].stream;
                if req.uri != "*" && self.stream_of(req.uri, true) != Some(stream) {
                    return Self::simple(w, 404, cseq);
                }
                self.sessions.as_mut()[slot].state = SessionState::Playing;
                start(w, 200, cseq)?;
                self.put_session(w, slot)?;
                w.put(b"Range: npt=now-\r\n")?;
                if let Some(stream) = ctx.streams.get(stream).copied().flatten() {
                    // No `seq=`: the client starts at the next IDR, whose sequence number is not
                    // known yet; a `seq` from now would make clients (retina, rtpjitterbuffer)
                    // count the skipped packets as lost. RFC 2326 §12.33 allows either parameter.
                    w.put(b"RTP-Info: url=")?;
                    put_track_url(w, req.uri)?;
                    w.put_fmt(format_args!(";rtptime={}\r\n", stream.rtptime_now))?;
                }
                finish(w, None, &[])?;
                Ok(Some(Event::Play { slot }))
            }
            Method::Pause => {
                let Some(slot) = slot else {
                    return Self::simple(w, 454, cseq);
                };
                let was_playing = self.sessions()[slot].state == SessionState::Playing;
                self.sessions.as_mut()[slot].state = SessionState::Ready;
                start(w, 200, cseq)?;
                self.put_session(w, slot)?;
                finish(w, None, &[])?;
                Ok(was_playing.then_some(Event::Pause { slot }))
            }
            Method::Teardown => {
                let Some(slot) = slot else {
                    return Self::simple(w, 454, cseq);
                };
                self.sessions.as_mut()[slot].state = SessionState::Free;
                start(w, 200, cseq)?;
                finish(w, None, &[])?;
                Ok(Some(Event::Teardown { slot }))
            }
            Method::GetParameter | Method::SetParameter => {
                // Keepalives (GStreamer, VLC, ffmpeg): an empty body. The one parameter is the
                // live encoder's bitrate (`SET_PARAMETER` body `bitrate: N`, bit/s), for a ground
                // station adapting to its radio link.
                let (status, event) = if req.body.iter().all(u8::is_ascii_whitespace) {
                    (200, None)
                } else if req.method == Method::SetParameter {
                    let stream = slot.map(|s| self.sessions()[s].stream).or_else(|| self.stream_of(req.uri, true));
                    match (parse_bitrate_parameter(req.body), stream) {
                        (Some(Ok(_)), None) => (404, None),
                        (Some(Ok(bps)), Some(stream)) => (200, Some(Event::SetBitrate { stream, bps })),
                        (Some(Err(())), _) => (400, None),
                        (None, _) => (451, None),
                    }
                } else {
                    (451, None)
                };
                start(w, status, cseq)?;
                if let Some(slot) = slot {
                    self.put_session(w, slot)?;
                }
                finish(w, None, &[])?;
                Ok(event)
            }
            Method::Announce | Method::Record | Method::Redirect => {
                start(w, 405, cseq)?;
                w.put_fmt(format_args!("Allow: {PUBLIC}\r\n"))?;
                finish(w, None, &[])?;
                Ok(None)
            }
            Method::Other(_) => Self::simple(w, 501, cseq),
        }
    }

    fn describe(&mut self, ctx: &RequestCtx<'_>, req: &Request<'_>, w: &mut WBuf<'_>) -> Result<Option<Event>, Full> {
        let cseq = req.cseq();
        let Some(index) = self.stream_of(req.uri, false) else {
            return Self::simple(w, 404, cseq);
        };
        let Some(stream) = ctx.streams.get(index).copied().flatten() else {
            start(w, 503, cseq)?;
            w.put(b"Retry-After: 1\r\n")?;
            finish(w, None, &[])?;
            return Ok(None);
        };
        let known = client_uses_avpf(req.header("User-Agent"));
        let rtx =
            RtxOffer { pt: crate::rtp::RTX_PAYLOAD_TYPE, time_ms: rtx_time_ms(self.cfg.nack_window, stream.framerate) };
        let offer = match self.cfg.feedback {
            FeedbackPolicy::Off => known.then_some(FeedbackOffer { rtx: None }),
            FeedbackPolicy::KnownClients => known.then_some(FeedbackOffer { rtx: Some(rtx) }),
            FeedbackPolicy::All => Some(FeedbackOffer { rtx: Some(rtx) }),
        };
        let mut sdp = [0u8; limits::MAX_SDP_BYTES];
        let n = write_sdp_offer(
            &SdpParams {
                session_id: u64::from(stream.ssrc),
                session_version: 1,
                origin_addr: ctx.local_addr,
                codec: stream.codec,
                payload_type: stream.codec.payload_type(),
                destination: None,
                sps: stream.sps,
                pps: stream.pps,
                framerate: stream.framerate,
                bandwidth_kbps: stream.bitrate_kbps,
            },
            offer.as_ref(),
            &mut sdp,
        )?;
        start(w, 200, cseq)?;
        w.put(b"Content-Base: ")?;
        w.put(req.uri.trim_end_matches('/').as_bytes())?;
        w.put(b"/\r\n")?;
        finish(w, Some("application/sdp"), &sdp[..n])?;
        Ok(None)
    }

    fn setup(
        &mut self,
        ctx: &RequestCtx<'_>,
        req: &Request<'_>,
        existing: Option<usize>,
        now: Instant,
        w: &mut WBuf<'_>,
    ) -> Result<Option<Event>, Full> {
        let cseq = req.cseq();
        let Some(stream) = self.stream_of(req.uri, true) else {
            return Self::simple(w, 404, cseq);
        };
        if existing.is_some_and(|slot| self.sessions()[slot].stream != stream) {
            // One stream per session: another stream needs a session of its own.
            return Self::simple(w, 459, cseq);
        }
        let multicast = self.cfg.streams[stream].multicast;
        let Some(th) = req.header("Transport") else {
            return Self::simple(w, 461, cseq);
        };
        let spec = match transport::choose_with(th, multicast.is_some()) {
            Ok(t) => t,
            Err(TransportError::Unsupported) => return Self::simple(w, 461, cseq),
            Err(TransportError::Malformed) => return Self::simple(w, 400, cseq),
        };
        let slot = match existing {
            Some(slot) if self.sessions()[slot].state == SessionState::Playing => {
                return Self::simple(w, 455, cseq);
            }
            Some(slot) => slot,
            None => match self.sessions().iter().position(|s| s.state == SessionState::Free) {
                Some(slot) => slot,
                None => {
                    start(w, 503, cseq)?;
                    w.put(b"Retry-After: 5\r\n")?;
                    finish(w, None, &[])?;
                    return Ok(None);
                }
            },
        };
        let delivery = match (spec.lower, spec.client_port) {
            // `choose_with` offers multicast only when it is configured; checked again here,
            // before the slot changes.
            _ if spec.multicast && multicast.is_none() => return Self::simple(w, 461, cseq),
            _ if spec.multicast => Delivery::Multicast { lower: spec.lower },
            (Lower::Tcp, _) => {
                let (rtp_channel, rtcp_channel) = spec.interleaved.unwrap_or((0, 1));
                Delivery::Interleaved { rtp_channel, rtcp_channel }
            }
            (lower, Some((client_rtp, client_rtcp))) => Delivery::Udp { lower, client_rtp, client_rtcp },
            (_, None) => return Self::simple(w, 461, cseq),
        };
        let id = if existing.is_some() { self.sessions()[slot].id } else { self.next_id() };
        let s = &mut self.sessions.as_mut()[slot];
        s.state = SessionState::Ready;
        s.id = id;
        s.conn = ctx.conn;
        s.stream = stream;
        s.delivery = delivery;
        s.last_seen = now;
        s.reception = Reception::ZERO;
        s.profile = spec.profile;
        let ssrc = ctx.streams.get(stream).copied().flatten().map_or(0, |st| st.ssrc);
        s.media_ssrc = ssrc;
        let server_ports = s.server_ports;
        start(w, 200, cseq)?;
        w.put(b"Transport: ")?;
        match delivery {
            Delivery::Udp { lower, client_rtp, client_rtcp } => {
                transport::write_udp_reply(w, lower, spec.profile, (client_rtp, client_rtcp), server_ports, ssrc)?
            }
            Delivery::Interleaved { rtp_channel, rtcp_channel } => {
                transport::write_tcp_reply(w, spec.profile, (rtp_channel, rtcp_channel), ssrc)?
            }
            Delivery::Multicast { lower } => {
                if let Some(g) = &multicast {
                    transport::write_multicast_reply(w, lower, g, ssrc)?;
                }
            }
        }
        w.put(b"\r\n")?;
        self.put_session(w, slot)?;
        finish(w, None, &[])?;
        Ok(Some(Event::Setup { slot }))
    }

    /// The connection `conn` closed: frees one of its sessions and returns the slot. Call until
    /// `None`.
    pub fn close_session_of(&mut self, conn: ConnId) -> Option<usize> {
        let slot = self.sessions().iter().position(|s| s.state != SessionState::Free && s.conn == conn)?;
        self.sessions.as_mut()[slot].state = SessionState::Free;
        Some(slot)
    }

    /// Frees a slot for a reason of the loop's own (e.g. a client that stopped reading).
    pub fn drop_session(&mut self, slot: usize) {
        if let Some(s) = self.sessions.as_mut().get_mut(slot) {
            s.state = SessionState::Free;
        }
    }

    /// When the next session would expire.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions()
            .iter()
            .filter(|s| s.state != SessionState::Free)
            .map(|s| s.last_seen + self.cfg.session_timeout)
            .min()
    }

    /// Frees and returns one session that has been silent past its timeout.
    #[must_use]
    pub fn poll_expired(&mut self, now: Instant) -> Option<usize> {
        let now = self.clamp_now(now);
        let timeout = self.cfg.session_timeout;
        let slot = self
            .sessions()
            .iter()
            .position(|s| s.state != SessionState::Free && now.saturating_since(s.last_seen) >= timeout)?;
        self.sessions.as_mut()[slot].state = SessionState::Free;
        Some(slot)
    }
}

/// Bounds of a bitrate set live (bit/s), as for the `bitrate` key.
pub const BITRATE_RANGE: core::ops::RangeInclusive<u32> = 10_000..=100_000_000;

/// `Some(Ok(bps))` for a body that is exactly one `bitrate: N` line with N in range, `Some(Err)`
/// for a bitrate out of range or not a number, `None` for anything else.
fn parse_bitrate_parameter(body: &[u8]) -> Option<Result<u32, ()>> {
    let text = core::str::from_utf8(body).ok()?.trim();
    let (name, value) = text.split_once(':')?;
    if !name.trim().eq_ignore_ascii_case("bitrate") || value.contains(['\r', '\n']) {
        return None;
    }
    Some(value.trim().parse::<u32>().ok().filter(|b| BITRATE_RANGE.contains(b)).ok_or(()))
}

/// Writes the track URL for `RTP-Info` from the request URL (aggregate or track).
fn put_track_url(w: &mut WBuf<'_>, uri: &str) -> Result<(), Full> {
    let base = uri.trim_end_matches('/');
    if base.ends_with(TRACK_CONTROL) {
        w.put(base.as_bytes())
    } else {
        w.put_fmt(format_args!("{base}/{TRACK_CONTROL}"))
    }
}

#[cfg(test)]
mod tests;
