//! RTSP request parser (RFC 2326 §6) and interleaved-frame splitter (§10.12).
//!
//! [`parse_input`] looks at the front of a connection's input buffer and returns either a
//! complete request (borrowing from the buffer), a complete interleaved frame, `Incomplete`, or
//! an error that ends the connection after an error response. It never copies and never
//! allocates; callers keep calling it on the remaining bytes to handle pipelined requests.
//!
//! Accepted leniencies, each seen in the field: bare `LF` line endings, extra spaces around
//! header values, any header-name case.

use crate::limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    Options,
    Describe,
    Setup,
    Play,
    Pause,
    Teardown,
    GetParameter,
    SetParameter,
    Announce,
    Record,
    Redirect,
    Other(&'a str),
}

impl<'a> Method<'a> {
    fn from_token(t: &'a str) -> Self {
        match t {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            "ANNOUNCE" => Method::Announce,
            "RECORD" => Method::Record,
            "REDIRECT" => Method::Redirect,
            other => Method::Other(other),
        }
    }

    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Announce => "ANNOUNCE",
            Method::Record => "RECORD",
            Method::Redirect => "REDIRECT",
            Method::Other(s) => s,
        }
    }
}

pub type Headers<'a> = heapless::Vec<(&'a str, &'a str), { limits::MAX_HEADERS }>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method<'a>,
    pub uri: &'a str,
    /// (major, minor) of `RTSP/x.y`.
    pub version: (u8, u8),
    pub headers: Headers<'a>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v)
    }

    pub fn cseq(&self) -> Option<&'a str> {
        self.header("CSeq")
    }

    /// The session id of the `Session` header, without its parameters.
    pub fn session_id(&self) -> Option<&'a str> {
        self.header("Session").map(|v| v.split(';').next().unwrap_or("").trim())
    }

    /// Writes the request back out (used by round-trip tests and fuzzing).
    pub fn write_to(&self, w: &mut crate::wbuf::WBuf<'_>) -> Result<(), crate::wbuf::Full> {
        w.put_fmt(format_args!(
            "{} {} RTSP/{}.{}\r\n",
            self.method.as_str(),
            self.uri,
            self.version.0,
            self.version.1
        ))?;
        for (n, v) in &self.headers {
            w.put_fmt(format_args!("{n}: {v}\r\n"))?;
        }
        w.put(b"\r\n")?;
        w.put(self.body)
    }
}

/// Why a request could not be parsed; each maps to the status code we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    BadRequestLine,
    BadHeader,
    NotUtf8,
    TooManyHeaders,
    HeadTooLarge,
    BadContentLength,
    BodyTooLarge,
    UnsupportedVersion,
    /// An interleaved frame longer than we accept from a client.
    FrameTooLarge,
}

impl ParseError {
    pub fn status(self) -> u16 {
        match self {
            ParseError::TooManyHeaders | ParseError::HeadTooLarge => 431,
            ParseError::BodyTooLarge | ParseError::FrameTooLarge => 413,
            ParseError::UnsupportedVersion => 505,
            _ => 400,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ParseError::BadRequestLine => "malformed request line",
            ParseError::BadHeader => "malformed header line",
            ParseError::NotUtf8 => "request head is not UTF-8",
            ParseError::TooManyHeaders => "too many headers",
            ParseError::HeadTooLarge => "request head too large",
            ParseError::BadContentLength => "bad Content-Length",
            ParseError::BodyTooLarge => "body too large",
            ParseError::UnsupportedVersion => "unsupported RTSP version",
            ParseError::FrameTooLarge => "interleaved frame too large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // lives on the stack for one call; boxing would allocate
pub enum Input<'a> {
    /// Need more bytes.
    Incomplete,
    Request {
        request: Request<'a>,
        consumed: usize,
    },
    /// `$` channel length data (a client's RTCP on the interleaved channel).
    Interleaved {
        channel: u8,
        data: &'a [u8],
        consumed: usize,
    },
}

/// Parses whatever complete unit sits at the front of `buf`.
pub fn parse_input(buf: &[u8]) -> Result<Input<'_>, ParseError> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return Ok(Input::Incomplete);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len > limits::MAX_INTERLEAVED_IN {
            return Err(ParseError::FrameTooLarge);
        }
        return Ok(match buf.get(4..4 + len) {
            Some(data) => Input::Interleaved { channel: buf[1], data, consumed: 4 + len },
            None => Input::Incomplete,
        });
    }
    parse_request(buf)
}

