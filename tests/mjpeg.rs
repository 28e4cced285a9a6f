//! MJPEG end to end with clients nobody here wrote: RTP/JPEG (RFC 2435) over RTSP played by
//! ffmpeg and GStreamer over UDP and TCP, MJPEG over HTTP received by curl and rendered by
//! headless Chromium, and push mode (`--rtp-dest`) received by GStreamer from `--sdp-out`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{recv_with_tos, run_with_timeout, Daemon, RtspClient};
use uavstream::rtp::header::RtpHeader;
use uavstream::rtp::jpeg::Depacketizer;
use uavstream::wbuf::WBuf;

const FRAMES: usize = 30;

fn mjpeg_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--codec", "mjpeg", "--width", "640", "--height", "360"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// Decodes a JPEG; returns its size.
fn decode(jpeg: &[u8]) -> Result<(u16, u16), String> {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    let pixels = d.decode().map_err(|e| e.to_string())?;
    let info = d.info().ok_or("no info")?;
    assert_eq!(pixels.len(), usize::from(info.width) * usize::from(info.height) * 3);
    Ok((info.width, info.height))
}

fn check_ffmpeg(transport: &str) {
    let d = mjpeg_daemon(&[]);
    let (frames, dims, stderr) = common::ffmpeg_decode(&d.url(), transport, FRAMES);
    assert_eq!(frames, FRAMES, "ffmpeg over {transport}: {frames} frames; stderr:\n{stderr}\nserver:\n{}", d.log());
    assert!(dims.ends_with("640x360"), "{dims}");
    // ffmpeg binds its client ports from 5000 up and says so when one is taken (other tests run
    // alongside), then takes the next pair: not an error of the stream.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.ends_with("bind failed: Address already in use"))
        .collect();
    assert!(errors.is_empty(), "ffmpeg reported errors over {transport}:\n{stderr}");
}

#[test]
fn ffmpeg_decodes_rtp_jpeg_over_tcp() {
    check_ffmpeg("tcp");
}

#[test]
fn ffmpeg_decodes_rtp_jpeg_over_udp() {
    check_ffmpeg("udp");
}

fn gst_decode(pipeline_head: &[&str], what: &str, d: &Daemon) {
    let eos = format!("eos-after={FRAMES}");
    let mut args = vec!["-e"];
    args.extend_from_slice(pipeline_head);
    args.extend_from_slice(&["!", "rtpjpegdepay", "!", "jpegdec", "!", "identity", &eos, "!", "fakesink"]);
    let out = run_with_timeout(Command::new("gst-launch-1.0").args(&args), Duration::from_secs(40));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gst-launch {what} failed:\n{text}\nserver:\n{}", d.log());
    assert!(text.contains("Got EOS from element"), "no EOS after {FRAMES} decoded frames ({what}):\n{text}");
    assert!(!text.contains("ERROR") && !text.contains("WARNING"), "GStreamer reported problems ({what}):\n{text}");
}

#[test]
fn gstreamer_rtspsrc_rtpjpegdepay_decodes_over_tcp_and_udp() {
    let d = mjpeg_daemon(&[]);
    for protocol in ["tcp", "udp"] {
        let loc = format!("location={}", d.url());
        let proto = format!("protocols={protocol}");
        gst_decode(&["rtspsrc", &loc, &proto, "latency=0"], protocol, &d);
    }
}

