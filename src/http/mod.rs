//! A small HTTP/1.1 server core for MJPEG, snapshots, the viewer page and WHEP. Sans-IO, `no_std`.
//!
//! - [`parse_request`] takes the bytes a connection has sent so far and returns
//!   [`Parsed::Incomplete`] until the head (request line and headers) is complete; then the
//!   request, borrowed from the input, and how many bytes it took (`consumed`: exactly the head,
//!   so pipelined bytes after it are the next request). Bodies are never parsed here: a request
//!   announcing one gets [`Persistence::Close`] so the caller closes instead of misreading the
//!   body as the next request; only a WHEP offer's body is read, by the caller
//!   ([`Request::content_length`] bytes after the head).
//! - [`Request::persistence`]: whether the connection stays open after the response (RFC 9112
//!   §9.3: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`).
//! - [`route`] maps a request to what the loop serves; the `write_*` functions write response
//!   heads and multipart part headers into caller-owned buffers. Every head says
//!   `Connection: close` or `Connection: keep-alive`; every response but the endless multipart
//!   stream has a `Content-Length`.
//!
//! Routes, for every stream path (e.g. `/live`, `/low`): `GET /live.mjpeg`
//! (multipart/x-mixed-replace, newest frame wins), `GET /live.jpg` or `/live.jpeg` (the latest
//! frame); `GET /` or `/index.html` (the viewer page, see [`write_index`]). HEAD goes where GET
//! goes. `POST /live/whep` (WHEP, an SDP offer in the body) and `DELETE /live/whep/ID` (the
//! session's `Location`). Anything else is `404`; other methods are `405`; a malformed head is
//! `400`. Bodies are read only for WHEP offers (the caller reads [`Request::content_length`]
//! bytes after the head, at most [`MAX_OFFER_BYTES`]).

use crate::wbuf::{Full, WBuf};

mod page;
pub use page::{index_len, write_index, IndexEntry, VIEWER_JS};

/// Largest request head accepted. Policy: `431` and close.
pub const MAX_HEAD_BYTES: usize = 2048;
/// Largest WHEP offer accepted (Chromium's offers are about 5 KB). Policy: `413` and close.
pub const MAX_OFFER_BYTES: usize = 16 * 1024;
/// Multipart boundary of the MJPEG stream.
pub const BOUNDARY: &str = "uavstreamframe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Only for `/PATH/record?start|stop` and WHEP offers.
    Post,
    /// Only for ending a WHEP session.
    Delete,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Whether a connection stays open after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    Close,
    KeepAlive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, without query string.
    pub path: &'a str,
    /// The query string (after `?`, before `#`), empty when there is none.
    pub query: &'a str,
    pub version: Version,
    /// A `close` token in the `Connection` header(s).
    pub connection_close: bool,
    /// A `keep-alive` token in the `Connection` header(s).
    pub connection_keep_alive: bool,
    /// `Content-Length` above 0 or any `Transfer-Encoding`: a body follows the head.
    pub has_body: bool,
    /// The `Authorization` header's value (the first one).
    pub authorization: Option<&'a str>,
    /// The `Content-Length` value (saturated at `u32::MAX`; 0 when absent).
    pub content_length: u32,
    /// The `Content-Type` value (the first one).
    pub content_type: Option<&'a str>,
}

impl Request<'_> {
    /// The body can be read: a `Content-Length` and no `Transfer-Encoding` (chunked bodies are
    /// not accepted anywhere).
    pub fn body_framed(&self) -> bool {
        !(self.has_body && self.content_length == 0)
    }

    /// Whether the body is an SDP document (`application/sdp`, parameters allowed).
    pub fn is_sdp(&self) -> bool {
        self.content_type.is_some_and(|t| {
            t.split(';').next().is_some_and(|m| m.trim_matches([' ', '\t']).eq_ignore_ascii_case("application/sdp"))
        })
    }
}