/// Finds the end of the head: returns (head length without the blank line, total head length).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = &buf[nl + 1..];
        if next.first() == Some(&b'\n') {
            return Some((nl + 1, nl + 2));
        }
        if next.starts_with(b"\r\n") {
            return Some((nl + 1, nl + 3));
        }
        if next.is_empty() || (next == b"\r") {
            return None;
        }
        i = nl + 1;
    }
    None
}

fn parse_request(buf: &[u8]) -> Result<Input<'_>, ParseError> {
    // Skip empty lines between pipelined requests (RFC 2616 §4.1 tolerance, sent by some VLCs).
    let lead = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let buf_all = buf;
    let buf = &buf[lead..];
    if buf.is_empty() {
        return Ok(Input::Incomplete);
    }
    let Some((head_len, total_head)) = find_head_end(buf) else {
        if buf.len() >= limits::MAX_REQUEST_BYTES {
            return Err(ParseError::HeadTooLarge);
        }
        // Reject a non-RTSP first line early rather than waiting to fill the buffer.
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = &buf[..nl];
            parse_request_line(line.strip_suffix(b"\r").unwrap_or(line))?;
        }
        return Ok(Input::Incomplete);
    };
    if total_head > limits::MAX_REQUEST_BYTES {
        return Err(ParseError::HeadTooLarge);
    }
    let head = core::str::from_utf8(&buf[..head_len]).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let (method, uri, version) = parse_request_line(lines.next().unwrap_or("").as_bytes())?;
    let mut headers = Headers::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::BadHeader); // obsolete line folding
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::BadHeader);
        }
        headers.push((name, value.trim())).map_err(|_| ParseError::TooManyHeaders)?;
    }
    let mut content_length = 0usize;
    for (_, v) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length")) {
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadContentLength);
        }
        let n: usize = v.parse().map_err(|_| ParseError::BadContentLength)?;
        if n > limits::MAX_BODY_BYTES {
            return Err(ParseError::BodyTooLarge);
        }
        content_length = n;
    }
    let Some(body) = buf.get(total_head..total_head + content_length) else {
        return Ok(Input::Incomplete);
    };
    let consumed = lead + total_head + content_length;
    debug_assert!(consumed <= buf_all.len());
    Ok(Input::Request { request: Request { method, uri, version, headers, body }, consumed })
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request line without its line ending (callers strip exactly one `\r`).
fn parse_request_line(line: &[u8]) -> Result<(Method<'_>, &str, (u8, u8)), ParseError> {
    let line = core::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    // Exactly `Method SP Request-URI SP RTSP-Version` (RFC 2326 §6.1): a stray space is not a
    // client we know, and leniency here only helps request smuggling.
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequestLine);
    };
    if method.is_empty()
        || uri.is_empty()
        || !method.bytes().all(is_token_char)
        || uri.bytes().any(|b| b.is_ascii_control())
    {
        return Err(ParseError::BadRequestLine);
    }
    let ver = version.strip_prefix("RTSP/").ok_or(ParseError::BadRequestLine)?;
    let (maj, min) = ver.split_once('.').ok_or(ParseError::BadRequestLine)?;
    let parse_digit = |s: &str| -> Result<u8, ParseError> {
        match s.as_bytes() {
            [d @ b'0'..=b'9'] => Ok(d - b'0'),
            _ => Err(ParseError::BadRequestLine),
        }
    };
    let version = (parse_digit(maj)?, parse_digit(min)?);
    if version != (1, 0) {
        return Err(ParseError::UnsupportedVersion);
    }
    Ok((Method::from_token(method), uri, version))
}

