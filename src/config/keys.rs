//! Every configuration key, declared once, and how a spelling names one (`stream2.path`,
//! `stream2-path`, `STREAM2_PATH`, plain `path` for the first stream).

use crate::cmdline;
use crate::limits;

/// Which configuration section a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Camera,
    Stream,
}

/// One configuration key: declared once, here.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub scope: Scope,
    /// Whether the plain name sets it (for the first camera or stream). The stream's own
    /// `width`/`height`/`fps`/`dscp` are reached only as `streamN.KEY`: plain `width` is the
    /// first camera's and plain `dscp` the global one.
    pub plain: bool,
    pub default: &'static str,
    pub help: &'static str,
}

const fn key(name: &'static str, scope: Scope, default: &'static str, help: &'static str) -> Key {
    Key { name, scope, plain: true, default, help }
}

const fn stream_only(name: &'static str, help: &'static str) -> Key {
    Key { name, scope: Scope::Stream, plain: false, default: "", help }
}

use Scope::{Camera as C, Global as G, Stream as S};

/// Every key. The order is the `--print-config` order within each section.
pub const KEYS: &[Key] = &[
    key("source", C, "testpattern", "testpattern | file:PATH (H.264 Annex B, replayed at --fps, looping) | v4l2 | libcamera"),
    key("device", C, "auto", "v4l2: a capture device such as /dev/video0; libcamera: a camera index (0, 1, ...), id or model (imx477); auto: the first camera"),
    key("pixel-format", C, "auto", "V4L2 capture format: auto | NV12 | YU12 | YUYV | MJPG | H264"),
    key("width", C, "1280", "frame width in pixels (even)"),
    key("height", C, "720", "frame height in pixels (even)"),
    key("fps", C, "30", "frames per second"),
    key("raw-socket", C, "", "unix socket (SOCK_SEQPACKET) that hands local processes the camera's newest raw frame as a sealed memfd, e.g. /run/uavstream/raw.sock; empty = off"),
    key("raw-socket-mode", C, "0660", "permission bits of the raw-frame socket (octal)"),
    key("raw-clients", C, "4", "raw-frame consumer slots, fixed at start; one more is accepted and closed at once"),
    key("camera", S, "1", "the camera that feeds the stream (1, 2, ...)"),
    key("path", S, "/live", "stream path: rtsp://HOST:PORT/PATH (streamN: /streamN)"),
    key("codec", S, "h264", "h264 | mjpeg: the stream's payload format (RTP/JPEG is payload type 26)"),
    key("encoder", S, "auto", "auto | software | passthrough | v4l2"),
    stream_only("width", "the stream's width when smaller than its camera's (scaled); empty = the camera's"),
    stream_only("height", "the stream's height when smaller than its camera's (scaled); empty = the camera's"),
    stream_only("fps", "the stream's frame rate when lower than its camera's (frames dropped); empty = the camera's"),
    key("bitrate", S, "2000000", "encoder bitrate in bit/s (suffixes k and M accepted)"),
    key("idr-interval", S, "0", "frames between IDRs; 0 = one per second"),
    key("abr", S, "off", "on | off: adaptive bitrate, the encoder's bitrate follows the receivers' RTCP loss reports"),
    key("abr-min", S, "", "lowest bitrate ABR may set (suffixes k and M); empty = a tenth of bitrate; never below 150k"),
    key("abr-max", S, "", "highest bitrate ABR may set; empty = bitrate"),
    key("jpeg-quality", S, "80", "JPEG quality 1-100 when frames are JPEG-encoded here"),
    key("rtp-dest", S, "", "HOST:PORT: also push the RTP stream there over UDP, without RTSP"),
    key("sdp-out", S, "", "file to write the SDP a push-mode receiver needs"),
    stream_only("dscp", "DSCP of the stream's UDP packets (sessions, push, multicast); empty = the global dscp"),
    key("multicast-group", S, "", "IPv4/IPv6 multicast group served to RTSP clients asking for RTP/AVP;multicast, e.g. 239.255.42.42; empty = multicast off"),
    key("multicast-port", S, "5004", "even UDP port of the multicast RTP stream; RTCP is port + 1"),
    key("multicast-ttl", S, "1", "multicast TTL / hop limit, 1-255; 1 = the local network only"),
    key("multicast-interface", S, "", "network interface the multicast stream leaves by (e.g. wlan0); empty = the routing table decides"),
    key("publish", S, "", "rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH: also publish the stream there (RTSP ANNOUNCE/RECORD over TCP, e.g. to MediaMTX); empty = off"),
    key("record-dir", S, "", "directory the stream is recorded to as fragmented MP4 segments (H.264 only; one directory per stream); empty = off"),
    key("record-segment", S, "60", "seconds per recorded file; each starts at an IDR"),
    key("record-fragment", S, "1", "seconds per fragment at most (a power cut loses at most the one being written), e.g. 0.5"),
    key("record-fsync", S, "fragment", "fragment | segment | off: when recorded data is forced to the disk"),
    key("record-max-size", S, "", "delete the oldest recordings beyond this total size, e.g. 8G; empty = no limit"),
    key("record-max-age", S, "", "delete recordings older than this, e.g. 7d, 12h, 3600 (seconds); empty = no limit"),
    key("record-min-free", S, "256M", "keep this much free space on the disk by deleting the oldest recordings; 0 = no floor"),
    key("ae", C, "", "libcamera: on | off: automatic exposure and gain; empty = the camera's default (on)"),
    key("exposure-time", C, "", "libcamera: fixed exposure time in microseconds (AE off for exposure); empty = automatic"),
    key("analogue-gain", C, "", "libcamera: fixed analogue gain, 1.0-64.0 (AE off for gain); empty = automatic"),
    key("ae-metering", C, "", "libcamera: centre | spot | matrix; empty = the camera's default"),
    key("ev", C, "", "libcamera: exposure compensation in stops, -8.0 to 8.0; empty = 0"),
    key("awb", C, "", "libcamera: auto | incandescent | tungsten | fluorescent | indoor | daylight | cloudy; empty = the camera's default"),
    key("brightness", C, "", "libcamera: -1.0 to 1.0; empty = the camera's default (0)"),
    key("contrast", C, "", "libcamera: 0.0 to 32.0; empty = the camera's default (1.0)"),
    key("saturation", C, "", "libcamera: 0.0 to 32.0 (0 = greyscale); empty = the camera's default (1.0)"),
    key("sharpness", C, "", "libcamera: 0.0 to 16.0; empty = the camera's default (1.0)"),
    key("denoise", C, "", "libcamera: off | fast | high-quality | minimal | zsl; empty = fast where the camera has it (low latency)"),
    key("af-mode", C, "", "libcamera, cameras with autofocus (IMX708): manual | auto | continuous; empty = the camera's default"),
    key("lens-position", C, "", "libcamera: focus position in dioptres (0 = infinity), sets af-mode manual; empty = not set"),
    key("hflip", C, "0", "libcamera: 1 = mirror the picture (sensor flip, no CPU cost)"),
    key("vflip", C, "0", "libcamera: 1 = flip the picture upside down"),
    key("rotation", C, "0", "libcamera: 0 | 180 (a 180 degree rotation is both flips)"),
    key("tuning-file", C, "", "libcamera on Raspberry Pi: camera tuning JSON (LIBCAMERA_RPI_TUNING_FILE), e.g. /usr/share/libcamera/ipa/rpi/pisp/imx477_noir.json; empty = the sensor's default"),
    key("snapshot-dir", C, "", "directory a JPEG of the camera is written to every snapshot-interval, latest_image.jpg linking the newest; empty = off"),
    key("snapshot-interval", C, "1", "seconds between snapshots, e.g. 1, 0.5 or 60"),
    key("snapshot-quality", C, "85", "JPEG quality 1-100 of snapshots encoded from raw frames (an MJPEG camera's frames are kept as they are)"),
    key("snapshot-max-size", C, "", "delete the oldest snapshots beyond this total size, e.g. 2G; empty = no limit"),
    key("snapshot-max-age", C, "", "delete snapshots older than this, e.g. 1d, 12h, 3600 (seconds); empty = no limit"),
    key("snapshot-min-free", C, "64M", "keep this much free space by deleting the oldest snapshots, else pause them; 0 = no floor"),
    key("listen", G, "0.0.0.0", "address the RTSP server listens on"),
    key("port", G, "8554", "RTSP TCP port"),
    key("max-clients", G, "16", "RTSP session slots, allocated at start; more get 503"),
    key("fanout-threads", G, "1", "threads that send each access unit to the UDP clients: 1 = the loop alone; N = the loop and N-1 sender threads, which only send (for hundreds of UDP clients on a multi-core board)"),
    key("rtp-ports", G, "50000-50999", "UDP port range for per-session RTP/RTCP pairs"),
    key("mtu", G, "1500", "link MTU; RTP packets are sized to fit IPv4 and IPv6"),
    key("session-timeout", G, "60", "seconds of silence before an RTSP session expires"),
    key("stall-timeout", G, "2", "seconds without an access unit before source and encoder are restarted"),
    key("max-pending-connections", G, "16", "connections without a session; beyond it the oldest is closed"),
    key("idle-timeout", G, "30", "seconds a sessionless RTSP or idle keep-alive HTTP connection may stay silent"),
    key("request-timeout", G, "10", "seconds a request may take to arrive completely (slowloris guard)"),
    key("max-request-rate", G, "20", "RTSP requests per second per connection (bursts of 40); beyond: 503, close"),
    key("client-stall-timeout", G, "5", "seconds a TCP client may accept no bytes before it is disconnected"),
    key("stats-interval", G, "0", "seconds between stats log lines (sessions, latency p50/p99/max, RSS); 0 = off"),
    key("auth", G, "", "USER:PASSWORD[,USER:PASSWORD...] for RTSP and HTTP Basic/Digest auth (never on the kernel command line)"),
    key("auth-file", G, "", "file of [/PATH ]USER:PASSWORD lines (# comments); /PATH limits a user to that stream"),
    key("log-level", G, "info", "error | warn | info | debug | trace"),
    key("http-port", G, "8080", "HTTP port for /PATH.mjpeg, /PATH.jpg and /; 0 = off"),
    key("webrtc-port", G, "8189", "UDP port of WebRTC media (WHEP at http://HOST:HTTP-PORT/PATH/whep) on each webrtc-interfaces address; 0 = WebRTC off"),
    key("webrtc-interfaces", G, "", "interface names or IP addresses offered to browsers as ICE host candidates, comma-separated; empty = every IPv4 address of every up interface"),
    key("max-webrtc-sessions", G, "4", "WebRTC (WHEP) session slots; more get 503"),
    key("max-http-clients", G, "8", "HTTP connection slots, allocated at start; an idle keep-alive one gives way, else 503"),
    key("nack", G, "off", "off | on | all: offer RTP/AVPF with NACK retransmission (RTX) and PLI/FIR to none (GStreamer still gets PLI/FIR), to clients known to use it (GStreamer, QGroundControl: give them a jitter buffer of 100 ms or more), or to every client (VLC cannot play then)"),
    key("nack-window", G, "auto", "ms after sending a packet it may still be retransmitted (the receiver's jitter-buffer latency); auto = one frame interval + the session's RTT + 40 ms"),
    key("dscp", G, "0", "DSCP of all media packets: RTP/RTCP over UDP, RTSP and HTTP connections, multicast, push mode (IP_TOS = dscp << 2), e.g. 46 (EF); 0 = unmarked; streamN.dscp overrides it for a stream's UDP"),
];