impl Request<'_> {
    /// What the connection does after this request's response (RFC 9112 §9.3). A request with a
    /// body closes: bodies are not read, so the bytes after the head are not a next request.
    pub fn persistence(&self) -> Persistence {
        let keep = match self.version {
            _ if self.has_body || self.connection_close => false,
            Version::Http11 => true,
            Version::Http10 => self.connection_keep_alive,
        };
        if keep {
            Persistence::KeepAlive
        } else {
            Persistence::Close
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Incomplete,
    Complete { request: Request<'a>, consumed: usize },
}

/// A request that gets an error status and a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    BadRequest,
    UriTooLong,
    HeadTooLarge,
    VersionNotSupported,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest => 400,
            HttpError::UriTooLong => 414,
            HttpError::HeadTooLarge => 431,
            HttpError::VersionNotSupported => 505,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the head of one request (RFC 9112 §3): `METHOD SP target SP HTTP/1.x CRLF`, header
/// lines, an empty line. Bare LF line ends are accepted (§2.2).
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>, HttpError> {
    // Leading empty lines are ignored (§2.2).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let body = &buf[start..];
    let end = match (find(body, b"\r\n\r\n"), find(body, b"\n\n")) {
        (Some(a), Some(b)) if b + 2 < a + 4 => b + 2,
        (Some(a), _) => a + 4,
        (None, Some(b)) => b + 2,
        (None, None) => {
            return if buf.len() >= MAX_HEAD_BYTES { Err(HttpError::HeadTooLarge) } else { Ok(Parsed::Incomplete) };
        }
    };
    if start + end > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let head = core::str::from_utf8(&body[..end]).map_err(|_| HttpError::BadRequest)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or(HttpError::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        return Err(HttpError::BadRequest);
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if v.starts_with("HTTP/") => return Err(HttpError::VersionNotSupported),
        _ => return Err(HttpError::BadRequest),
    };
    // Absolute form (proxies): keep the path.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HttpError::BadRequest);
    }
    if target.len() > 256 {
        return Err(HttpError::UriTooLong);
    }
    let (mut connection_close, mut connection_keep_alive, mut has_body) = (false, false, false);
    let mut authorization = None;
    let mut content_length = 0u32;
    let mut transfer_encoding = false;
    let mut content_type = None;
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = match l.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => {
                (name, value.trim_matches([' ', '\t']))
            }
            _ => return Err(HttpError::BadRequest),
        };
        if name.eq_ignore_ascii_case("connection") {
            // A comma-separated token list (RFC 9110 §7.6.1); empty elements are allowed.
            for token in value.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // RFC 9112 §6.3: an invalid length is unrecoverable framing.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest);
            }
            has_body |= value.bytes().any(|b| b != b'0');
            content_length = value.bytes().fold(0u32, |n, b| n.saturating_mul(10).saturating_add(u32::from(b - b'0')));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("authorization") && authorization.is_none() {
            authorization = Some(value);
        } else if name.eq_ignore_ascii_case("content-type") && content_type.is_none() {
            content_type = Some(value);
        }
    }
    let target = target.split('#').next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    // A Transfer-Encoding overrides any Content-Length (RFC 9112 §6.3): the body is not framed
    // by a length this server reads.
    if transfer_encoding {
        content_length = 0;
    }
    let request = Request {
        method,
        path,
        query,
        version,
        connection_close,
        connection_keep_alive,
        has_body,
        authorization,
        content_length,
        content_type,
    };
    Ok(Parsed::Complete { request, consumed: start + end })
}

/// What a request asks for. Streams are numbered by their place in the paths given to [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The HTML page listing every stream.
    Index,
    /// `multipart/x-mixed-replace` JPEG stream of stream `n`.
    Mjpeg(usize),
    /// The latest frame of stream `n`.
    Snapshot(usize),
    /// `/status`: every camera, stream and session as JSON.
    Status,
    /// `/metrics`: the same figures in the Prometheus text format.
    Metrics,
    /// `POST /PATH/record?start` (`true`) or `?stop` (`false`): recording of stream `n` on or off.
    Record(usize, bool),
    /// `POST /PATH/record` without `start` or `stop`: `400`.
    BadRecordAction,
    /// `POST /PATH/whep`: a WHEP offer for stream `n`.
    Whep(usize),
    /// `DELETE /PATH/whep/ID`: the end of WHEP session `ID` (16 hex digits) of stream `n`.
    WhepEnd(usize, u64),
    NotFound,
    MethodNotAllowed,
}

