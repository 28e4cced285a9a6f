//! The I/O shell on loopback sockets: bytes move between the sockets and the core, a full
//! server answers `503`, sockets end the way the core says.
use super::*;
use std::net::TcpStream;

fn shell(slots: usize) -> Http<'static> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let streams = vec![HttpStream { path: "/live".into(), supply: JpegSupply::Stream, webrtc: false }];
    Http::new(listener, slots, streams, TIMEOUT, TIMEOUT, TIMEOUT).unwrap()
}

/// Accepts, then lets every connection read and write as if poll said so, until `client` has
/// something to read (at most 5 s).
fn turn(h: &mut Http<'_>, client: &TcpStream, now: Instant) {
    h.accept(now);
    for _ in 0..500 {
        let slots: Vec<usize> = h.interests().map(|(i, _, _)| i).collect();
        for i in slots {
            h.on_conn(i, POLLIN | POLLOUT, now);
        }
        h.reap();
        let mut probe = [0u8; 1];
        client.set_nonblocking(true).unwrap();
        let ready = !matches!(client.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        client.set_nonblocking(false).unwrap();
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_available(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = c.read(&mut buf) {
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn pipelined_requests_on_a_socket_get_their_responses_in_order() {
    let now = Instant::now();
    let mut h = shell(1);
    h.store_frame(0, FRAME, now);
    let mut c = TcpStream::connect(h.local_addr().unwrap()).unwrap();
    c.write_all(b"GET /live.jpg HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\nGET /live.jpg HTTP/1.0\r\n\r\n").unwrap();
    turn(&mut h, &c, now);
    let text = read_available(&mut c);
    let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "404", "200"], "{text}");
    // The HTTP/1.0 request ends the connection: FIN after the last response.
    assert!(matches!(c.read(&mut [0u8; 16]), Ok(0)));
}

#[test]
fn a_full_server_answers_503_and_keeps_its_clients() {
    let now = Instant::now();
    let mut h = shell(1);
    let mut streaming = TcpStream::connect(h.local_addr().unwrap()).unwrap();
    streaming.write_all(b"GET /live.mjpeg HTTP/1.1\r\n\r\n").unwrap();
    turn(&mut h, &streaming, now);
    assert!(read_available(&mut streaming).contains("multipart/x-mixed-replace"));
    let mut refused = TcpStream::connect(h.local_addr().unwrap()).unwrap();
    turn(&mut h, &refused, now);
    assert!(read_available(&mut refused).starts_with("HTTP/1.1 503 "));
    h.store_frame(0, FRAME, now);
    h.pump_stream(0, now);
    assert!(read_available(&mut streaming).starts_with("--uavstreamframe\r\n"));
}
