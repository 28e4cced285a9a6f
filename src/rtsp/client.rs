//! The publishing side of RTSP (RFC 2326 §10.3 ANNOUNCE, §10.11 RECORD): a sans-IO client
//! core that pushes one stream to a server (MediaMTX, gst-rtsp-server, ffmpeg's listen mode).
//! `no_std`, no allocation: requests are written into caller-owned buffers, responses are
//! parsed borrowing from the input.
//!
//! ```text
//!  OPTIONS ─▶ ANNOUNCE (SDP) ─▶ SETUP (RTP/AVP/TCP;interleaved=0-1;mode=record) ─▶ RECORD ─▶ recording
//!       401 with a challenge: the same request again, with Basic or Digest credentials (once)
//! ```
//!
//! Use: [`Publisher::write_request`] writes the request for the current step;
//! [`parse_response`] takes the bytes received so far and returns [`Parsed::Incomplete`] until a
//! whole response (head and `Content-Length` body) is there, skipping interleaved frames the
//! server sends (`$`, channel, length: its RTCP receiver reports); then
//! [`Publisher::handle_response`] says whether to write the next request, or that recording
//! has begun. Any other answer is an error: the caller closes and reconnects with backoff.
//!
//! Invariants: every input is untrusted and bounded (a head larger than [`MAX_RESPONSE_HEAD`]
//! or a body larger than [`MAX_RESPONSE_BODY`] is an error, never a wait); nothing panics.

use core::fmt::Write as _;

use crate::rtsp::auth::{md5_hex, DigestParams};
use crate::wbuf::{put_base64, Full, WBuf};

/// Largest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 4096;
/// Largest response body skipped (servers answer RECORD and friends with none).
pub const MAX_RESPONSE_BODY: usize = 4096;
const USER_AGENT: &str = concat!("uavstream/", env!("CARGO_PKG_VERSION"));

/// `rtsp://[USER[:PASSWORD]@]HOST[:PORT]/PATH`, parsed and kept in fixed-size strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishUrl {
    pub host: heapless::String<253>,
    pub port: u16,
    /// With its leading `/`.
    pub path: heapless::String<256>,
    pub user: heapless::String<64>,
    pub password: heapless::String<64>,
}

fn fixed<const N: usize>(s: &str, what: &'static str) -> Result<heapless::String<N>, &'static str> {
    let mut out = heapless::String::new();
    out.push_str(s).map_err(|_| what)?;
    Ok(out)
}

/// `%XX` escapes in the user info (`p%40ss` for `p@ss`), into a fixed string.
fn unescape<const N: usize>(s: &str, what: &'static str) -> Result<heapless::String<N>, &'static str> {
    let mut out = heapless::String::<N>::new();
    let b = s.as_bytes();
    let mut i = 0;
    let mut bytes = heapless::Vec::<u8, N>::new();
    while i < b.len() {
        let byte = if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(what)?;
            i += 3;
            u8::from_str_radix(hex, 16).map_err(|_| what)?
        } else {
            i += 1;
            b[i - 1]
        };
        bytes.push(byte).map_err(|_| what)?;
    }
    out.push_str(core::str::from_utf8(&bytes).map_err(|_| what)?).map_err(|_| what)?;
    Ok(out)
}

impl PublishUrl {
    pub fn parse(url: &str) -> Result<PublishUrl, &'static str> {
        let rest = url.strip_prefix("rtsp://").ok_or("expected rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the path has spaces or control characters");
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or("unclosed [ in the host")?;
            let port = v6[end + 1..].strip_prefix(':');
            (&v6[..end], port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"-._:".contains(&b))) {
            return Err("no usable host name or address");
        }
        let port = match port {
            None => 554,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or("the port is not 1-65535")?,
        };
        let (user, password) = match userinfo {
            None => (heapless::String::new(), heapless::String::new()),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (
                    unescape(user, "the user name is too long or badly escaped")?,
                    unescape(pass, "the password is too long or badly escaped")?,
                )
            }
        };
        Ok(PublishUrl {
            host: fixed(host, "the host name is too long")?,
            port,
            path: fixed(path, "the path is too long")?,
            user,
            password,
        })
    }

    /// The request URI: `rtsp://HOST:PORT/PATH` (never the credentials).
    pub fn write_uri(&self, w: &mut impl core::fmt::Write) -> core::fmt::Result {
        w.write_str("rtsp://")?;
        self.write_host_path(w)
    }

    fn write_host_path(&self, w: &mut impl core::fmt::Write) -> core::fmt::Result {
        if self.host.contains(':') {
            write!(w, "[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(w, "{}:{}{}", self.host, self.port, self.path)
        }
    }

    fn uri(&self) -> heapless::String<600> {
        let mut s = heapless::String::new();
        let _ = self.write_uri(&mut s);
        s
    }
}

