//! The connection state machine on a virtual clock: heads split anywhere, pipelining without
//! reordering or growth, every timer, slots and eviction, half-close, newest frame wins.
use super::*;

const GET: &str = "GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n";

fn fresh_server(now: Instant) -> HttpCore<'static> {
    let mut h = server(JpegSupply::Stream);
    h.store_frame(0, FRAME, now);
    h
}

#[test]
fn a_head_split_at_any_byte_is_answered_once_complete() {
    let now = Instant::now();
    for split in 0..=GET.len() {
        let mut h = fresh_server(now);
        let mut c = connect(&mut h, now).unwrap();
        send(&mut h, &mut c, &GET[..split], now);
        if split < GET.len() {
            assert!(nothing_sent(&h, &c), "answered before the head was complete (split {split})");
        }
        send(&mut h, &mut c, &GET[split..], now);
        let text = response(&mut h, &mut c);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "split {split}: {text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "split {split}: {text}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_one_response_at_a_time() {
    let now = Instant::now();
    let mut h = fresh_server(now);
    let three = format!("GET /nothing HTTP/1.1\r\n\r\n{GET}HEAD / HTTP/1.1\r\n\r\n");
    let mut c = request(&mut h, &three, now);
    // Only the first response is queued; the others wait until it is written.
    let first = String::from_utf8_lossy(h.pending(c.slot)).into_owned();
    assert!(first.starts_with("HTTP/1.1 404 ") && !first.contains("200 OK"), "{first}");
    let text = response(&mut h, &mut c);
    let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["404", "200", "200"], "{text}");
    assert!(h.closed(c.slot).is_none(), "persistent");
}

#[test]
fn a_full_input_buffer_stops_reading_until_the_response_is_taken() {
    let now = Instant::now();
    let mut h = fresh_server(now);
    let many = GET.repeat(http::MAX_HEAD_BYTES / GET.len() + 8);
    let mut c = connect(&mut h, now).unwrap();
    send(&mut h, &mut c, &many, now);
    // The server read until its input buffer was full and answers one request at a time; the
    // rest stays with the client (TCP backpressure), nothing is discarded.
    assert!(!c.unread.is_empty() && h.read_space(c.slot).len() <= GET.len());
    let text = response(&mut h, &mut c);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), many.len() / GET.len(), "every request answered");
    assert!(c.unread.is_empty());
}