/// Routes a request among the streams at `paths` (e.g. `["/live", "/low"]`; a trailing `/` is
/// ignored). When two streams share a path, the first one gets it.
pub fn route<'p>(req: &Request<'_>, paths: impl IntoIterator<Item = &'p str>) -> Route {
    if req.method == Method::Other {
        return Route::MethodNotAllowed;
    }
    if req.method == Method::Post {
        for (n, path) in paths.into_iter().enumerate() {
            match req.path.strip_prefix(path.trim_end_matches('/')) {
                Some("/record") => {
                    return match req.query {
                        "start" | "action=start" => Route::Record(n, true),
                        "stop" | "action=stop" => Route::Record(n, false),
                        _ => Route::BadRecordAction,
                    }
                }
                Some("/whep") => return Route::Whep(n),
                _ => {}
            }
        }
        // A WHEP endpoint of no stream is a resource that is not there, not a wrong method.
        return if req.path.ends_with("/whep") { Route::NotFound } else { Route::MethodNotAllowed };
    }
    if req.method == Method::Delete {
        for (n, path) in paths.into_iter().enumerate() {
            let Some(id) = req.path.strip_prefix(path.trim_end_matches('/')).and_then(|r| r.strip_prefix("/whep/"))
            else {
                continue;
            };
            return match parse_session_id(id) {
                Some(id) => Route::WhepEnd(n, id),
                None => Route::NotFound,
            };
        }
        return Route::MethodNotAllowed;
    }
    match req.path {
        "/" | "/index.html" => return Route::Index,
        "/status" => return Route::Status,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    for (n, path) in paths.into_iter().enumerate() {
        match req.path.strip_prefix(path.trim_end_matches('/')) {
            Some(".mjpeg") => return Route::Mjpeg(n),
            Some(".jpg" | ".jpeg") => return Route::Snapshot(n),
            _ => {}
        }
    }
    Route::NotFound
}

/// A WHEP session id as it appears in its `Location`: exactly 16 hex digits.
pub fn parse_session_id(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Writes a response head. `content_length` is `None` only for the endless multipart stream
/// (which must be [`Persistence::Close`]: it ends with the connection) and HEAD answers to it.
pub fn write_head(
    w: &mut WBuf<'_>,
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
    persistence: Persistence,
) -> Result<(), Full> {
    head_start(w, status, content_type, content_length)?;
    head_end(w, persistence)
}

/// The status line and the headers every response has; [`head_end`] finishes the head.
fn head_start(w: &mut WBuf<'_>, status: u16, content_type: &str, content_length: Option<usize>) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "HTTP/1.1 {status} {}\r\nServer: uavstream/{}\r\nContent-Type: {content_type}\r\n",
        reason_phrase(status),
        env!("CARGO_PKG_VERSION")
    ))?;
    if let Some(n) = content_length {
        w.put_fmt(format_args!("Content-Length: {n}\r\n"))?;
    }
    match status {
        405 => w.put(b"Allow: GET, HEAD\r\n"),
        503 => w.put(b"Retry-After: 1\r\n"),
        _ => Ok(()),
    }
}

fn head_end(w: &mut WBuf<'_>, persistence: Persistence) -> Result<(), Full> {
    w.put(b"Cache-Control: no-store\r\n")?;
    match persistence {
        Persistence::Close => w.put(b"Connection: close\r\n\r\n"),
        Persistence::KeepAlive => w.put(b"Connection: keep-alive\r\n\r\n"),
    }
}

/// Writes a complete `401 Unauthorized` with `auth`'s challenges (Digest, then Basic; `stale`
/// for a Digest answer on an expired nonce). Browsers and curl retry on the same connection.
pub fn write_unauthorized(
    w: &mut WBuf<'_>,
    auth: &crate::rtsp::auth::Auth<'_>,
    now_s: u64,
    stale: bool,
    persistence: Persistence,
) -> Result<(), Full> {
    const BODY: &str = "Unauthorized\n";
    head_start(w, 401, "text/plain; charset=utf-8", Some(BODY.len()))?;
    auth.write_challenge(w, now_s, stale)?;
    head_end(w, persistence)?;
    w.put(BODY.as_bytes())
}

/// Writes the head of a `201 Created` with its `Location` (a WHEP session); the connection
/// closes after the body.
pub fn write_created(w: &mut WBuf<'_>, content_type: &str, location: &str, len: usize) -> Result<(), Full> {
    head_start(w, 201, content_type, Some(len))?;
    w.put_fmt(format_args!("Location: {location}\r\n"))?;
    head_end(w, Persistence::Close)
}

/// Writes a complete response with a one-line text body (`text` and a newline).
pub fn write_text(w: &mut WBuf<'_>, status: u16, text: &str, persistence: Persistence) -> Result<(), Full> {
    write_head(w, status, "text/plain; charset=utf-8", Some(text.len() + 1), persistence)?;
    w.put(text.as_bytes())?;
    w.put(b"\n")
}