impl core::fmt::Display for PublishUrl {
    /// The URL for logs: the user's name, never the password.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("rtsp://")?;
        if !self.user.is_empty() {
            write!(f, "{}@", self.user)?;
        }
        self.write_host_path(f)
    }
}

/// A response, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub cseq: Option<u32>,
    /// The `Session` id, without `;timeout=`.
    pub session: Option<&'a str>,
    /// The session timeout in seconds, when the server says one.
    pub timeout_s: Option<u32>,
    /// The first Digest and the first Basic `WWW-Authenticate` challenge (their parameters).
    pub digest: Option<&'a str>,
    pub basic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Incomplete,
    /// An interleaved frame of `len` bytes in total (the caller drops it).
    Interleaved {
        consumed: usize,
    },
    Complete {
        response: Response<'a>,
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not an RTSP/1.0 status line, or a malformed header.
    Malformed,
    /// Head or body over their limits.
    TooLarge,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the next response (or interleaved frame) at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Result<Parsed<'_>, ResponseError> {
    if buf.first() == Some(&b'$') {
        let Some(len) = buf.get(2..4) else { return Ok(Parsed::Incomplete) };
        let total = 4 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        return Ok(if buf.len() >= total { Parsed::Interleaved { consumed: total } } else { Parsed::Incomplete });
    }
    let end = match find(buf, b"\r\n\r\n") {
        Some(e) => e + 4,
        None if buf.len() >= MAX_RESPONSE_HEAD => return Err(ResponseError::TooLarge),
        None => {
            // Fail early on garbage: what is there must be able to start a status line.
            let start = &buf[..buf.len().min(8)];
            return if b"RTSP/1.0"[..start.len()] == *start {
                Ok(Parsed::Incomplete)
            } else {
                Err(ResponseError::Malformed)
            };
        }
    };
    if end > MAX_RESPONSE_HEAD {
        return Err(ResponseError::TooLarge);
    }
    let head = core::str::from_utf8(&buf[..end]).map_err(|_| ResponseError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(ResponseError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("RTSP/1.0") {
        return Err(ResponseError::Malformed);
    }
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(ResponseError::Malformed)?;
    let mut r = Response { status, cseq: None, session: None, timeout_s: None, digest: None, basic: false };
    let mut body = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ResponseError::Malformed)?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("cseq") {
            r.cseq = Some(value.parse().map_err(|_| ResponseError::Malformed)?);
        } else if name.eq_ignore_ascii_case("session") {
            let mut it = value.split(';');
            r.session = it.next().map(str::trim).filter(|s| !s.is_empty());
            for p in it {
                if let Some(t) = p.trim().strip_prefix("timeout=") {
                    r.timeout_s = t.trim().parse().ok();
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| ResponseError::Malformed)?;
            if body > MAX_RESPONSE_BODY {
                return Err(ResponseError::TooLarge);
            }
        } else if name.eq_ignore_ascii_case("www-authenticate") {
            let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("Digest") && r.digest.is_none() {
                r.digest = Some(params);
            } else if scheme.eq_ignore_ascii_case("Basic") {
                r.basic = true;
            }
        }
    }
    if buf.len() < end + body {
        return Ok(Parsed::Incomplete);
    }
    Ok(Parsed::Complete { response: r, consumed: end + body })
}

/// Where a publisher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Options,
    Announce,
    Setup,
    Record,
    Recording,
}