#[test]
fn a_slow_head_gets_408_at_the_request_timeout_and_the_connection_ends() {
    let t0 = Instant::now();
    let mut h = fresh_server(t0);
    let mut c = connect(&mut h, t0).unwrap();
    send(&mut h, &mut c, "GET /live.jpg HTTP/1.1\r\n", t0 + Duration::from_secs(1));
    // The timer runs from the connect (no byte yet) and then from the head's first byte.
    h.enforce_limits(t0 + TIMEOUT - Duration::from_millis(1));
    assert!(nothing_sent(&h, &c) && h.closed(c.slot).is_none());
    h.enforce_limits(t0 + TIMEOUT);
    let text = response(&mut h, &mut c);
    assert!(text.starts_with("HTTP/1.1 408 ") && text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(h.closed(c.slot), Some(Close::Finish));
}

#[test]
fn an_idle_persistent_connection_is_closed_without_a_response() {
    let t0 = Instant::now();
    let mut h = fresh_server(t0);
    let mut c = request(&mut h, GET, t0);
    assert!(response(&mut h, &mut c).starts_with("HTTP/1.1 200 OK\r\n"));
    let t1 = t0 + Duration::from_millis(900);
    send(&mut h, &mut c, GET, t1);
    assert!(response(&mut h, &mut c).starts_with("HTTP/1.1 200 OK\r\n"));
    // Idle counts from the last response written, not from the connect.
    h.enforce_limits(t1 + TIMEOUT - Duration::from_millis(1));
    assert!(h.closed(c.slot).is_none());
    h.enforce_limits(t1 + TIMEOUT);
    assert_eq!(h.closed(c.slot), Some(Close::Abort));
    assert!(nothing_sent(&h, &c));
}

#[test]
fn a_client_that_takes_nothing_is_dropped_at_the_stall_timeout() {
    let t0 = Instant::now();
    let mut h = fresh_server(t0);
    let c = request(&mut h, "GET /live.mjpeg HTTP/1.1\r\n\r\n", t0);
    assert!(!nothing_sent(&h, &c));
    h.enforce_limits(t0 + TIMEOUT - Duration::from_millis(1));
    assert!(h.closed(c.slot).is_none());
    // Progress (a partial write) restarts the timer.
    let t1 = t0 + Duration::from_secs(3);
    h.handle_written(c.slot, 1, t1);
    h.enforce_limits(t0 + TIMEOUT);
    assert!(h.closed(c.slot).is_none());
    h.enforce_limits(t1 + TIMEOUT);
    assert_eq!(h.closed(c.slot), Some(Close::Drop));
}

#[test]
fn a_new_connection_evicts_the_longest_idle_one_and_never_a_busy_one() {
    let t0 = Instant::now();
    let mut h = fresh_server(t0);
    // Two slots: one idle since t0, one idle since t0 + 1 s.
    let mut a = request(&mut h, GET, t0);
    response(&mut h, &mut a);
    let mut b = request(&mut h, GET, t0 + Duration::from_secs(1));
    response(&mut h, &mut b);
    let c = connect(&mut h, t0 + Duration::from_secs(2)).expect("an idle slot is taken over");
    assert_eq!(c.slot, a.slot);
    // b now streams and c is mid-request: nothing is idle, the next one is refused.
    send(&mut h, &mut b, "GET /live.mjpeg HTTP/1.1\r\n\r\n", t0 + Duration::from_secs(2));
    assert!(connect(&mut h, t0 + Duration::from_secs(3)).is_none());
    assert!(String::from_utf8_lossy(h.refusal()).starts_with("HTTP/1.1 503 "));
    assert!(h.closed(b.slot).is_none() && h.closed(c.slot).is_none());
}

#[test]
fn after_the_clients_half_close_its_requests_are_still_answered() {
    let now = Instant::now();
    let mut h = fresh_server(now);
    let mut c = request(&mut h, &format!("{GET}{GET}GET /live"), now);
    h.handle_peer_closed(c.slot);
    h.process(c.slot, now);
    let text = response(&mut h, &mut c);
    // Both complete requests answered; the incomplete rest can never complete.
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert_eq!(h.closed(c.slot), Some(Close::Finish));
}

#[test]
fn a_slow_mjpeg_client_skips_to_the_newest_frame() {
    let now = Instant::now();
    let mut h = server(JpegSupply::Stream);
    let mut c = request(&mut h, "GET /live.mjpeg HTTP/1.1\r\n\r\n", now);
    assert!(response(&mut h, &mut c).contains("multipart/x-mixed-replace"));
    h.store_frame(0, b"first", now);
    h.pump_stream(0, now);
    // The client has not taken the first part: later frames only replace the latest.
    for frame in [&b"second"[..], b"third", b"fourth"] {
        h.store_frame(0, frame, now);
        h.pump_stream(0, now);
    }
    let text = response(&mut h, &mut c);
    assert!(text.contains("first") && text.contains("fourth"), "{text}");
    assert!(!text.contains("second") && !text.contains("third"), "{text}");
    assert_eq!(h.parts_sent(0), 2);
    // Bytes the streaming client sends are read and dropped (never parsed as requests).
    send(&mut h, &mut c, GET, now);
    assert!(nothing_sent(&h, &c) && c.unread.is_empty());
    // Its hang-up ends the stream.
    h.handle_peer_closed(c.slot);
    h.process(c.slot, now);
    assert_eq!(h.closed(c.slot), Some(Close::Drop));
}

#[test]
fn a_malformed_head_gets_400_and_the_connection_ends_while_others_are_served() {
    let now = Instant::now();
    let mut h = fresh_server(now);
    let mut bad = request(&mut h, "GET /live.jpg HTTP/1.1\r\nNo colon here\r\n\r\n", now);
    let mut good = request(&mut h, GET, now);
    let text = response(&mut h, &mut bad);
    assert!(text.starts_with("HTTP/1.1 400 ") && text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(h.closed(bad.slot), Some(Close::Finish));
    assert!(response(&mut h, &mut good).starts_with("HTTP/1.1 200 OK\r\n"));
}