/// A key of one camera or stream (`instance` 1, 2, …), or a global key (`instance` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef {
    /// Index into [`KEYS`].
    pub key: usize,
    pub instance: u8,
}

impl KeyRef {
    pub fn def(&self) -> &'static Key {
        &KEYS[self.key]
    }

    /// The canonical name: `width`, `stream2.path`, `stream1.width`.
    pub fn name(&self) -> String {
        let k = self.def();
        match (k.scope, self.instance) {
            (Scope::Global, _) => k.name.to_owned(),
            (_, 1) if k.plain => k.name.to_owned(),
            (Scope::Camera, n) => format!("camera{n}.{}", k.name),
            (Scope::Stream, n) => format!("stream{n}.{}", k.name),
        }
    }

    /// Resolves a key name in any spelling (`stream2.path`, `stream2-path`, `stream2_path`,
    /// `max_clients`): `-`, `_` and (after the index) `.` are the same.
    pub fn lookup(name: &str) -> Option<KeyRef> {
        let find = |rest: &str, scope: Option<Scope>| {
            KEYS.iter().position(|k| {
                cmdline::param_eq(k.name.as_bytes(), rest.as_bytes())
                    && match scope {
                        Some(s) => k.scope == s,
                        None => k.plain,
                    }
            })
        };
        for (prefix, scope) in [("camera", Scope::Camera), ("stream", Scope::Stream)] {
            let Some(tail) = name.strip_prefix(prefix) else { continue };
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                continue;
            }
            let rest = &tail[digits..];
            let Some(rest) = rest.strip_prefix(['.', '-', '_']) else { continue };
            let n: u8 = tail[..digits].parse().ok().filter(|n| *n >= 1)?;
            let max = if scope == Scope::Camera { limits::MAX_CAMERAS } else { limits::MAX_STREAMS };
            if usize::from(n) > max {
                return None;
            }
            return find(rest, Some(scope)).map(|key| KeyRef { key, instance: n });
        }
        let key = find(name, None)?;
        let instance = if KEYS[key].scope == Scope::Global { 0 } else { 1 };
        Some(KeyRef { key, instance })
    }

    pub(super) fn of(scope: Scope, name: &str, instance: u8) -> KeyRef {
        let key = KEYS.iter().position(|k| k.scope == scope && k.name == name).expect("declared key");
        KeyRef { key, instance: if scope == Scope::Global { 0 } else { instance } }
    }
}