impl Step {
    fn method(self) -> &'static str {
        match self {
            Step::Options | Step::Recording => "OPTIONS",
            Step::Announce => "ANNOUNCE",
            Step::Setup => "SETUP",
            Step::Record => "RECORD",
        }
    }
}

/// What to do after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Write the next request ([`Publisher::write_request`]).
    Send,
    /// RECORD was accepted: send RTP (interleaved channel 0) from the next IDR on.
    Recording,
    /// A keep-alive answer while recording: nothing to do.
    Idle,
}

/// Why publishing stopped (the caller reconnects with backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The server answered a step with this status.
    Refused(Step, u16),
    /// 401 again after credentials were sent, or 401 without credentials in the URL.
    Unauthorized,
    /// A response whose CSeq is not the request's.
    OutOfOrder,
    /// SETUP was answered without a Session.
    NoSession,
}

/// Which credentials the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    None,
    Basic,
    Digest,
}

/// The server's challenge (realm, nonce and opaque for Digest).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: Scheme,
    realm: heapless::String<128>,
    nonce: heapless::String<128>,
    opaque: heapless::String<128>,
}

impl Challenge {
    const NONE: Challenge = Challenge {
        scheme: Scheme::None,
        realm: heapless::String::new(),
        nonce: heapless::String::new(),
        opaque: heapless::String::new(),
    };
}

/// One publishing attempt over one TCP connection.
#[derive(Debug, Clone)]
pub struct Publisher {
    step: Step,
    cseq: u32,
    session: heapless::String<128>,
    challenge: Challenge,
    /// Credentials were sent for the current step.
    tried_auth: bool,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new()
    }
}