#[test]
fn sdp_announces_payload_type_26_and_a_joiner_starts_at_a_whole_frame() {
    let d = mjpeg_daemon(&[]);
    let mut c = RtspClient::connect(&d.url());
    let url = c.url.clone();
    let desc = c.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    let sdp = String::from_utf8(desc.body.clone()).unwrap();
    assert!(sdp.contains("m=video 0 RTP/AVP 26\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtpmap:26 JPEG/90000\r\n") && sdp.contains("a=framerate:30\r\n"), "{sdp}");
    assert!(sdp.contains("a=control:trackID=0\r\n") && !sdp.contains("H264"), "{sdp}");
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    // The first packet starts a frame (fragment offset 0, tables in-band); rebuild three frames.
    let mut de = Depacketizer::new();
    let mut jpeg = vec![0u8; 1 << 20];
    let mut out = WBuf::new(&mut jpeg);
    let (mut frames, mut first, mut last_ts) = (0, true, None);
    while frames < 3 {
        let f = c.next_frame().expect("RTP after PLAY");
        if f.channel != 0 {
            continue;
        }
        let (h, payload) = RtpHeader::parse(&f.data).unwrap();
        assert_eq!(h.payload_type, 26);
        if first {
            assert_eq!(&payload[1..4], &[0, 0, 0], "the first packet a joiner gets starts a frame");
            first = false;
        }
        if let Some(ts) = last_ts.filter(|_| payload[1..4] == [0, 0, 0]) {
            let delta = h.timestamp.wrapping_sub(ts);
            assert!((1500..=9000).contains(&delta), "90 kHz timestamps at 30 fps: delta {delta}");
        }
        de.push(payload, &mut out).unwrap();
        if h.marker {
            de.finish(&mut out).unwrap();
            assert_eq!(decode(out.written()), Ok((640, 360)));
            out = WBuf::new(&mut jpeg);
            frames += 1;
            last_ts = Some(h.timestamp);
        }
    }
}

/// A raw HTTP/1.x client on one TCP connection: reads responses by their Content-Length, so
/// several can come over one connection (persistent or pipelined).
struct HttpConn {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Connects to the daemon's HTTP port, which is bound just after the RTSP port that
/// [`Daemon::start`] waits for: a refusal right after start is retried.
fn connect_http(port: u16) -> TcpStream {
    let t = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("connect to the HTTP port {port}: {e}"),
        }
    }
}

impl HttpConn {
    fn open(port: u16) -> HttpConn {
        let s = connect_http(port);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        HttpConn { s, buf: Vec::new() }
    }

    fn send(&mut self, request: &str) {
        self.s.write_all(request.as_bytes()).unwrap();
    }

    /// Reads more; false at EOF, on a reset or after the read timeout.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// `(status line and headers, body)` of the next response; without a Content-Length the body
    /// runs to EOF. `None` if the connection ends before a complete response.
    fn response(&mut self, head_request: bool) -> Option<(String, Vec<u8>)> {
        let end = loop {
            if let Some(e) = common::find(&self.buf, b"\r\n\r\n") {
                break e + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let length = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().unwrap())
        });
        let length = match (head_request, length) {
            (true, _) => 0,
            (false, Some(n)) => n,
            (false, None) => {
                while self.fill() {}
                self.buf.len() - end
            }
        };
        while self.buf.len() < end + length {
            if !self.fill() {
                return None;
            }
        }
        let body = self.buf[end..end + length].to_vec();
        self.buf.drain(..end + length);
        Some((head, body))
    }

    /// Whether the server closes the connection (EOF with nothing more sent) within the read
    /// timeout.
    fn closed_by_server(&mut self) -> bool {
        let mut tmp = [0u8; 1024];
        self.buf.is_empty() && matches!(self.s.read(&mut tmp), Ok(0))
    }
}

/// `(status line and headers, body)` of one HTTP exchange on a fresh connection.
fn http_get(port: u16, request: &str) -> (String, Vec<u8>) {
    let mut c = HttpConn::open(port);
    c.send(request);
    c.response(request.starts_with("HEAD ")).unwrap_or_else(|| (String::from_utf8_lossy(&c.buf).into_owned(), vec![]))
}

