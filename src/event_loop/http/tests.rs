//! The HTTP core driven as the loop drives it, with no socket and a virtual clock: routes,
//! supplies, waits, several streams, what the integration tests cannot reach while the loop
//! never calls `set_supply` or `wants_frames`. The connection state machine (pipelining, split
//! heads, timers, slots, half-close, newest frame wins) is in `tests/conn.rs`; the I/O shell
//! on real sockets in `tests/shell.rs`.
use super::*;
use std::net::{Ipv4Addr, SocketAddr};

use super::conn::Close;
use super::jpeg::bounded_reason;
use crate::http;
use crate::wbuf::WBuf;

mod conn;
mod shell;

/// Request, stall and idle timeouts of the servers made here.
const TIMEOUT: Duration = Duration::from_secs(10);

fn server(supply: JpegSupply) -> HttpCore<'static> {
    servers(&[("/live", supply)], 2)
}

fn servers(streams: &[(&str, JpegSupply)], slots: usize) -> HttpCore<'static> {
    let streams =
        streams.iter().map(|(path, supply)| HttpStream { path: (*path).into(), supply: supply.clone(), webrtc: false });
    HttpCore::new(slots, streams.collect(), TIMEOUT, TIMEOUT, TIMEOUT)
}

/// One client, as the loop sees it: its slot, what the server wrote to it, what it sent that
/// the server has not read yet (a full input buffer), and the time of its last event.
struct Client {
    slot: usize,
    got: Vec<u8>,
    unread: Vec<u8>,
    now: Instant,
}

/// A new connection at `now`, accepted as the loop accepts one (`None`: every slot is busy).
fn connect(h: &mut HttpCore<'_>, now: Instant) -> Option<Client> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static PORT: AtomicU16 = AtomicU16::new(1024);
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT.fetch_add(1, Ordering::Relaxed)));
    let slot = h.slot_for(peer)?;
    h.release(slot);
    h.open(slot, peer, now);
    Some(Client { slot, got: Vec::new(), unread: Vec::new(), now })
}

/// Connects and sends `request` at `now`.
fn request(h: &mut HttpCore<'_>, request: &str, now: Instant) -> Client {
    let mut c = connect(h, now).expect("a free slot");
    send(h, &mut c, request, now);
    c
}

/// The client sends `bytes` at `now`; the server reads what fits, then processes it.
fn send(h: &mut HttpCore<'_>, c: &mut Client, bytes: impl AsRef<[u8]>, now: Instant) {
    c.now = now;
    c.unread.extend_from_slice(bytes.as_ref());
    feed(h, c);
}

/// The server reads what it has room for of the client's unread bytes, and processes it.
fn feed(h: &mut HttpCore<'_>, c: &mut Client) {
    loop {
        let space = h.read_space(c.slot);
        let n = space.len().min(c.unread.len());
        if n == 0 {
            break;
        }
        space[..n].copy_from_slice(&c.unread[..n]);
        h.handle_read(c.slot, n);
        c.unread.drain(..n);
    }
    h.process(c.slot, c.now);
}

/// The client reads everything the server writes (and the server reads on as it makes room).
fn drain(h: &mut HttpCore<'_>, c: &mut Client) {
    loop {
        let n = h.pending(c.slot).len();
        if n == 0 {
            if c.unread.is_empty() || h.read_space(c.slot).is_empty() {
                return;
            }
            feed(h, c);
            continue;
        }
        c.got.extend_from_slice(h.pending(c.slot));
        h.handle_written(c.slot, n, c.now);
    }
}

/// Everything written to `c` since the last call.
fn response(h: &mut HttpCore<'_>, c: &mut Client) -> String {
    drain(h, c);
    String::from_utf8_lossy(&std::mem::take(&mut c.got)).into_owned()
}

/// Nothing is queued for `c`.
fn nothing_sent(h: &HttpCore<'_>, c: &Client) -> bool {
    h.pending(c.slot).is_empty()
}

/// The connection of `c` ended (after everything queued was read).
fn ended(h: &mut HttpCore<'_>, c: &mut Client) -> bool {
    drain(h, c);
    h.closed(c.slot).is_some()
}