impl Publisher {
    pub fn new() -> Publisher {
        Publisher {
            step: Step::Options,
            cseq: 0,
            session: heapless::String::new(),
            challenge: Challenge::NONE,
            tried_auth: false,
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// The server's session timeout is honoured with an OPTIONS keep-alive (see the caller).
    /// Writes the request for the current step; `sdp` is the ANNOUNCE body.
    pub fn write_request(&mut self, url: &PublishUrl, sdp: &[u8], w: &mut WBuf<'_>) -> Result<(), Full> {
        self.cseq += 1;
        let method = self.step.method();
        let uri = url.uri();
        w.put_fmt(format_args!("{method} "))?;
        match self.step {
            Step::Setup => w.put_fmt(format_args!("{uri}/trackID=0"))?,
            _ => w.put(uri.as_bytes())?,
        }
        w.put_fmt(format_args!(" RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: {USER_AGENT}\r\n", self.cseq))?;
        self.write_authorization(url, method, w)?;
        if !self.session.is_empty() {
            w.put_fmt(format_args!("Session: {}\r\n", self.session))?;
        }
        match self.step {
            Step::Announce => {
                w.put_fmt(format_args!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n", sdp.len()))?
            }
            Step::Setup => w.put(b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n")?,
            Step::Record => w.put(b"Range: npt=0.000-\r\n\r\n")?,
            Step::Options | Step::Recording => w.put(b"\r\n")?,
        }
        if self.step == Step::Announce {
            w.put(sdp)?;
        }
        Ok(())
    }

    fn write_authorization(&self, url: &PublishUrl, method: &str, w: &mut WBuf<'_>) -> Result<(), Full> {
        let Challenge { scheme, realm, nonce, opaque } = &self.challenge;
        match scheme {
            Scheme::None => Ok(()),
            Scheme::Basic => {
                let mut cred = heapless::Vec::<u8, 130>::new();
                let _ = cred.extend_from_slice(url.user.as_bytes());
                let _ = cred.push(b':');
                let _ = cred.extend_from_slice(url.password.as_bytes());
                w.put(b"Authorization: Basic ")?;
                put_base64(w, &cred)?;
                w.put(b"\r\n")
            }
            Scheme::Digest => {
                let uri = url.uri();
                let uri = match self.step {
                    Step::Setup => {
                        let mut u = heapless::String::<620>::new();
                        let _ = write!(u, "{uri}/trackID=0");
                        u
                    }
                    _ => {
                        let mut u = heapless::String::<620>::new();
                        let _ = u.push_str(&uri);
                        u
                    }
                };
                let ha1 = md5_hex(&[url.user.as_bytes(), b":", realm.as_bytes(), b":", url.password.as_bytes()]);
                let ha2 = md5_hex(&[method.as_bytes(), b":", uri.as_bytes()]);
                let response = md5_hex(&[&ha1, b":", nonce.as_bytes(), b":", &ha2]);
                let response = core::str::from_utf8(&response).unwrap_or("");
                w.put_fmt(format_args!(
                    "Authorization: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"",
                    url.user
                ))?;
                if !opaque.is_empty() {
                    w.put_fmt(format_args!(", opaque=\"{opaque}\""))?;
                }
                w.put(b"\r\n")
            }
        }
    }

    /// Takes the response to the last request.
    pub fn handle_response(&mut self, url: &PublishUrl, r: &Response<'_>) -> Result<Progress, PublishError> {
        if r.cseq.is_some_and(|c| c != self.cseq) {
            return Err(PublishError::OutOfOrder);
        }
        if self.step == Step::Recording {
            return Ok(Progress::Idle);
        }
        if r.status == 401 {
            if self.tried_auth || url.user.is_empty() {
                return Err(PublishError::Unauthorized);
            }
            self.tried_auth = true;
            self.challenge = match r.digest {
                Some(params) => {
                    let p = DigestParams::parse(params);
                    let opaque = opaque_of(params);
                    let (Some(realm), Some(nonce)) = (p.realm, p.nonce) else { return Err(PublishError::Unauthorized) };
                    let (Ok(realm), Ok(nonce), Ok(opaque)) =
                        (fixed(realm, ""), fixed(nonce, ""), fixed(opaque.unwrap_or(""), ""))
                    else {
                        return Err(PublishError::Unauthorized);
                    };
                    Challenge { scheme: Scheme::Digest, realm, nonce, opaque }
                }
                None if r.basic => Challenge { scheme: Scheme::Basic, ..Challenge::NONE },
                None => return Err(PublishError::Unauthorized),
            };
            return Ok(Progress::Send);
        }
        // OPTIONS is informational: some servers refuse it without a session, and that is fine.
        if !(200..300).contains(&r.status) && self.step != Step::Options {
            return Err(PublishError::Refused(self.step, r.status));
        }
        self.tried_auth = false;
        self.step = match self.step {
            Step::Options => Step::Announce,
            Step::Announce => Step::Setup,
            Step::Setup => {
                let s = r.session.ok_or(PublishError::NoSession)?;
                self.session.clear();
                self.session.push_str(s).map_err(|_| PublishError::NoSession)?;
                Step::Record
            }
            Step::Record | Step::Recording => {
                self.step = Step::Recording;
                return Ok(Progress::Recording);
            }
        };
        Ok(Progress::Send)
    }
}

/// The `opaque` parameter of a Digest challenge (which [`DigestParams`] does not keep).
fn opaque_of(params: &str) -> Option<&str> {
    let i = params.find("opaque=")?;
    let v = &params[i + 7..];
    match v.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => v.split(',').next().map(str::trim),
    }
}

#[cfg(test)]
mod tests;
