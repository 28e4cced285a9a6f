//! The benchmark's own load client: RTSP handshake (DESCRIBE, SETUP, PLAY) over TCP, then RTP over
//! UDP or TCP-interleaved, counting packets and sequence gaps inside a measurement window and the
//! time from sending PLAY to the first IDR packet. One thread per client; std only.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What one client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    pub packets: u64,
    pub lost: u64,
    pub first_idr: Option<Duration>,
    /// A non-IDR slice arrived before the first IDR (a client that cannot decode yet).
    pub p_before_idr: bool,
    pub error: Option<String>,
}

/// When counting starts and ends (shared by all clients of a run).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(String, Vec<u8>), String> {
    let mut tmp = [0u8; 16384];
    loop {
        // Interleaved frames may arrive before the PLAY response: skip them.
        while buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() < 4 + len {
                break;
            }
            buf.drain(..4 + len);
        }
        if buf.first() != Some(&b'$') {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let clen = header(&head, "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0usize);
                if buf.len() >= end + 4 + clen {
                    let body = buf[end + 4..end + 4 + clen].to_vec();
                    buf.drain(..end + 4 + clen);
                    return Ok((head, body));
                }
            }
        }
        let n = s.read(&mut tmp).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The media's control URL from the SDP (absolute, or relative to Content-Base / the URL).
fn control_url(url: &str, head: &str, sdp: &str) -> String {
    let base = header(head, "Content-Base").unwrap_or(url).trim_end_matches('/').to_owned();
    let media = sdp.split("\nm=").nth(1).unwrap_or("");
    match media.lines().find_map(|l| l.trim().strip_prefix("a=control:")) {
        Some(c) if c.starts_with("rtsp://") => c.to_owned(),
        Some("*") | None => base,
        Some(c) => format!("{base}/{c}"),
    }
}

fn nal_type(rtp: &[u8]) -> Option<u8> {
    let cc = usize::from(rtp.first()? & 0x0f);
    let p = rtp.get(12 + 4 * cc..)?;
    let t = p.first()? & 0x1f;
    match t {
        28 => Some(p.get(1)? & 0x1f),
        24 => Some(p.get(3)? & 0x1f),
        t => Some(t),
    }
}

struct Tracker {
    stats: ClientStats,
    play_sent: Instant,
    first_seq: Option<u16>,
    last_seq: u16,
    in_window: u64,
}

impl Tracker {
    fn packet(&mut self, rtp: &[u8], now: Instant, w: &Window) {
        if rtp.len() < 12 {
            return;
        }
        if self.stats.first_idr.is_none() {
            match nal_type(rtp) {
                Some(5) => self.stats.first_idr = Some(now.duration_since(self.play_sent)),
                Some(1) => self.stats.p_before_idr = true,
                _ => {}
            }
        }
        if now < w.start || now > w.end {
            return;
        }
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        match self.first_seq {
            None => self.first_seq = Some(seq),
            Some(_) => {
                let gap = seq.wrapping_sub(self.last_seq);
                if gap > 1 && gap < 0x8000 {
                    self.stats.lost += u64::from(gap - 1);
                }
            }
        }
        self.last_seq = seq;
        self.in_window += 1;
        self.stats.packets += 1;
    }
}

/// Runs one client until `w.end`.
pub fn client(url: &str, transport: Transport, w: Window) -> ClientStats {
    match client_inner(url, transport, w) {
        Ok(s) => s,
        Err(e) => ClientStats { error: Some(e), ..Default::default() },
    }
}