const FRAME: &[u8] = b"\xff\xd8 not really a jpeg \xff\xd9";

#[test]
fn a_snapshot_waits_for_a_fresh_frame_and_keeps_demand_for_a_while() {
    let t0 = Instant::now();
    let mut h = server(JpegSupply::OnDemand);
    assert!(!h.wants_frames(0, t0));
    // A frame older than FRESH_FRAME_MAX_AGE is not served: the request waits.
    h.store_frame(0, b"old", t0);
    let now = t0 + FRESH_FRAME_MAX_AGE + Duration::from_millis(1);
    let mut c = request(&mut h, "GET /live.jpg HTTP/1.1\r\n\r\n", now);
    assert!(nothing_sent(&h, &c));
    assert!(h.wants_frames(0, now));
    h.store_frame(0, FRAME, now);
    h.pump_stream(0, now);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Connection: keep-alive\r\n"), "{text}");
    assert!(text.contains(&format!("Content-Length: {}\r\n", FRAME.len())) && text.ends_with("jpeg \u{fffd}\u{fffd}"));
    // Served and idle: still wanted for DEMAND_LINGER, then not.
    assert!(h.wants_frames(0, now + DEMAND_LINGER - Duration::from_millis(1)));
    assert!(!h.wants_frames(0, now + DEMAND_LINGER));
    // Fresh now: the next snapshot on the same connection is answered at once.
    send(&mut h, &mut c, b"HEAD /live.jpg HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n"), "{text}");
}

#[test]
fn a_snapshot_without_frames_gets_503_after_the_wait() {
    let t0 = Instant::now();
    let mut h = server(JpegSupply::Stream);
    let mut c = request(&mut h, "GET /live.jpg HTTP/1.0\r\n\r\n", t0);
    h.enforce_limits(t0 + SNAPSHOT_WAIT - Duration::from_millis(1));
    assert!(nothing_sent(&h, &c));
    h.enforce_limits(t0 + SNAPSHOT_WAIT);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("Connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nno JPEG frame arrived within 3 s\n"), "{text}");
}

#[test]
fn becoming_unavailable_answers_waiters_ends_streams_and_stops_demand() {
    let now = Instant::now();
    let mut h = server(JpegSupply::OnDemand);
    let mut waiting = request(&mut h, "GET /live.jpg HTTP/1.1\r\n\r\n", now);
    let mut streaming = request(&mut h, "GET /live.mjpeg HTTP/1.1\r\n\r\n", now);
    assert_eq!(h.streaming(0), 1);
    assert!(h.wants_frames(0, now));
    // The stream started at once, without a frame.
    let head = response(&mut h, &mut streaming);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("multipart/x-mixed-replace"), "{head}");
    h.set_supply(0, JpegSupply::Unavailable("encoder gone".into()), now);
    let text = response(&mut h, &mut waiting);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.ends_with("\r\n\r\nencoder gone\n"), "{text}");
    assert!(ended(&mut h, &mut streaming), "the stream did not end");
    assert!(!h.wants_frames(0, now));
    h.store_frame(0, FRAME, now);
    send(&mut h, &mut waiting, b"GET /live.mjpeg HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut waiting);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.ends_with("encoder gone\n"), "{text}");
    // Back to a supply: the frame stored while unavailable was dropped, so a snapshot waits.
    h.set_supply(0, JpegSupply::Stream, now);
    send(&mut h, &mut waiting, b"GET /live.jpg HTTP/1.1\r\n\r\n", now);
    assert!(nothing_sent(&h, &waiting));
    assert!(h.wants_frames(0, now));
}

#[test]
fn an_overlong_reason_is_cut_at_a_character_boundary() {
    let why = "é".repeat(MAX_REASON_BYTES);
    let JpegSupply::Unavailable(cut) = bounded_reason(JpegSupply::Unavailable(why)) else { panic!() };
    assert_eq!(cut.len(), MAX_REASON_BYTES);
    let mut h = server(JpegSupply::Unavailable("é".repeat(3 * MAX_REASON_BYTES)));
    let mut c = request(&mut h, "GET /live.jpg HTTP/1.1\r\n\r\n", Instant::now());
    assert!(response(&mut h, &mut c).starts_with("HTTP/1.1 503 "));
}