/// The path of an `rtsp://host[:port]/path[?query]` URL (or of an absolute path), without the
/// query; `None` for `*` and anything that is not an rtsp URL or path.
pub fn uri_path(uri: &str) -> Option<&str> {
    let rest = if let Some(r) = uri.strip_prefix("rtsp://").or_else(|| uri.strip_prefix("rtsps://")) {
        match r.find('/') {
            Some(i) => &r[i..],
            None => "/",
        }
    } else if uri.starts_with('/') {
        uri
    } else {
        // Scheme names are case-insensitive; some clients send `RTSP://`.
        let (scheme, r) = uri.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("rtsp") {
            return None;
        }
        match r.find('/') {
            Some(i) => &r[i..],
            None => "/",
        }
    };
    Some(rest.split(['?', '#']).next().unwrap_or(rest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Verbatim requests, byte for byte, from real clients.
    pub(crate) const FFMPEG_DESCRIBE: &[u8] = b"DESCRIBE rtsp://127.0.0.1:8554/live RTSP/1.0\r\nAccept: application/sdp\r\nCSeq: 2\r\nUser-Agent: Lavf59.27.100\r\n\r\n";
    pub(crate) const FFMPEG_SETUP_TCP: &[u8] = b"SETUP rtsp://127.0.0.1:8554/live/trackID=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nCSeq: 3\r\nUser-Agent: Lavf59.27.100\r\n\r\n";
    pub(crate) const GSTREAMER_SETUP_UDP: &[u8] = b"SETUP rtsp://127.0.0.1:8554/live/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nUser-Agent: GStreamer/1.22.0\r\nTransport: RTP/AVP;unicast;client_port=45486-45487\r\nDate: Sun, 22 Nov 2026 15:30:00 GMT\r\n\r\n";
    pub(crate) const VLC_OPTIONS: &[u8] = b"OPTIONS rtsp://192.168.1.10:8554/live RTSP/1.0\r\nCSeq: 2\r\nUser-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n\r\n";
    pub(crate) const VLC_SETUP_UDP: &[u8] = b"SETUP rtsp://192.168.1.10:8554/live/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nUser-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\nTransport: RTP/AVP;unicast;client_port=55084-55085\r\n\r\n";
    /// WinTAK spells the lower transport explicitly (mediamtx #1790).
    pub(crate) const WINTAK_SETUP_UDP: &[u8] = b"SETUP rtsp://192.168.1.10:8554/live/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/UDP;unicast;client_port=50620-50621\r\n\r\n";

    fn request(input: &[u8]) -> (Request<'_>, usize) {
        match parse_input(input) {
            Ok(Input::Request { request, consumed }) => (request, consumed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verbatim_client_requests_parse() {
        let (r, n) = request(FFMPEG_DESCRIBE);
        assert_eq!(n, FFMPEG_DESCRIBE.len());
        assert_eq!(r.method, Method::Describe);
        assert_eq!(r.uri, "rtsp://127.0.0.1:8554/live");
        assert_eq!(r.cseq(), Some("2"));
        assert_eq!(r.header("accept"), Some("application/sdp"));
        let (r, _) = request(GSTREAMER_SETUP_UDP);
        assert_eq!(r.header("transport"), Some("RTP/AVP;unicast;client_port=45486-45487"));
        for req in [FFMPEG_SETUP_TCP, VLC_OPTIONS, VLC_SETUP_UDP, WINTAK_SETUP_UDP] {
            let (_, n) = request(req);
            assert_eq!(n, req.len());
        }
    }

    #[test]
    fn every_split_point_is_incomplete_then_complete() {
        for req in [FFMPEG_DESCRIBE, FFMPEG_SETUP_TCP, GSTREAMER_SETUP_UDP, VLC_SETUP_UDP, WINTAK_SETUP_UDP] {
            for cut in 0..req.len() {
                assert_eq!(parse_input(&req[..cut]), Ok(Input::Incomplete), "cut {cut}");
            }
        }
    }

    #[test]
    fn pipelined_requests_and_bodies() {
        let two = b"SET_PARAMETER rtsp://h/live RTSP/1.0\r\nCSeq: 5\r\nContent-Length: 4\r\n\r\nab\r\nGET_PARAMETER rtsp://h/live RTSP/1.0\nCSeq: 6\n\n";
        let (r, n) = request(two);
        assert_eq!(r.body, b"ab\r\n");
        let (r2, n2) = request(&two[n..]);
        assert_eq!(r2.method, Method::GetParameter);
        assert_eq!(r2.cseq(), Some("6"));
        assert_eq!(n + n2, two.len());
    }

    #[test]
    fn interleaved_frames() {
        let f = [b'$', 1, 0, 3, 9, 8, 7, b'O'];
        assert_eq!(parse_input(&f), Ok(Input::Interleaved { channel: 1, data: &[9, 8, 7], consumed: 7 }));
        assert_eq!(parse_input(&f[..6]), Ok(Input::Incomplete));
        assert_eq!(parse_input(&[b'$', 1, 0xff, 0xff]), Err(ParseError::FrameTooLarge));
    }

    #[test]
    fn malformed_requests_get_their_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"PLAY rtsp://h/live HTTP/1.1\r\nCSeq: 1\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
            (b"PLAY rtsp://h/live RTSP/1.0\r\nNoColon\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/1.0\r\n folded: x\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/1.0\r\nContent-Length: -1\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/1.0\r\nContent-Length: 99999999999\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/1.0\r\nContent-Length: 100000\r\n\r\n", 413),
            (b"PLAY rtsp://h/\xff RTSP/1.0\r\n\r\n", 400),
            (b"PLAY rtsp://h/live RTSP/1.0\r\nBad Name: x\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 400),
            (b" PLAY rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
            // Found by fuzzing: accepted whole but refused in pieces before.
            (b"SETUP rtsp://h/live RTSP/1.0\r\r\nCSeq: 1\r\n\r\n", 400),
            (b"PLAY  rtsp://h/live RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
        ];
        for (input, status) in cases {
            let e = parse_input(input).unwrap_err();
            assert_eq!(e.status(), *status, "{:?}", core::str::from_utf8(input));
        }
        let mut many = [0u8; 2048];
        let mut w = crate::wbuf::WBuf::new(&mut many);
        w.put(b"OPTIONS * RTSP/1.0\r\n").unwrap();
        for _ in 0..=limits::MAX_HEADERS {
            w.put(b"X: y\r\n").unwrap();
        }
        w.put(b"\r\n").unwrap();
        let n = w.len();
        assert_eq!(parse_input(&many[..n]), Err(ParseError::TooManyHeaders));
        let huge = [b'a'; limits::MAX_REQUEST_BYTES];
        assert_eq!(parse_input(&huge), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn write_then_parse_round_trip() {
        for req in [FFMPEG_DESCRIBE, GSTREAMER_SETUP_UDP, WINTAK_SETUP_UDP] {
            let (r, _) = request(req);
            let mut buf = [0u8; 512];
            let mut w = crate::wbuf::WBuf::new(&mut buf);
            r.write_to(&mut w).unwrap();
            let (r2, _) = request(w.written());
            assert_eq!(r, r2);
        }
    }

    #[test]
    fn uri_paths() {
        assert_eq!(uri_path("rtsp://127.0.0.1:8554/live"), Some("/live"));
        assert_eq!(uri_path("rtsp://[::1]:8554/live/trackID=0?x=1"), Some("/live/trackID=0"));
        assert_eq!(uri_path("RTSP://host"), Some("/"));
        assert_eq!(uri_path("/live"), Some("/live"));
        assert_eq!(uri_path("*"), None);
        assert_eq!(uri_path("http://h/live"), None);
    }
}