/// Splits a multipart/x-mixed-replace body into its JPEG parts (complete ones only).
fn parts(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = common::find(rest, b"--uavstreamframe\r\n") {
        let after = &rest[start..];
        let Some(hend) = common::find(after, b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&after[..hend]).to_lowercase();
        assert!(head.contains("content-type: image/jpeg"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("Content-Length in every part")
            .trim()
            .parse()
            .unwrap();
        let Some(jpeg) = after.get(hend + 4..hend + 4 + len) else { break };
        out.push(jpeg);
        rest = &after[hend + 4 + len..];
    }
    out
}

#[test]
fn curl_receives_multipart_parts_that_each_decode() {
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let dir = std::env::temp_dir().join(format!("uavstream-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (body, head) = (dir.join("body"), dir.join("head"));
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--max-time", "3", "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .arg(format!("http://127.0.0.1:{}/live.mjpeg", d.http_port)),
        Duration::from_secs(20),
    );
    // curl ends the endless stream at --max-time (exit 28).
    assert_eq!(out.status.code(), Some(28), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read_to_string(&head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: multipart/x-mixed-replace; boundary=uavstreamframe\r\n"), "{head}");
    let body = std::fs::read(&body).unwrap();
    let parts = parts(&body);
    assert!(parts.len() >= 10, "only {} parts in 3 s", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(decode(p), Ok((640, 360)), "part {i}");
    }
    eprintln!(
        "figure: curl got {} MJPEG parts in 3 s, {} bytes/part on average",
        parts.len(),
        body.len() / parts.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http_snapshot_index_errors_and_slot_limit() {
    let d = mjpeg_daemon(&["--max-http-clients", "2"]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let port = d.http_port;
    let (head, body) = http_get(port, "GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: image/jpeg\r\n") && head.contains("Cache-Control: no-store\r\n"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
    assert_eq!(decode(&body), Ok((640, 360)));
    let (head, body) = http_get(port, "GET / HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("text/html"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("<img src=\"/live.mjpeg\""));
    let (head, _) = http_get(port, "HEAD /live.jpg HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for (req, status) in [
        ("GET /nothing HTTP/1.1\r\n\r\n", "404"),
        ("GET /live.h264 HTTP/1.1\r\n\r\n", "404"),
        ("POST /live.jpg HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"),
        ("DELETE / HTTP/1.1\r\n\r\n", "405"),
        ("GET / HTTP/3\r\n\r\n", "505"),
        ("\x16\x03\x01 hello\r\n\r\n", "400"),
    ] {
        let (head, _) = http_get(port, req);
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{req:?} -> {head}");
    }
    // Two slots: two streams play, a third connection gets 503, a slot frees on close.
    let open = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /live.mjpeg HTTP/1.1\r\n\r\n").unwrap();
        let mut b = [0u8; 64];
        s.read_exact(&mut b).unwrap();
        assert!(b.starts_with(b"HTTP/1.1 200 OK\r\n"));
        s
    };
    let a = open();
    let _b = open();
    let (head, _) = http_get(port, "GET /live.jpg HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    drop(a);
    let t = Instant::now();
    loop {
        let (head, _) = http_get(port, "GET /live.jpg HTTP/1.1\r\n\r\n");
        if head.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "slot not freed: {head}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_slow_http_client_skips_frames_and_stays_current() {
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /live.mjpeg HTTP/1.1\r\n\r\n").unwrap();
    // Read nothing for 3 s (90 frames), then everything: the server queued at most one frame
    // beyond what the kernel buffers hold, so far fewer than 90 parts arrive at once.
    std::thread::sleep(Duration::from_secs(3));
    let rss = {
        let st = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
        st.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_owned()
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let backlog = parts(&got).len();
    // 90 frames were made while it slept (and ~9 while it read); without skipping, all would come.
    assert!(backlog < 70, "{backlog} parts were queued for a client that read nothing for 3 s");
    eprintln!("figure: a client that read nothing for 3 s then got {backlog} parts at once; daemon {rss}");
    assert!(d.log().contains("MJPEG stream started"));
}

#[test]
fn headless_chromium_shows_a_frame_of_the_stream_page() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| common::have(c)).expect("chromium installed");
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let dir = std::env::temp_dir().join(format!("uavstream-chromium-{}-{}", std::process::id(), d.http_port));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("shot.png");
    // `--timeout`, not `--virtual-time-budget`: virtual time waits for pending network fetches,
    // and an MJPEG stream never finishes, so the budget never runs out (verified: it hangs).
    let out = run_with_timeout(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--timeout=3000",
                "--window-size=640,480",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("http://127.0.0.1:{}/", d.http_port)),
        Duration::from_secs(60),
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium: {}\n{}\nserver:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            d.log()
        )
    });
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let luma: Vec<f64> = pixels[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| f64::from(p[0]) * 0.299 + f64::from(p[1]) * 0.587 + f64::from(p[2]) * 0.114)
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let variance = luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / luma.len() as f64;
    assert!(variance > 500.0, "blank screenshot: {}x{} mean {mean:.1} variance {variance:.1}", info.width, info.height);
    assert!(d.log().contains("MJPEG stream started"), "the page did not open the stream:\n{}", d.log());
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_udp_port_pair() -> u16 {
    let (_, _, port) = common::client_udp_pair();
    port
}

fn check_push(codec: &str, depay: &[&str]) {
    let port = free_udp_port_pair();
    let dir = std::env::temp_dir().join(format!("uavstream-push-{codec}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sdp = dir.join("push.sdp");
    let _ = std::fs::remove_file(&sdp);
    let dest = format!("127.0.0.1:{port}");
    let sdp_s = sdp.display().to_string();
    let d = Daemon::start(&[
        "--codec",
        codec,
        "--width",
        "320",
        "--height",
        "240",
        "--rtp-dest",
        &dest,
        "--dscp",
        "46",
        "--sdp-out",
        &sdp_s,
    ]);
    d.wait_for_log("push mode: SDP written", Duration::from_secs(20));
    assert!(d.log().contains("DSCP 46 (TOS 0xb8)"), "{}", d.log());
    let text = std::fs::read_to_string(&sdp).unwrap();
    assert!(text.contains("c=IN IP4 127.0.0.1\r\n"), "{text}");
    let pt = if codec == "mjpeg" { 26 } else { 96 };
    assert!(text.contains(&format!("m=video {port} RTP/AVP {pt}\r\n")), "{text}");
    let eos = format!("eos-after={FRAMES}");
    let loc = format!("location={sdp_s}");
    let mut args = vec!["-e", "filesrc", &loc, "!", "sdpdemux", "latency=0", "!"];
    args.extend_from_slice(depay);
    args.extend_from_slice(&["!", "identity", &eos, "!", "fakesink"]);
    let out = run_with_timeout(Command::new("gst-launch-1.0").args(&args), Duration::from_secs(40));
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && log.contains("Got EOS"),
        "push {codec}: gst-launch:\n{log}\nSDP:\n{text}\nserver:\n{}",
        d.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gstreamer_receives_push_mode_jpeg_from_the_sdp_file() {
    check_push("mjpeg", &["rtpjpegdepay", "!", "jpegdec"]);
}

#[test]
fn gstreamer_receives_push_mode_h264_from_the_sdp_file() {
    check_push("h264", &["rtph264depay", "!", "h264parse", "!", "avdec_h264"]);
}

#[test]
fn jpegs_from_another_encoder_are_carried_or_refused_by_name() {
    // ffmpeg's MJPEG encoder stands in for a camera: 4:2:0 with standard tables is carried; its
    // optimised Huffman tables (RTP/JPEG receivers rebuild the standard ones) and its 4:2:2,
    // which is Y 2x2 with C 1x2 rather than RFC 2435's Y 2x1 with C 1x1, are refused by name.
    let dir = std::env::temp_dir().join(format!("uavstream-ffjpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use uavstream::rtp::jpeg::JpegError;
    for (pix_fmt, huffman, expect) in [
        ("yuvj420p", "default", Ok(1)),
        ("yuvj422p", "default", Err(JpegError::Sampling { luma: 0x22, chroma: 0x12 })),
        ("yuvj420p", "optimal", Err(JpegError::HuffmanTable)),
    ] {
        let f = dir.join(format!("{pix_fmt}-{huffman}.jpg"));
        let out = run_with_timeout(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"])
                .args(["-pix_fmt", pix_fmt, "-huffman", huffman])
                .arg(&f),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let jpeg = std::fs::read(&f).unwrap();
        match (uavstream::rtp::jpeg::parse(&jpeg), expect) {
            (Ok(frame), Ok(kind)) => assert_eq!((frame.width, frame.height, frame.kind), (320, 240, kind)),
            (Err(e), Err(want)) => assert_eq!(e, want),
            (got, want) => panic!("{pix_fmt} {huffman}: {got:?}, expected {want:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_http_request_that_never_completes_gets_408() {
    let d = mjpeg_daemon(&["--request-timeout", "1"]);
    let mut s = connect_http(d.http_port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /live.mjpeg HTTP/1.1\r\nHost: slowloris\r\n").unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    assert!(all.starts_with(b"HTTP/1.1 408 "), "{:?}", String::from_utf8_lossy(&all));
}

#[test]
fn a_taken_http_port_leaves_rtsp_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let d = Daemon::start(&["--codec", "mjpeg", "--width", "320", "--height", "240", "--http-port", &port]);
    d.wait_for_log("HTTP is off", Duration::from_secs(10));
    let mut c = RtspClient::connect(&d.url());
    c.play_tcp();
    assert!(c.next_frame().is_some(), "RTSP streams although HTTP could not listen");
}

#[test]
fn push_mode_packets_carry_the_dscp_on_the_wire() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dest = sock.local_addr().unwrap().to_string();
    let _d =
        Daemon::start(&["--codec", "mjpeg", "--width", "320", "--height", "240", "--rtp-dest", &dest, "--dscp", "46"]);
    let mut buf = [0u8; 2048];
    let (n, tos) = recv_with_tos(&sock, &mut buf);
    assert!(n > 12 && buf[1] & 0x7f == 26, "an RTP/JPEG packet");
    assert_eq!(&buf[13..16], &[0, 0, 0], "push mode starts at a frame start");
    assert_eq!(tos, Some(46 << 2), "IP TOS = DSCP 46 (EF) << 2");
}

/// A JPEG snapshot response: 200, image/jpeg, a body of the announced length that decodes.
fn assert_snapshot(response: Option<(String, Vec<u8>)>, what: &str, d: &Daemon) {
    assert_snapshot_of(response, (640, 360), what, d);
}

fn assert_snapshot_of(response: Option<(String, Vec<u8>)>, size: (u16, u16), what: &str, d: &Daemon) {
    let Some((head, body)) = response else { panic!("{what}: no response\nserver:\n{}", d.log()) };
    let ok = head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Type: image/jpeg\r\n");
    assert!(ok, "{what}: {head}{}\nserver:\n{}", String::from_utf8_lossy(&body), d.log());
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{what}: {head}");
    assert_eq!(decode(&body), Ok(size), "{what}");
}

#[test]
fn http_keep_alive_serves_two_snapshots_on_one_connection_and_curl_reuses_it() {
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let mut c = HttpConn::open(d.http_port);
    for n in 1..=2 {
        c.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = c.response(false);
        if let Some((head, _)) = &response {
            assert!(head.contains("Connection: keep-alive\r\n") && !head.contains("close"), "{head}");
        }
        assert_snapshot(response, &format!("snapshot {n} on one connection"), &d);
    }
    let url = format!("http://127.0.0.1:{}/live.jpg", d.http_port);
    let out = run_with_timeout(
        Command::new("curl").args(["-sv", "-o", "/dev/null", "-o", "/dev/null", &url, &url]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl: {stderr}");
    assert_eq!(stderr.matches("< HTTP/1.1 200 OK").count(), 2, "{stderr}");
    assert!(stderr.contains("Re-using existing connection"), "curl opened a second connection:\n{stderr}");
}

#[test]
fn http_pipelined_requests_get_their_responses_in_order() {
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let mut c = HttpConn::open(d.http_port);
    // One write: a snapshot, the page, a HEAD, then a 404 that closes.
    c.send(concat!(
        "GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    assert_snapshot(c.response(false), "pipelined snapshot", &d);
    let (head, body) = c.response(false).expect("the page");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("text/html"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("<img src=\"/live.mjpeg\""));
    let (head, _) = c.response(true).expect("the HEAD response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Type: image/jpeg\r\n"), "{head}");
    let (head, body) = c.response(false).expect("the 404");
    assert!(head.starts_with("HTTP/1.1 404 ") && head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(body, b"Not Found\n");
    assert!(c.closed_by_server(), "still open after Connection: close");
}

#[test]
fn http_connection_close_http_1_0_and_bodies_end_the_connection() {
    let d = mjpeg_daemon(&[]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    for (request, status) in [
        ("GET /live.jpg HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n", "200"),
        ("GET /live.jpg HTTP/1.0\r\n\r\n", "200"),
        ("GET / HTTP/1.0\r\nConnection: Upgrade\r\n\r\n", "200"),
        ("GET /live.jpg HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ", "400"),
        ("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", "405"),
        ("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "400"),
    ] {
        let mut c = HttpConn::open(d.http_port);
        c.send(request);
        let (head, _) = c.response(false).unwrap_or_else(|| panic!("{request:?}: no response"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{request:?} -> {head}");
        assert!(head.contains("Connection: close\r\n"), "{request:?} -> {head}");
        assert!(c.closed_by_server(), "{request:?}: still open after the response");
    }
    // HTTP/1.0 asking for keep-alive gets it.
    let mut c = HttpConn::open(d.http_port);
    for _ in 0..2 {
        c.send("GET /live.jpg HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = c.response(false);
        if let Some((head, _)) = &response {
            assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
        }
        assert_snapshot(response, "HTTP/1.0 keep-alive", &d);
    }
}

#[test]
fn http_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let d = mjpeg_daemon(&["--idle-timeout", "1"]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let mut c = HttpConn::open(d.http_port);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = c.response(false).expect("the page");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Connection: keep-alive\r\n"), "{head}");
    // The read timeout (10 s) is far beyond idle-timeout (1 s, checked once a second).
    assert!(c.closed_by_server(), "an idle keep-alive connection was not closed:\n{}", d.log());
    d.wait_for_log("between requests; closing", Duration::from_secs(5));
}

#[test]
fn http_full_slots_evict_the_oldest_idle_keep_alive_connection() {
    let d = mjpeg_daemon(&["--max-http-clients", "2"]);
    d.wait_for_log("stream: JPEG 640x360", Duration::from_secs(20));
    let page = |c: &mut HttpConn| {
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        c.response(false).map(|(head, _)| head)
    };
    let mut oldest = HttpConn::open(d.http_port);
    let head = page(&mut oldest).expect("first connection served");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let mut newer = HttpConn::open(d.http_port);
    let head = page(&mut newer).expect("second connection served");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // Both slots hold idle keep-alive connections: a third is served, the oldest gives way.
    let mut third = HttpConn::open(d.http_port);
    third.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_snapshot(third.response(false), "third connection with every slot idle", &d);
    assert!(oldest.closed_by_server(), "the oldest idle connection was not closed");
    let head = page(&mut newer).expect("the newer idle connection stays usable");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(d.log().contains("idle connection closed to make room"), "{}", d.log());
}

#[test]
fn http_serves_jpeg_from_an_on_demand_encoder_while_rtsp_streams_h264() {
    // 320x180: not a size RTP/JPEG carries, but HTTP's JPEGs are the whole frame.
    let d = Daemon::start(&["--width", "320", "--height", "180"]);
    let mut rtsp = RtspClient::connect(&d.url());
    rtsp.play_tcp();
    assert!(rtsp.next_frame().is_some(), "H.264 over RTSP");
    assert!(!d.log().contains("JPEG encoder started"), "no JPEG encoder runs before an HTTP client asks");
    let mut c = HttpConn::open(d.http_port);
    c.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_snapshot_of(c.response(false), (320, 180), "snapshot while streaming H.264", &d);
    assert!(d.log().contains("http: JPEG encoder started for HTTP clients"), "{}", d.log());
    // The multipart stream too, with RTSP going on.
    let out = run_with_timeout(
        Command::new("curl").args(["-s", "--max-time", "2", &format!("http://127.0.0.1:{}/live.mjpeg", d.http_port)]),
        Duration::from_secs(20),
    );
    let got = parts(&out.stdout);
    assert!(got.len() >= 5, "{} multipart parts\n{}", got.len(), d.log());
    for jpeg in &got {
        assert_eq!(decode(jpeg), Ok((320, 180)));
    }
    let mut frames = 0;
    while frames < 30 {
        assert!(rtsp.next_frame().is_some(), "RTSP stopped while HTTP took JPEGs:\n{}", d.log());
        frames += 1;
    }
    // With nobody asking any more, the encoder stops after the linger, and starts again on demand.
    drop(c);
    d.wait_for_log("http: JPEG encoder stopped: no HTTP client wants frames", Duration::from_secs(20));
    let (head, body) = http_get(d.http_port, "GET /live.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}\n{}", d.log());
    assert_eq!(decode(&body), Ok((320, 180)));
    assert_eq!(d.log().matches("http: JPEG encoder started").count(), 2, "{}", d.log());
}

#[test]
fn http_on_demand_encoder_start_stop_cycles_leave_no_thread_or_fd_behind() {
    let d = Daemon::start(&["--width", "320", "--height", "240", "--fps", "10"]);
    let stopped = || d.log().matches("http: JPEG encoder stopped").count();
    d.wait_for_log("/live: source: ", Duration::from_secs(20));
    // Daemon::start's readiness probe is an RTSP connection: count fds after it is gone.
    d.wait_for_log("disconnected (connection 1)", Duration::from_secs(20));
    let before = (d.threads(), d.fds());
    for cycle in 1..=3 {
        let (head, body) = http_get(d.http_port, "GET /live.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "cycle {cycle}: {head}\n{}", d.log());
        assert_eq!(decode(&body), Ok((320, 240)));
        let t = Instant::now();
        while stopped() < cycle {
            assert!(t.elapsed() < Duration::from_secs(30), "cycle {cycle}: the encoder did not stop:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        // The connection is closed by now (the linger outlasts it); only the daemon's own are left.
        // A joined thread may linger in /proc for a moment: allow it a second to go.
        let t = Instant::now();
        while (d.threads(), d.fds()) != before && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!((d.threads(), d.fds()), before, "cycle {cycle}: (threads, fds) not back to before\n{}", d.log());
    }
    assert_eq!(d.log().matches("http: JPEG encoder started").count(), 3, "{}", d.log());
}

#[test]
fn http_jpeg_routes_name_the_reason_when_the_source_has_no_raw_frames() {
    let dir = std::env::temp_dir().join(format!("uavstream-http-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip.h264");
    common::make_clip(&clip, "320x240", 1, 15);
    let d = Daemon::start(&["--source", &format!("file:{}", clip.display())]);
    let mut c = HttpConn::open(d.http_port);
    for path in ["/live.jpg", "/live.mjpeg"] {
        c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let (head, body) = c.response(false).unwrap_or_else(|| panic!("{path}: no response"));
        assert!(head.starts_with("HTTP/1.1 503 ") && head.contains("Content-Type: text/plain"), "{path}: {head}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("holds H.264") && body.contains("no raw frames"), "{path}: {body}");
    }
    // The 503 keeps the connection: the page still comes on it.
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = c.response(false).expect("the page after two 503s");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http_snapshot_waits_for_a_fresh_frame_instead_of_503() {
    // At start-up the first frame may not exist yet: the snapshot waits for it.
    // A light stream (this daemon shares 2 cores with every other test's): the waits below
    // must fit the daemon's 3 s snapshot limit.
    let args = ["--codec", "mjpeg", "--width", "320", "--height", "240", "--fps", "10", "--stall-timeout", "60"];
    let d = Daemon::start_with_env(&args, &[("UAVSTREAM_FAULT_INJECTION", "1")]);
    let mut c = HttpConn::open(d.http_port);
    c.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_snapshot_of(c.response(false), (320, 240), "snapshot at start-up", &d);
    // Deterministically without a fresh frame: discard the pipeline's output (SIGUSR1; with the
    // long stall-timeout it is not rebuilt by itself) until the latest frame is older than 1 s.
    d.signal(10);
    d.wait_for_log("fault injection: the pipeline's output is discarded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    // No frame comes: 503 naming why, after the 3 s wait, and the connection stays.
    c.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = c.response(false).unwrap_or_else(|| panic!("no response after the wait:\n{}", d.log()));
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}\nserver:\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&body), "no JPEG frame arrived within 3 s\n");
    // A frame comes while it waits (SIGHUP rebuilds the pipeline): 200 with that frame.
    let waits = || d.log().matches("/live.jpg waits for a fresh frame").count();
    let waited_before = waits();
    c.send("GET /live.jpg HTTP/1.1\r\nHost: x\r\n\r\n");
    let t = Instant::now();
    while waits() == waited_before {
        assert!(t.elapsed() < Duration::from_secs(10), "the second snapshot did not wait:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(1);
    assert_snapshot_of(c.response(false), (320, 240), "snapshot that waited for the rebuilt pipeline", &d);
    assert!(d.log().contains("snapshot -> 200 KeepAlive (after waiting)"), "{}", d.log());
}