const LOW: &[u8] = b"\xff\xd8 the low stream \xff\xd9";

/// The body of a complete response, checked against its `Content-Length`.
fn body(text: &str) -> &str {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    // Each 0xff byte of a test frame came out as U+FFFD: three bytes instead of one.
    let len = body.len() - 2 * body.matches('\u{fffd}').count();
    assert!(head.contains(&format!("Content-Length: {len}\r\n")), "{text}");
    body
}

#[test]
fn a_client_gets_the_frames_of_its_stream_only() {
    let now = Instant::now();
    let mut h = servers(&[("/live", JpegSupply::Stream), ("/low", JpegSupply::OnDemand)], 4);
    let mut low = request(&mut h, "GET /low.mjpeg HTTP/1.1\r\n\r\n", now);
    let head = response(&mut h, &mut low);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("multipart/x-mixed-replace"), "{head}");
    let mut live = request(&mut h, "GET /live.jpg HTTP/1.1\r\n\r\n", now);
    assert_eq!((h.streaming(0), h.streaming(1)), (0, 1));
    // A frame of stream 0: the waiting snapshot of /live gets it, the /low stream does not,
    // however its connection is pumped.
    h.store_frame(0, FRAME, now);
    h.pump_stream(0, now);
    let text = response(&mut h, &mut live);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && body(&text).ends_with("jpeg \u{fffd}\u{fffd}"), "{text}");
    h.pump_stream(1, now);
    assert!(nothing_sent(&h, &low));
    // A frame of stream 1 goes to /low.
    h.store_frame(1, LOW, now);
    h.pump_stream(1, now);
    let part = response(&mut h, &mut low);
    assert!(part.starts_with("--uavstreamframe\r\n") && part.ends_with("low stream \u{fffd}\u{fffd}\r\n"), "{part}");
    assert!(!part.contains("not really"), "{part}");
    assert_eq!((h.parts_sent(0), h.parts_sent(1)), (0, 1));
    // Same connection, other stream: each snapshot is its stream's latest frame.
    for (path, want) in [("/low.jpeg", "low stream"), ("/live.jpg", "not really"), ("/low.jpg", "low stream")] {
        send(&mut h, &mut live, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes(), now);
        let text = response(&mut h, &mut live);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && body(&text).contains(want), "{path}: {text}");
    }
    // Another frame of stream 0 only: the /low client stays at its frame.
    h.store_frame(0, b"\xff\xd8 newer live \xff\xd9", now);
    h.pump_stream(0, now);
    h.pump_stream(1, now);
    assert!(nothing_sent(&h, &low));
    assert_eq!((h.parts_sent(0), h.parts_sent(1)), (0, 1));
}