fn client_inner(url: &str, transport: Transport, w: Window) -> Result<ClientStats, String> {
    let hostport = url.trim_start_matches("rtsp://").split('/').next().unwrap_or("");
    let mut s = TcpStream::connect(hostport).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut cseq = 0;
    let mut send = |s: &mut TcpStream, req: String| -> Result<(), String> {
        cseq += 1;
        let req = req.replacen("\r\n", &format!("\r\nCSeq: {cseq}\r\n"), 1);
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())
    };
    send(&mut s, format!("DESCRIBE {url} RTSP/1.0\r\nAccept: application/sdp\r\n\r\n"))?;
    let (head, body) = read_response(&mut s, &mut buf)?;
    if !head.starts_with("RTSP/1.0 200") {
        return Err(format!("DESCRIBE: {}", head.lines().next().unwrap_or("")));
    }
    let control = control_url(url, &head, &String::from_utf8_lossy(&body));
    let udp = match transport {
        Transport::Udp => Some(udp_pair()?),
        Transport::Tcp => None,
    };
    let t = match &udp {
        Some((_, _, p)) => format!("RTP/AVP;unicast;client_port={p}-{}", p + 1),
        None => "RTP/AVP/TCP;unicast;interleaved=0-1".into(),
    };
    send(&mut s, format!("SETUP {control} RTSP/1.0\r\nTransport: {t}\r\n\r\n"))?;
    let (head, _) = read_response(&mut s, &mut buf)?;
    if !head.starts_with("RTSP/1.0 200") {
        return Err(format!("SETUP: {}", head.lines().next().unwrap_or("")));
    }
    let session = header(&head, "Session").unwrap_or("").split(';').next().unwrap_or("").to_owned();
    let play_sent = Instant::now();
    // No Range: a live viewer joins the stream as it is (a seekable shared media would restart
    // for everyone on `npt=0`).
    send(&mut s, format!("PLAY {url} RTSP/1.0\r\nSession: {session}\r\n\r\n"))?;
    let (head, _) = read_response(&mut s, &mut buf)?;
    if !head.starts_with("RTSP/1.0 200") {
        return Err(format!("PLAY: {}", head.lines().next().unwrap_or("")));
    }
    let mut tr = Tracker { stats: ClientStats::default(), play_sent, first_seq: None, last_seq: 0, in_window: 0 };
    let mut pkt = vec![0u8; 65536];
    match udp {
        Some((rtp, _rtcp, _)) => {
            rtp.set_read_timeout(Some(Duration::from_millis(200))).ok();
            // Like every real client: keep the session alive (the server expires silent ones).
            let mut last_keepalive = Instant::now();
            while Instant::now() < w.end {
                if let Ok((n, _)) = rtp.recv_from(&mut pkt) {
                    tr.packet(&pkt[..n], Instant::now(), &w);
                }
                if last_keepalive.elapsed() > Duration::from_secs(20) {
                    send(&mut s, format!("GET_PARAMETER {url} RTSP/1.0\r\nSession: {session}\r\n\r\n"))?;
                    read_response(&mut s, &mut buf)?;
                    last_keepalive = Instant::now();
                }
            }
        }
        None => {
            s.set_read_timeout(Some(Duration::from_millis(200))).ok();
            let mut tmp = vec![0u8; 262_144];
            let mut last_keepalive = Instant::now();
            while Instant::now() < w.end {
                if last_keepalive.elapsed() > Duration::from_secs(20) {
                    // The response comes back among the interleaved frames and is skipped below.
                    send(&mut s, format!("GET_PARAMETER {url} RTSP/1.0\r\nSession: {session}\r\n\r\n"))?;
                    last_keepalive = Instant::now();
                }
                while buf.first() == Some(&b'$') && buf.len() >= 4 {
                    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    if buf.len() < 4 + len {
                        break;
                    }
                    if buf[1] == 0 {
                        tr.packet(&buf[4..4 + len], Instant::now(), &w);
                    }
                    buf.drain(..4 + len);
                }
                if buf.first().is_some_and(|&b| b != b'$') {
                    // An RTSP message (a server request or response): drop its head.
                    match buf.windows(4).position(|x| x == b"\r\n\r\n") {
                        Some(end) => {
                            buf.drain(..end + 4);
                            continue;
                        }
                        None if buf.len() > 65536 => return Err("garbage on the interleaved connection".into()),
                        None => {}
                    }
                }
                match s.read(&mut tmp) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    Err(_) => {}
                }
            }
        }
    }
    let _ = send(&mut s, format!("TEARDOWN {url} RTSP/1.0\r\nSession: {session}\r\n\r\n"));
    Ok(tr.stats)
}

fn udp_pair() -> Result<(UdpSocket, UdpSocket, u16), String> {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = rtp.local_addr().map_err(|e| e.to_string())?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            // Large receive buffers (root may force them): loss must be the server's, not ours.
            let _ = nix::sys::socket::setsockopt(&rtp, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20));
            return Ok((rtp, rtcp, port));
        }
    }
    Err("no UDP port pair".into())
}

/// Runs `n` clients concurrently; all count packets inside `window`.
pub fn run(url: &str, n: usize, transport: Transport, window: Window) -> Vec<ClientStats> {
    let url: Arc<str> = url.into();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let url = Arc::clone(&url);
            std::thread::spawn(move || client(&url, transport, window))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
}
