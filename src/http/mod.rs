//! A small HTTP/1.1 server core for MJPEG and snapshots. Sans-IO, `no_std`.
//!
//! - [`parse_request`] takes the bytes a connection has sent so far and returns
//!   [`Parsed::Incomplete`] until the head (request line and headers) is complete; then the
//!   request, borrowed from the input, and how many bytes it took. Bodies are not read: every
//!   route is a GET (or HEAD), and the connection closes after its response.
//! - [`route`] maps a request to what the loop serves; the `write_*` functions write response
//!   heads and multipart part headers into caller-owned buffers.
//!
//! Routes for stream path `/live`: `GET /live.mjpeg` (multipart/x-mixed-replace, newest frame
//! wins), `GET /live.jpg` (the latest frame), `GET /` (a page showing the stream). Anything
//! else is `404`; methods other than GET/HEAD are `405`; a malformed head is `400`.

use crate::wbuf::{Full, WBuf};

/// Largest request head accepted. Policy: `431` and close.
pub const MAX_HEAD_BYTES: usize = 2048;
/// Multipart boundary of the MJPEG stream.
pub const BOUNDARY: &str = "uavstreamframe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, without query string.
    pub path: &'a str,
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
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(HttpError::VersionNotSupported),
        _ => return Err(HttpError::BadRequest),
    }
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
    for l in lines.filter(|l| !l.is_empty()) {
        match l.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']) => {}
            _ => return Err(HttpError::BadRequest),
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    Ok(Parsed::Complete { request: Request { method, path }, consumed: start + end })
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The HTML page with the stream in an `<img>`.
    Index,
    /// `multipart/x-mixed-replace` JPEG stream.
    Mjpeg,
    /// The latest frame.
    Snapshot,
    NotFound,
    MethodNotAllowed,
}

/// Routes a request for the stream at `stream_path` (e.g. `/live`).
pub fn route(req: &Request<'_>, stream_path: &str) -> Route {
    if req.method == Method::Other {
        return Route::MethodNotAllowed;
    }
    let base = stream_path.trim_end_matches('/');
    match req.path {
        "/" | "/index.html" => Route::Index,
        p => match p.strip_prefix(base) {
            Some(".mjpeg") => Route::Mjpeg,
            Some(".jpg") | Some(".jpeg") => Route::Snapshot,
            _ => Route::NotFound,
        },
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Writes a response head. Every response closes the connection; `content_length` is `None`
/// for the endless multipart stream.
pub fn write_head(
    w: &mut WBuf<'_>,
    status: u16,
    content_type: &str,
    content_length: Option<usize>,
) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "HTTP/1.1 {status} {}\r\nServer: uavstream/{}\r\nContent-Type: {content_type}\r\n",
        reason_phrase(status),
        env!("CARGO_PKG_VERSION")
    ))?;
    if let Some(n) = content_length {
        w.put_fmt(format_args!("Content-Length: {n}\r\n"))?;
    }
    match status {
        405 => w.put(b"Allow: GET, HEAD\r\n")?,
        503 => w.put(b"Retry-After: 1\r\n")?,
        _ => {}
    }
    w.put(b"Cache-Control: no-store\r\nConnection: close\r\n\r\n")
}

/// Writes a complete error response with a one-line text body.
pub fn write_error(w: &mut WBuf<'_>, status: u16) -> Result<(), Full> {
    let reason = reason_phrase(status);
    write_head(w, status, "text/plain; charset=utf-8", Some(reason.len() + 1))?;
    w.put(reason.as_bytes())?;
    w.put(b"\n")
}

/// Writes the head of the multipart stream.
pub fn write_mjpeg_head(w: &mut WBuf<'_>) -> Result<(), Full> {
    let mut ct = heapless::String::<64>::new();
    let _ = core::fmt::Write::write_fmt(&mut ct, format_args!("multipart/x-mixed-replace; boundary={BOUNDARY}"));
    write_head(w, 200, &ct, None)
}

/// Writes the header of one multipart part; the JPEG and a CRLF follow it.
pub fn write_part_header(w: &mut WBuf<'_>, jpeg_len: usize) -> Result<(), Full> {
    w.put_fmt(format_args!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {jpeg_len}\r\n\r\n"))
}

/// Writes the index page, which shows the stream at `stream_path`.
pub fn write_index(w: &mut WBuf<'_>, stream_path: &str) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>uavstream</title></head>\n\
         <body style=\"margin:0;background:#000\">\n<img src=\"{0}.mjpeg\" alt=\"{0}\" style=\"max-width:100%\">\n\
         </body></html>\n",
        stream_path.trim_end_matches('/')
    ))
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

    #[test]
    fn routes() {
        let r = |method, path| route(&Request { method, path }, "/live");
        assert_eq!(r(Method::Get, "/"), Route::Index);
        assert_eq!(r(Method::Get, "/live.mjpeg"), Route::Mjpeg);
        assert_eq!(r(Method::Head, "/live.jpg"), Route::Snapshot);
        assert_eq!(r(Method::Get, "/live"), Route::NotFound);
        assert_eq!(r(Method::Get, "/other.mjpeg"), Route::NotFound);
        assert_eq!(r(Method::Other, "/live.mjpeg"), Route::MethodNotAllowed);
    }

    #[test]
    fn responses() {
        let mut buf = [0xa5u8; 512];
        let mut w = WBuf::new(&mut buf);
        write_mjpeg_head(&mut w).unwrap();
        write_part_header(&mut w, 1234).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: multipart/x-mixed-replace; boundary=uavstreamframe\r\n"));
        assert!(!text.contains("Content-Length: 0"));
        assert!(text.ends_with("\r\n\r\n--uavstreamframe\r\nContent-Type: image/jpeg\r\nContent-Length: 1234\r\n\r\n"));
        let mut w = WBuf::new(&mut buf);
        write_index(&mut w, "/live").unwrap();
        assert!(core::str::from_utf8(w.written()).unwrap().contains("<img src=\"/live.mjpeg\""));
        let mut w = WBuf::new(&mut buf);
        write_error(&mut w, 405).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nMethod Not Allowed\n"));
        assert!(write_error(&mut WBuf::new(&mut [0u8; 16]), 404).is_err());
    }
}