#[test]
fn the_index_lists_every_stream_and_unknown_paths_are_404() {
    let now = Instant::now();
    let why = "the stream is H.264 <passthrough>";
    let mut h = servers(
        &[("/live", JpegSupply::Stream), ("/low", JpegSupply::OnDemand), ("/raw", JpegSupply::Unavailable(why.into()))],
        2,
    );
    let mut c = request(&mut h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", now);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Content-Type: text/html"), "{text}");
    assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
    let page = body(&text).to_owned();
    for path in ["/live", "/low"] {
        assert!(page.contains(&format!("<img src=\"{path}.mjpeg\"")), "{page}");
    }
    for path in ["/live", "/low", "/raw"] {
        assert!(page.contains(&format!("<a href=\"{path}.mjpeg\">")), "{page}");
        assert!(page.contains(&format!("<a href=\"{path}.jpg\">")), "{page}");
    }
    assert!(!page.contains("<img src=\"/raw"), "{page}");
    assert!(page.contains("the stream is H.264 &lt;passthrough&gt;"), "{page}");
    // HEAD: the same length, no page; then 404s on the same connection.
    send(&mut h, &mut c, b"HEAD /index.html HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut c);
    assert!(text.contains(&format!("Content-Length: {}\r\n", page.len())) && text.ends_with("\r\n\r\n"), "{text}");
    for path in ["/nothing", "/low", "/low.h264", "/lo.jpg", "/live.mjpeg/x", "/live/low.jpg"] {
        send(&mut h, &mut c, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes(), now);
        let text = response(&mut h, &mut c);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {text}");
    }
    // The unavailable stream answers with its reason; the others do not care.
    send(&mut h, &mut c, b"GET /raw.mjpeg HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.ends_with(&format!("\r\n\r\n{why}\n")), "{text}");
    // The page follows the supplies.
    h.set_supply(2, JpegSupply::OnDemand, now);
    h.set_supply(0, JpegSupply::Unavailable("camera gone".into()), now);
    send(&mut h, &mut c, b"GET / HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut c);
    let page = body(&text);
    assert!(page.contains("<img src=\"/raw.mjpeg\"") && page.contains("<img src=\"/low.mjpeg\""), "{page}");
    assert!(!page.contains("<img src=\"/live") && page.contains("no JPEG frames: camera gone"), "{page}");
}

#[test]
fn supply_and_demand_are_per_stream() {
    let now = Instant::now();
    let mut h = servers(&[("/a", JpegSupply::OnDemand), ("/b", JpegSupply::OnDemand)], 4);
    assert!(!h.wants_frames(0, now) && !h.wants_frames(1, now));
    let mut a = request(&mut h, "GET /a.mjpeg HTTP/1.1\r\n\r\n", now);
    assert!(response(&mut h, &mut a).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(h.wants_frames(0, now) && !h.wants_frames(1, now));
    // A snapshot of /b: wanted while it waits and DEMAND_LINGER after it was served.
    let mut b = request(&mut h, "GET /b.jpg HTTP/1.1\r\n\r\n", now);
    assert!(h.wants_frames(1, now));
    h.store_frame(1, LOW, now);
    h.pump_stream(1, now);
    assert!(response(&mut h, &mut b).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(h.wants_frames(1, now + DEMAND_LINGER - Duration::from_millis(1)));
    assert!(!h.wants_frames(1, now + DEMAND_LINGER));
    assert!(h.wants_frames(0, now + DEMAND_LINGER), "/a is still streaming");
    // /b becomes unavailable: /a streams on.
    h.set_supply(1, JpegSupply::Unavailable("b is gone".into()), now);
    assert!(!h.wants_frames(1, now) && h.wants_frames(0, now));
    h.store_frame(1, LOW, now);
    h.store_frame(0, FRAME, now);
    h.pump_stream(0, now);
    assert!(response(&mut h, &mut a).starts_with("--uavstreamframe\r\n"));
    send(&mut h, &mut b, b"GET /b.jpg HTTP/1.1\r\n\r\n", now);
    let text = response(&mut h, &mut b);
    assert!(text.starts_with("HTTP/1.1 503 ") && text.ends_with("b is gone\n"), "{text}");
    send(&mut h, &mut b, b"GET /a.jpg HTTP/1.1\r\n\r\n", now);
    assert!(response(&mut h, &mut b).starts_with("HTTP/1.1 200 OK\r\n"));
    // /a becomes unavailable: its stream ends.
    h.set_supply(0, JpegSupply::Unavailable("a is gone".into()), now);
    assert!(ended(&mut h, &mut a), "the stream did not end");
    assert!(!h.wants_frames(0, now));
    // Streams that do not exist: nothing happens.
    h.store_frame(7, FRAME, now);
    h.pump_stream(7, now);
    h.set_supply(7, JpegSupply::Stream, now);
    assert!(!h.wants_frames(7, now));
    assert_eq!((h.streaming(7), h.parts_sent(7)), (0, 0));
}

#[test]
fn a_user_limited_to_a_path_gets_that_streams_routes_only() {
    static USERS: [crate::rtsp::auth::Credential<'static>; 3] = [
        crate::rtsp::auth::Credential { user: "pilot", password: "s3cr3t", path: None },
        crate::rtsp::auth::Credential { user: "viewer", password: "look", path: Some("/low") },
        crate::rtsp::auth::Credential { user: "other", password: "x", path: Some("/cam2") },
    ];
    let now = Instant::now();
    let mut h = servers(&[("/live", JpegSupply::Stream), ("/low", JpegSupply::Stream)], 2);
    h.set_auth(crate::rtsp::auth::Auth { users: &USERS, secret: [7; 16] }, now);
    h.store_frame(0, FRAME, now);
    h.store_frame(1, LOW, now);
    let basic = |user: &str| {
        let mut buf = [0u8; 64];
        let mut w = WBuf::new(&mut buf);
        crate::wbuf::put_base64(&mut w, user.as_bytes()).unwrap();
        format!("Authorization: Basic {}\r\n", std::str::from_utf8(w.written()).unwrap())
    };
    let cases = [
        ("", "/low.jpg", 401),
        ("", "/", 401),
        ("", "/nothing", 401),
        ("viewer:look", "/low.jpg", 200),
        ("viewer:look", "/live.jpg", 401),
        ("viewer:look", "/live.mjpeg", 401),
        ("viewer:look", "/", 200),
        ("viewer:look", "/nothing", 404),
        ("other:x", "/", 401),
        ("other:x", "/low.jpg", 401),
        ("pilot:s3cr3t", "/live.jpg", 200),
        ("pilot:s3cr3t", "/low.jpg", 200),
        ("pilot:s3cr3t", "/", 200),
    ];
    let mut c = request(&mut h, "GET /live.jpg HTTP/1.1\r\n\r\n", now);
    assert!(response(&mut h, &mut c).starts_with("HTTP/1.1 401 "));
    for (user, path, status) in cases {
        let auth = if user.is_empty() { String::new() } else { basic(user) };
        send(&mut h, &mut c, format!("GET {path} HTTP/1.1\r\n{auth}\r\n").as_bytes(), now);
        let text = response(&mut h, &mut c);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{user} {path}: {text}");
    }
}

#[test]
fn whep_offers_need_the_streams_credentials_and_their_body_arrives_in_pieces() {
    static USERS: [crate::rtsp::auth::Credential<'static>; 1] =
        [crate::rtsp::auth::Credential { user: "viewer", password: "look", path: Some("/live") }];
    let now = Instant::now();
    let s = Duration::from_secs(10);
    let streams = vec![
        HttpStream { path: "/live".into(), supply: JpegSupply::OnDemand, webrtc: true },
        HttpStream { path: "/other".into(), supply: JpegSupply::OnDemand, webrtc: true },
    ];
    let mut h = HttpCore::new(4, streams, s, s, s);
    h.set_auth(crate::rtsp::auth::Auth { users: &USERS, secret: [7; 16] }, now);
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let head = |auth: &str, path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            offer.len()
        )
    };
    // No credentials, or another stream's: 401, and nothing waits for the loop.
    for (auth, path) in [("", "/live/whep"), ("Authorization: Basic dmlld2VyOmxvb2s=\r\n", "/other/whep")] {
        let mut c = request(&mut h, &format!("{}{offer}", head(auth, path)), now);
        assert!(response(&mut h, &mut c).starts_with("HTTP/1.1 401 "), "{path}");
        assert_eq!(h.whep_offers().count(), 0);
    }
    // The head alone, then the body in two pieces: the offer waits for the loop once whole.
    let mut c = request(&mut h, &head("Authorization: Basic dmlld2VyOmxvb2s=\r\n", "/live/whep"), now);
    assert_eq!(h.whep_offers().count(), 0);
    send(&mut h, &mut c, &offer.as_bytes()[..10], now);
    assert_eq!(h.whep_offers().count(), 0, "half a body");
    send(&mut h, &mut c, &offer.as_bytes()[10..], now);
    let offers: Vec<(usize, usize)> = h.whep_offers().collect();
    assert_eq!(offers.len(), 1);
    let (conn, stream) = offers[0];
    assert_eq!((stream, h.whep_offer(conn).0), (0, offer.as_bytes()));
    h.answer_whep(conn, WhepAnswer::Created { id: 0xab, sdp: "v=0\r\n" }, now);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
    assert!(text.contains("Location: /live/whep/00000000000000ab\r\n") && text.ends_with("\r\n\r\nv=0\r\n"), "{text}");
}