/// Writes a complete error response whose body is the reason phrase.
pub fn write_error(w: &mut WBuf<'_>, status: u16, persistence: Persistence) -> Result<(), Full> {
    write_text(w, status, reason_phrase(status), persistence)
}

/// Writes the head of the multipart stream: [`Persistence::Close`] for the stream itself (it
/// ends with the connection), either for a HEAD request.
pub fn write_mjpeg_head(w: &mut WBuf<'_>, persistence: Persistence) -> Result<(), Full> {
    let mut ct = heapless::String::<64>::new();
    let _ = core::fmt::Write::write_fmt(&mut ct, format_args!("multipart/x-mixed-replace; boundary={BOUNDARY}"));
    write_head(w, 200, &ct, None, persistence)
}

/// Writes the header of one multipart part; the JPEG and a CRLF follow it.
pub fn write_part_header(w: &mut WBuf<'_>, jpeg_len: usize) -> Result<(), Full> {
    w.put_fmt(format_args!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {jpeg_len}\r\n\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim heads as the clients send them.
    const CURL: &[u8] =
        b"GET /live.mjpeg HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    const CHROMIUM: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n";
    const BARE_LF: &[u8] = b"HEAD /live.jpg?t=1 HTTP/1.0\nUser-Agent: x\n\n";

    #[test]
    fn requests_parse_at_every_split_point() {
        let cases: &[(&[u8], Method, &str)] =
            &[(CURL, Method::Get, "/live.mjpeg"), (CHROMIUM, Method::Get, "/"), (BARE_LF, Method::Head, "/live.jpg")];
        for &(req, method, path) in cases {
            for cut in 0..req.len() {
                assert_eq!(parse_request(&req[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
            }
            let mut pipelined = [0u8; 1024];
            pipelined[..req.len()].copy_from_slice(req);
            pipelined[req.len()..req.len() + 3].copy_from_slice(b"GET");
            for input in [req, &pipelined[..req.len() + 3]] {
                match parse_request(input) {
                    Ok(Parsed::Complete { request, consumed }) => {
                        assert_eq!((request.method, request.path, consumed), (method, path, req.len()));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_authorization_header_is_kept_and_a_401_carries_both_challenges() {
        let req =
            b"GET /live.jpg HTTP/1.1\r\nauthorization:  Basic cGlsb3Q6czNjcjN0 \r\nAuthorization: Basic eA==\r\n\r\n";
        let Ok(Parsed::Complete { request, .. }) = parse_request(req) else { panic!() };
        assert_eq!(request.authorization, Some("Basic cGlsb3Q6czNjcjN0"), "the first one, trimmed");
        let Ok(Parsed::Complete { request, .. }) = parse_request(CURL) else { panic!() };
        assert_eq!(request.authorization, None);

        let users = [crate::rtsp::auth::Credential { user: "pilot", password: "s3cr3t", path: None }];
        let auth = crate::rtsp::auth::Auth { users: &users, secret: [7; 16] };
        let mut buf = [0u8; 1024];
        let mut w = WBuf::new(&mut buf);
        write_unauthorized(&mut w, &auth, 100, true, Persistence::KeepAlive).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Digest realm=\"uavstream\", nonce=\""), "{text}");
        assert!(text.contains(", stale=TRUE\r\nWWW-Authenticate: Basic realm=\"uavstream\"\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 13\r\n") && text.ends_with("keep-alive\r\n\r\nUnauthorized\n"),
            "{text}"
        );
    }

    #[test]
    fn a_whep_offer_head_says_its_length_and_type() {
        let head = b"POST /live/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/SDP; charset=utf-8\r\nContent-Length: 5618\r\n\r\nv=0\r\n";
        let (request, consumed) = complete(head);
        assert_eq!((request.content_length, request.is_sdp(), request.body_framed()), (5618, true, true));
        assert_eq!(consumed, head.len() - 5, "the body is not part of the head");
        let (request, _) =
            complete(b"POST /live/whep HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n");
        assert!(!request.is_sdp());
        let (request, _) = complete(b"POST /live/whep HTTP/1.1\r\nContent-Type: application/sdp\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert!(!request.body_framed() && request.content_length == 0);
        let (request, _) = complete(b"POST /live/whep HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
        assert_eq!(request.content_length, u32::MAX, "saturated, then refused as too large");
    }

    #[test]
    fn malformed_heads_get_their_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1 x\r\n\r\n", 400),
            (b"GET live HTTP/1.1\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / RTSP/1.0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
        ];
        for &(req, status) in cases {
            assert_eq!(parse_request(req).map_err(HttpError::status), Err(status), "{:?}", core::str::from_utf8(req));
        }
        let mut long = [b'a'; 600];
        long[..5].copy_from_slice(b"GET /");
        long[580..].copy_from_slice(b" HTTP/1.1\r\n\r\n\0\0\0\0\0\0\0");
        assert_eq!(parse_request(&long[..593]), Err(HttpError::UriTooLong));
        assert_eq!(parse_request(&[b'x'; MAX_HEAD_BYTES]), Err(HttpError::HeadTooLarge));
    }

    fn complete(input: &[u8]) -> (Request<'_>, usize) {
        match parse_request(input) {
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
            other => panic!("{:?}: {other:?}", core::str::from_utf8(input)),
        }
    }

    #[test]
    fn persistence_follows_version_and_connection_tokens() {
        use Persistence::{Close, KeepAlive};
        let cases: &[(&[u8], Persistence)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.0\r\n\r\n", Close),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Close),
            (b"GET / HTTP/1.1\r\nconnection:CLOSE\r\n\r\n", Close),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive, Upgrade\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.0\r\nConnection: Upgrade,\tkeep-alive \r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nConnection: keep-alive\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n", Close),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", Close),
            // Tokens, not substrings; other headers do not count.
            (b"GET / HTTP/1.1\r\nConnection: closed, x-close\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n", Close),
            (b"GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", Close),
            // Bodies are not read: whatever the client asks, the connection closes.
            (b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.1\r\nContent-Length: 000\r\n\r\n", KeepAlive),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Close),
            (b"GET / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n", Close),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", Close),
            (CHROMIUM, KeepAlive),
            (CURL, KeepAlive),
            (BARE_LF, Close),
        ];
        for &(input, persistence) in cases {
            let (request, _) = complete(input);
            assert_eq!(request.persistence(), persistence, "{:?}", core::str::from_utf8(input));
        }
        let (request, _) = complete(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(request.has_body && request.version == Version::Http11);
        for bad in [&b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..], b"GET / HTTP/1.1\r\nContent-Length:\r\n\r\n"] {
            assert_eq!(parse_request(bad), Err(HttpError::BadRequest), "{:?}", core::str::from_utf8(bad));
        }
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Err(HttpError::BadRequest));
    }

    #[test]
    fn pipelined_requests_are_consumed_one_head_at_a_time() {
        let first = b"GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n";
        let second = b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let third = b"\r\nGET /live.mjpeg HTTP/1.0\n\n";
        let mut all = [0u8; 256];
        let mut len = 0;
        for part in [&first[..], second, third] {
            all[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        let mut rest = &all[..len];
        let mut seen = [("", Persistence::Close); 3];
        for slot in &mut seen {
            let (request, consumed) = complete(rest);
            *slot = (request.path, request.persistence());
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            seen,
            [("/live.jpg", Persistence::KeepAlive), ("/", Persistence::Close), ("/live.mjpeg", Persistence::Close)]
        );
        // The head alone is consumed, never the start of the next request.
        let (_, consumed) = complete(&all[..first.len() + 4]);
        assert_eq!(consumed, first.len());
        assert_eq!(parse_request(&all[first.len()..first.len() + 4]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn routes() {
        let r = |method, path| {
            let request = Request {
                method,
                path,
                query: "",
                version: Version::Http11,
                connection_close: false,
                connection_keep_alive: false,
                has_body: false,
                authorization: None,
                content_length: 0,
                content_type: None,
            };
            route(&request, ["/live", "/low/", "/cam/wide"])
        };
        assert_eq!(r(Method::Get, "/"), Route::Index);
        assert_eq!(r(Method::Get, "/status"), Route::Status);
        assert_eq!(r(Method::Head, "/metrics"), Route::Metrics);
        assert_eq!(r(Method::Get, "/status.json"), Route::NotFound);
        let post = |path: &str| {
            let mut raw = heapless::String::<128>::new();
            core::fmt::write(&mut raw, format_args!("POST {path} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
            let Ok(Parsed::Complete { request, .. }) = parse_request(raw.as_bytes()) else { panic!("{path}") };
            route(&request, ["/live", "/low"])
        };
        assert_eq!(post("/low/record?start"), Route::Record(1, true));
        assert_eq!(post("/live/record?action=stop"), Route::Record(0, false));
        assert_eq!(post("/live/record"), Route::BadRecordAction);
        assert_eq!(post("/live/record?go"), Route::BadRecordAction);
        assert_eq!(post("/live.mjpeg"), Route::MethodNotAllowed);
        assert_eq!(post("/status"), Route::MethodNotAllowed);
        assert_eq!(post("/low/whep"), Route::Whep(1));
        assert_eq!(post("/live/whep?x"), Route::Whep(0));
        assert_eq!(post("/nope/whep"), Route::NotFound);
        let delete = |path: &str| {
            let mut raw = heapless::String::<128>::new();
            core::fmt::write(&mut raw, format_args!("DELETE {path} HTTP/1.1\r\n\r\n")).unwrap();
            let Ok(Parsed::Complete { request, .. }) = parse_request(raw.as_bytes()) else { panic!("{path}") };
            route(&request, ["/live", "/low"])
        };
        assert_eq!(delete("/low/whep/00000000000000ff"), Route::WhepEnd(1, 255));
        assert_eq!(delete("/live/whep/83C15B5BE01ED92A"), Route::WhepEnd(0, 0x83c1_5b5b_e01e_d92a));
        for bad in ["/live/whep/ff", "/live/whep/0000000000000g00", "/live/whep/", "/live/whep/+000000000000000"] {
            assert_eq!(delete(bad), Route::NotFound, "{bad}");
        }
        assert_eq!(delete("/live.mjpeg"), Route::MethodNotAllowed);
        assert_eq!(r(Method::Head, "/index.html"), Route::Index);
        assert_eq!(r(Method::Get, "/live.mjpeg"), Route::Mjpeg(0));
        assert_eq!(r(Method::Head, "/live.jpg"), Route::Snapshot(0));
        assert_eq!(r(Method::Get, "/low.mjpeg"), Route::Mjpeg(1));
        assert_eq!(r(Method::Get, "/low.jpeg"), Route::Snapshot(1));
        assert_eq!(r(Method::Get, "/cam/wide.jpg"), Route::Snapshot(2));
        for unknown in ["/live", "/other.mjpeg", "/low/.mjpeg", "/lowx.jpg", "/cam.mjpeg", "/live.mjpeg/", "/index"] {
            assert_eq!(r(Method::Get, unknown), Route::NotFound, "{unknown}");
        }
        assert_eq!(r(Method::Other, "/live.mjpeg"), Route::MethodNotAllowed);
        let get = |path| Request { method: Method::Get, path, ..complete(CURL).0 };
        assert_eq!(route(&get("/live.jpg"), []), Route::NotFound, "no streams");
        assert_eq!(route(&get("/"), []), Route::Index);
        assert_eq!(route(&get("/a.jpg"), ["/a", "/a"]), Route::Snapshot(0), "the first of a shared path");
    }

    #[test]
    fn responses() {
        let mut buf = [0xa5u8; 512];
        let mut w = WBuf::new(&mut buf);
        write_mjpeg_head(&mut w, Persistence::Close).unwrap();
        write_part_header(&mut w, 1234).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("Content-Type: multipart/x-mixed-replace; boundary=uavstreamframe\r\n"));
        assert!(!text.contains("Content-Length: 0"));
        assert!(text.ends_with("\r\n\r\n--uavstreamframe\r\nContent-Type: image/jpeg\r\nContent-Length: 1234\r\n\r\n"));
        let mut w = WBuf::new(&mut buf);
        write_error(&mut w, 405, Persistence::KeepAlive).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.contains("Content-Length: 19\r\n") && text.contains("\r\nConnection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\nMethod Not Allowed\n"));
        let mut w = WBuf::new(&mut buf);
        write_text(&mut w, 503, "the stream is H.264", Persistence::Close).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.contains("Content-Length: 20\r\n") && text.contains("Retry-After: 1\r\n"), "{text}");
        assert!(text.ends_with("\r\nConnection: close\r\n\r\nthe stream is H.264\n"), "{text}");
        assert!(write_error(&mut WBuf::new(&mut [0u8; 16]), 404, Persistence::Close).is_err());
    }
}
