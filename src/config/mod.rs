//! Configuration: one key, three spellings, four layers; cameras and streams.
//!
//! `--width 1280` = `UAVSTREAM_WIDTH=1280` = `uavstream.width=1280` on the kernel command line.
//! Precedence: defaults < kernel command line < environment < flags. Every resolved value
//! remembers its origin so `--print-config` can show it and an error can name it. A bad value is
//! a [`ConfigError`] naming key, value and origin (the binary exits with status 2). Unknown
//! `uavstream.*` command-line keys and unknown `UAVSTREAM_*` variables are warnings, not errors:
//! the Pi firmware adds keys of its own and a typo must not brick a drone's video on boot.
//!
//! # Cameras and streams
//! Every key is declared once in [`KEYS`] with its [`Scope`]: global (ports, limits, auth), per
//! camera (`source`, `device`, `pixel-format`, capture `width`/`height`/`fps`) or per stream
//! (`path`, `codec`, `encoder`, `bitrate`, push and multicast…). A plain key means the first
//! camera or the first stream, so every single-stream setup works unchanged. Further cameras and
//! streams are numbered from 2, without gaps: `camera2.device`, `stream2.path`, spelled
//! `--stream2-path` / `--stream2.path`, `UAVSTREAM_STREAM2_PATH`, `uavstream.stream2.path`.
//! `streamN.camera` says which camera feeds it (default 1). A stream's `width`, `height` and
//! `fps` default to its camera's (`stream1.width` makes the first stream smaller than its
//! camera) and its `dscp` to the global one. Conflicts (two streams on one path, a stream larger
//! or faster than its camera, a camera that does not exist or feeds no stream) are errors.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::cmdline;
use crate::limits;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Default,
    KernelCmdline,
    Environment,
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Default => "default",
            Origin::KernelCmdline => "kernel command line",
            Origin::Environment => "environment",
            Origin::Flag => "command-line flag",
        })
    }
}

/// A bad value: names the key, the value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key's canonical name (`width`, `stream2.path`).
    pub key: String,
    pub value: String,
    pub origin: Origin,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spelled = match self.origin {
            Origin::Default => format!("default {}", self.key),
            Origin::KernelCmdline => format!("uavstream.{}", self.key),
            Origin::Environment => env_name(&self.key),
            Origin::Flag => flag_name(&self.key),
        };
        // Credentials never reach a log, not even a wrong one.
        let value = if self.key == "auth" { "(not shown)" } else { self.value.as_str() };
        write!(f, "invalid {} value {:?} ({} from the {}): {}", self.key, value, spelled, self.origin, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    TestPattern,
    /// An H.264 Annex B file replayed in real time, looping.
    File(PathBuf),
    /// A V4L2 capture device (`--device`).
    V4l2,
}

/// Which encoder turns frames into H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderChoice {
    /// Passthrough when the source is already H.264, else the software encoder.
    Auto,
    Software,
    Passthrough,
    /// A V4L2 memory-to-memory (stateful) H.264 encoder.
    V4l2,
}

pub use crate::rtp::Codec;

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
    key("source", C, "testpattern", "testpattern | file:PATH (H.264 Annex B, replayed at --fps, looping) | v4l2"),
    key("device", C, "auto", "V4L2 capture device, or auto: the first capture-capable /dev/video*"),
    key("pixel-format", C, "auto", "V4L2 capture format: auto | NV12 | YU12 | YUYV | MJPG | H264"),
    key("width", C, "1280", "frame width in pixels (even)"),
    key("height", C, "720", "frame height in pixels (even)"),
    key("fps", C, "30", "frames per second"),
    key("camera", S, "1", "the camera that feeds the stream (1, 2, ...)"),
    key("path", S, "/live", "stream path: rtsp://HOST:PORT/PATH (streamN: /streamN)"),
    key("codec", S, "h264", "h264 | mjpeg: the stream's payload format (RTP/JPEG is payload type 26)"),
    key("encoder", S, "auto", "auto | software | passthrough | v4l2"),
    stream_only("width", "the stream's width when smaller than its camera's (scaled); empty = the camera's"),
    stream_only("height", "the stream's height when smaller than its camera's (scaled); empty = the camera's"),
    stream_only("fps", "the stream's frame rate when lower than its camera's (frames dropped); empty = the camera's"),
    key("bitrate", S, "2000000", "encoder bitrate in bit/s (suffixes k and M accepted)"),
    key("idr-interval", S, "0", "frames between IDRs; 0 = one per second"),
    key("jpeg-quality", S, "80", "JPEG quality 1-100 when frames are JPEG-encoded here"),
    key("rtp-dest", S, "", "HOST:PORT: also push the RTP stream there over UDP, without RTSP"),
    key("sdp-out", S, "", "file to write the SDP a push-mode receiver needs"),
    stream_only("dscp", "DSCP of the stream's UDP packets (sessions, push, multicast); empty = the global dscp"),
    key("multicast-group", S, "", "IPv4/IPv6 multicast group served to RTSP clients asking for RTP/AVP;multicast, e.g. 239.255.42.42; empty = multicast off"),
    key("multicast-port", S, "5004", "even UDP port of the multicast RTP stream; RTCP is port + 1"),
    key("multicast-ttl", S, "1", "multicast TTL / hop limit, 1-255; 1 = the local network only"),
    key("multicast-interface", S, "", "network interface the multicast stream leaves by (e.g. wlan0); empty = the routing table decides"),
    key("record-dir", S, "", "directory the stream is recorded to as fragmented MP4 segments (H.264 only; one directory per stream); empty = off"),
    key("record-segment", S, "60", "seconds per recorded file; each starts at an IDR"),
    key("record-fragment", S, "1", "seconds per fragment at most (a power cut loses at most the one being written), e.g. 0.5"),
    key("record-fsync", S, "fragment", "fragment | segment | off: when recorded data is forced to the disk"),
    key("record-max-size", S, "", "delete the oldest recordings beyond this total size, e.g. 8G; empty = no limit"),
    key("record-max-age", S, "", "delete recordings older than this, e.g. 7d, 12h, 3600 (seconds); empty = no limit"),
    key("record-min-free", S, "256M", "keep this much free space on the disk by deleting the oldest recordings; 0 = no floor"),
    key("listen", G, "0.0.0.0", "address the RTSP server listens on"),
    key("port", G, "8554", "RTSP TCP port"),
    key("max-clients", G, "16", "RTSP session slots, allocated at start; more get 503"),
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
    key("max-http-clients", G, "8", "HTTP connection slots, allocated at start; an idle keep-alive one gives way, else 503"),
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

    fn of(scope: Scope, name: &str, instance: u8) -> KeyRef {
        let key = KEYS.iter().position(|k| k.scope == scope && k.name == name).expect("declared key");
        KeyRef { key, instance: if scope == Scope::Global { 0 } else { instance } }
    }
}

/// One user allowed to watch; `path` limits the user to one stream path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user: String,
    pub password: String,
    pub path: Option<String>,
}

fn parse_user(entry: &str, path: Option<&str>) -> Result<AuthUser, String> {
    let (user, password) = entry.split_once(':').ok_or("expected USER:PASSWORD")?;
    if user.is_empty() || password.is_empty() || user.contains(char::is_whitespace) {
        return Err("USER and PASSWORD must not be empty, USER without spaces".into());
    }
    Ok(AuthUser { user: user.to_owned(), password: password.to_owned(), path: path.map(str::to_owned) })
}

/// Reads an auth file: `[/PATH ]USER:PASSWORD` per line, `#` comments, blank lines ignored.
pub fn read_auth_file(path: &std::path::Path) -> Result<Vec<AuthUser>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.permissions().mode() & 0o004 != 0 {
        log::warn!("auth-file {} is world-readable; chmod 640 it", path.display());
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (stream_path, entry) = match line.split_once(char::is_whitespace) {
            Some((p, e)) if p.starts_with('/') => (Some(p), e.trim()),
            _ => (None, line),
        };
        users.push(parse_user(entry, stream_path).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    if users.is_empty() {
        return Err("no USER:PASSWORD lines".into());
    }
    Ok(users)
}

/// The `UAVSTREAM_*` variable of a key (`stream2.path` → `UAVSTREAM_STREAM2_PATH`).
pub fn env_name(key: &str) -> String {
    format!("UAVSTREAM_{}", key.to_ascii_uppercase().replace(['-', '.'], "_"))
}

/// The flag of a key (`stream2.path` → `--stream2-path`).
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('.', "-"))
}

/// Raw layered values before parsing: what each layer set, with its origin. Keys not set have
/// their default.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    values: std::collections::BTreeMap<KeyRef, (String, Origin)>,
    pub warnings: Vec<String>,
}

impl RawConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (any spelling) if `origin` ranks at least as high as what is there; `false`
    /// for an unknown key.
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) -> bool {
        let Some(k) = KeyRef::lookup(key) else { return false };
        let slot = self.values.entry(k).or_insert_with(|| (String::new(), Origin::Default));
        if origin >= slot.1 {
            *slot = (value.to_owned(), origin);
        }
        true
    }

    /// The value of `key` (any spelling; it must exist) and its origin.
    pub fn get(&self, key: &str) -> (&str, Origin) {
        self.value(KeyRef::lookup(key).expect("known key"))
    }

    fn value(&self, k: KeyRef) -> (&str, Origin) {
        match self.values.get(&k) {
            Some((v, o)) => (v, *o),
            None if k.def().scope == Scope::Stream && k.instance > 1 && k.def().name == "path" => {
                // Without a path of its own, stream N serves /streamN.
                (STREAM_PATHS[usize::from(k.instance) - 1], Origin::Default)
            }
            None => (k.def().default, Origin::Default),
        }
    }

    /// Applies the `uavstream.*` keys of a kernel command line.
    pub fn apply_cmdline(&mut self, line: &str) {
        for arg in cmdline::args(line.as_bytes()) {
            let Some(key) = cmdline::uavstream_key(arg.param) else {
                continue;
            };
            let key = String::from_utf8_lossy(key).into_owned();
            let Some(value) = arg.value else {
                self.warnings.push(format!("kernel command line: uavstream.{key} has no value; ignored"));
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            if !self.set(&key, &value, Origin::KernelCmdline) {
                self.warnings.push(format!("kernel command line: unknown key uavstream.{key}; ignored"));
            }
        }
    }

    /// Applies `UAVSTREAM_*` variables from `vars`.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("UAVSTREAM_") else {
                continue;
            };
            if rest == "PROC_CMDLINE" || rest == "FAULT_INJECTION" {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace('_', "-");
            if !self.set(&key, &value, Origin::Environment) {
                self.warnings.push(format!("environment: unknown variable {name}; ignored"));
            }
        }
    }

    /// How many cameras and streams the keys describe: the highest index set, at least one.
    /// Numbers have no gaps: `stream3.*` without any `stream2.*` key is an error.
    fn counts(&self) -> Result<(usize, usize), ConfigError> {
        let mut seen = [[false; 1 + limits::MAX_STREAMS]; 2];
        for k in self.values.keys() {
            match k.def().scope {
                Scope::Camera => seen[0][usize::from(k.instance)] = true,
                Scope::Stream => seen[1][usize::from(k.instance)] = true,
                Scope::Global => {}
            }
        }
        let mut counts = [1, 1];
        for (kind, (seen, word)) in seen.iter().zip(["camera", "stream"]).enumerate() {
            let highest = (1..seen.len()).rev().find(|&n| seen[n]).unwrap_or(1);
            if let Some(gap) = (2..highest).find(|&n| !seen[n]) {
                let k = *self
                    .values
                    .keys()
                    .find(|k| {
                        usize::from(k.instance) == highest
                            && k.def().scope != Scope::Global
                            && (k.def().scope == Scope::Camera) == (kind == 0)
                    })
                    .expect("highest was seen");
                let (v, origin) = self.value(k);
                return Err(ConfigError {
                    key: k.name(),
                    value: v.to_owned(),
                    origin,
                    reason: format!("{word}s are numbered from 1 without gaps, and no {word}{gap}.* key is set"),
                });
            }
            counts[kind] = highest;
        }
        Ok((counts[0], counts[1]))
    }

    /// Parses every value and checks cameras and streams against each other.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let p = Parser { raw: self };
        let (n_cameras, n_streams) = self.counts()?;
        let g = |name: &str| KeyRef::of(Scope::Global, name, 0);
        let max_clients: usize = p.num(g("max-clients"), 1, limits::MAX_CLIENTS_LIMIT as u32)? as usize;
        let rtp_ports = p.field(g("rtp-ports"), |v| {
            let (a, b) = v.split_once('-').ok_or("expected FIRST-LAST, e.g. 50000-50999")?;
            let a: u16 = a.trim().parse().map_err(|_| "FIRST is not a port number")?;
            let b: u16 = b.trim().parse().map_err(|_| "LAST is not a port number")?;
            if a == 0 || a > b {
                return Err("FIRST must be 1..=LAST".into());
            }
            if usize::from(b - a) + 1 < 2 * max_clients {
                return Err(format!(
                    "needs at least {} ports (2 per client, --max-clients {max_clients})",
                    2 * max_clients
                ));
            }
            Ok((a, b))
        })?;
        let dscp = p.num(g("dscp"), 0, 63)? as u8;
        let mut cameras = Vec::with_capacity(n_cameras);
        for n in 1..=n_cameras as u8 {
            cameras.push(p.camera(n)?);
        }
        // `device=auto` picks the first capture device: with two V4L2 cameras both could pick the
        // same one, or one could take the other's node while its own is gone.
        if cameras.iter().filter(|c| c.source == SourceSpec::V4l2).count() > 1 {
            if let Some(c) = cameras.iter().position(|c| c.source == SourceSpec::V4l2 && c.device == "auto") {
                let k = KeyRef::of(Scope::Camera, "device", c as u8 + 1);
                let (v, origin) = self.value(k);
                return Err(ConfigError {
                    key: k.name(),
                    value: v.to_owned(),
                    origin,
                    reason: "with several V4L2 cameras each needs its device (e.g. /dev/video0, or a /dev/v4l/by-path/ link)".into(),
                });
            }
        }
        let mut streams: Vec<StreamConfig> = Vec::with_capacity(n_streams);
        for n in 1..=n_streams as u8 {
            let st = p.stream(n, &cameras, dscp)?;
            if let Some(other) = streams.iter().find(|o| o.path.trim_end_matches('/') == st.path.trim_end_matches('/'))
            {
                let k = KeyRef::of(Scope::Stream, "path", n);
                let (v, origin) = self.value(k);
                return Err(ConfigError {
                    key: k.name(),
                    value: v.to_owned(),
                    origin,
                    reason: format!("{} already serves this path", other.name),
                });
            }
            streams.push(st);
        }
        p.check_unique_destinations(&streams)?;
        for (c, cam) in cameras.iter().enumerate() {
            let Some(first) = streams.iter().position(|s| s.camera == c) else { continue };
            let st = &streams[first];
            if cam.source == SourceSpec::TestPattern
                || (st.width, st.height, st.fps) == (cam.width, cam.height, cam.fps)
            {
                continue;
            }
            let key = if st.fps != cam.fps {
                "fps"
            } else if st.width != cam.width {
                "width"
            } else {
                "height"
            };
            let k = KeyRef::of(Scope::Stream, key, first as u8 + 1);
            let (v, origin) = self.value(k);
            return Err(ConfigError {
                key: k.name(),
                value: v.to_owned(),
                origin,
                reason: format!(
                    "the first stream of {} is captured at the camera's size and rate; make the smaller or slower one a further stream (streamN.camera={})",
                    cam.name,
                    c + 1
                ),
            });
        }
        if let Some(idle) = (1..=n_cameras).find(|&c| !streams.iter().any(|s| s.camera == c - 1)) {
            let k = *self
                .values
                .keys()
                .find(|k| k.def().scope == Scope::Camera && usize::from(k.instance) == idle)
                .expect("camera was set");
            let (v, origin) = self.value(k);
            return Err(ConfigError {
                key: k.name(),
                value: v.to_owned(),
                origin,
                reason: format!("camera{idle} feeds no stream; add e.g. stream{}.camera={idle}", n_streams + 1),
            });
        }
        Ok(Config {
            listen: p.field(g("listen"), |v| v.parse::<IpAddr>().map_err(|_| "not an IP address".into()))?,
            port: p.num(g("port"), 1, 65535)? as u16,
            max_clients,
            rtp_ports,
            mtu: p.num(g("mtu"), limits::MIN_MTU as u32, limits::MAX_RTP_PACKET as u32)? as usize,
            session_timeout: p.num(g("session-timeout"), 5, 3600)?,
            stall_timeout: p.num(g("stall-timeout"), 1, 600)?,
            max_pending_connections: p.num(g("max-pending-connections"), 1, 4096)? as usize,
            idle_timeout: p.num(g("idle-timeout"), 1, 3600)?,
            request_timeout: p.num(g("request-timeout"), 1, 600)?,
            max_request_rate: p.num(g("max-request-rate"), 1, 10_000)?,
            client_stall_timeout: p.num(g("client-stall-timeout"), 1, 600)?,
            stats_interval: p.num(g("stats-interval"), 0, 86_400)?,
            auth_users: {
                let mut users = p.field(g("auth"), |v| {
                    if v.is_empty() {
                        return Ok(Vec::new());
                    }
                    if self.get("auth").1 == Origin::KernelCmdline {
                        return Err(
                            "refused: /proc/cmdline is readable by every user; use UAVSTREAM_AUTH or auth-file".into(),
                        );
                    }
                    v.split(',').map(|e| parse_user(e.trim(), None)).collect()
                })?;
                users.extend(p.field(g("auth-file"), |v| {
                    if v.is_empty() {
                        Ok(Vec::new())
                    } else {
                        read_auth_file(std::path::Path::new(v))
                    }
                })?);
                users
            },
            http_port: p.num(g("http-port"), 0, 65535)? as u16,
            max_http_clients: p.num(g("max-http-clients"), 1, 1024)? as usize,
            dscp,
            log_level: p.field(g("log-level"), |v| match v {
                "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(v.to_owned()),
                _ => Err("expected error, warn, info, debug or trace".into()),
            })?,
            cameras,
            streams,
        })
    }

    /// `key = value (origin)` lines for `--print-config`: the global keys, then each camera and
    /// each stream under a `# cameraN` / `# streamN` heading.
    pub fn describe(&self) -> String {
        let (n_cameras, n_streams) = self.counts().unwrap_or((1, 1));
        let mut s = String::new();
        let section = |s: &mut String, scope: Scope, instance: u8| {
            for (i, k) in KEYS.iter().enumerate() {
                if k.scope != scope {
                    continue;
                }
                let r = KeyRef { key: i, instance };
                let (v, o) = self.value(r);
                let v = match (k.name, v.is_empty(), k.plain) {
                    ("auth", false, _) => "(set, not shown)",
                    ("dscp", true, false) => "(the global dscp)",
                    (_, true, false) => "(the camera's)",
                    _ => v,
                };
                s.push_str(&format!("{:<16} = {v:<24} ({o})\n", r.name()));
            }
        };
        section(&mut s, Scope::Global, 0);
        for n in 1..=n_cameras as u8 {
            s.push_str(&format!("# camera{n}\n"));
            section(&mut s, Scope::Camera, n);
        }
        for n in 1..=n_streams as u8 {
            s.push_str(&format!("# stream{n}\n"));
            section(&mut s, Scope::Stream, n);
        }
        s
    }
}

/// Default paths of streams 2.. (stream 1's is `/live`).
const STREAM_PATHS: [&str; limits::MAX_STREAMS] =
    ["/live", "/stream2", "/stream3", "/stream4", "/stream5", "/stream6", "/stream7", "/stream8"];

struct Parser<'a> {
    raw: &'a RawConfig,
}

impl Parser<'_> {
    fn field<T>(&self, k: KeyRef, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let (v, origin) = self.raw.value(k);
        f(v.trim()).map_err(|reason| ConfigError { key: k.name(), value: v.to_owned(), origin, reason })
    }

    fn num(&self, k: KeyRef, min: u32, max: u32) -> Result<u32, ConfigError> {
        self.field(k, |v| {
            let n: u32 = v.parse().map_err(|_| "not a whole number".to_owned())?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        })
    }

    fn camera(&self, n: u8) -> Result<CameraConfig, ConfigError> {
        let k = |name| KeyRef::of(Scope::Camera, name, n);
        Ok(CameraConfig {
            name: format!("camera{n}"),
            source: self.field(k("source"), |v| match v {
                "testpattern" => Ok(SourceSpec::TestPattern),
                "v4l2" => Ok(SourceSpec::V4l2),
                _ => match v.strip_prefix("file:") {
                    Some(path) if !path.is_empty() => Ok(SourceSpec::File(PathBuf::from(path))),
                    _ => Err("expected testpattern, file:PATH or v4l2".into()),
                },
            })?,
            device: self.field(k("device"), |v| {
                if v == "auto" || v.starts_with('/') {
                    Ok(v.to_owned())
                } else {
                    Err("expected auto or a device path such as /dev/video0".into())
                }
            })?,
            pixel_format: self.field(k("pixel-format"), |v| match v {
                "auto" => Ok(None),
                _ if v.len() == 4 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    let b = v.as_bytes();
                    Ok(Some([b[0], b[1], b[2], b[3]]))
                }
                _ => Err("expected auto or a FourCC such as NV12, YU12, YUYV, MJPG, H264".into()),
            })?,
            width: self.field(k("width"), even_dimension)?,
            height: self.field(k("height"), even_dimension)?,
            fps: self.num(k("fps"), 1, limits::MAX_FPS)?,
        })
    }

    fn stream(&self, n: u8, cameras: &[CameraConfig], global_dscp: u8) -> Result<StreamConfig, ConfigError> {
        let k = |name| KeyRef::of(Scope::Stream, name, n);
        let camera = self.field(k("camera"), |v| {
            let c: usize = v.parse().map_err(|_| "not a camera number (1, 2, ...)".to_owned())?;
            if (1..=cameras.len()).contains(&c) {
                Ok(c - 1)
            } else {
                Err(format!("no camera{c}: {} camera(s) configured", cameras.len()))
            }
        })?;
        let cam = &cameras[camera];
        // Size and rate default to the camera's; never more than it gives.
        let at_most = |name, of_camera: u32, what: &'static str, parse: fn(&str) -> Result<u32, String>| {
            self.field(k(name), |v| {
                if v.is_empty() {
                    return Ok(of_camera);
                }
                let x = parse(v)?;
                if x > of_camera {
                    return Err(format!("larger than its camera's {what} ({} gives {of_camera})", cam.name));
                }
                Ok(x)
            })
        };
        let width = at_most("width", cam.width, "width", even_dimension)?;
        let height = at_most("height", cam.height, "height", even_dimension)?;
        let fps = at_most("fps", cam.fps, "frame rate", |v| match v.parse::<u32>() {
            Ok(f) if (1..=limits::MAX_FPS).contains(&f) => Ok(f),
            _ => Err(format!("must be a whole number between 1 and {}", limits::MAX_FPS)),
        })?;
        let dscp = self.field(k("dscp"), |v| {
            if v.is_empty() {
                return Ok(global_dscp);
            }
            match v.parse::<u8>() {
                Ok(d) if d <= 63 => Ok(d),
                _ => Err("must be between 0 and 63".into()),
            }
        })?;
        let record = self.record(n)?;
        let st = StreamConfig {
            name: format!("stream{n}"),
            camera,
            record,
            path: self.field(k("path"), |v| {
                if !v.starts_with('/')
                    || v.len() > 64
                    || v.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
                {
                    Err("must start with '/', be at most 64 characters, without spaces, '?' or '#'".into())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            codec: self.field(k("codec"), |v| match v {
                "h264" => Ok(Codec::H264),
                "mjpeg" | "jpeg" => Ok(Codec::Jpeg),
                _ => Err("expected h264 or mjpeg".into()),
            })?,
            encoder: self.field(k("encoder"), |v| match v {
                "auto" => Ok(EncoderChoice::Auto),
                "software" => Ok(EncoderChoice::Software),
                "passthrough" => Ok(EncoderChoice::Passthrough),
                "v4l2" => Ok(EncoderChoice::V4l2),
                _ => Err("expected auto, software, passthrough or v4l2".into()),
            })?,
            width,
            height,
            fps,
            bitrate: self.field(k("bitrate"), parse_bitrate)?,
            idr_interval: self.num(k("idr-interval"), 0, 100_000)?,
            jpeg_quality: self.num(k("jpeg-quality"), 1, 100)? as u8,
            rtp_dest: self.field(k("rtp-dest"), |v| {
                if v.is_empty() {
                    return Ok(None);
                }
                let addr = match v.parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => v
                        .to_socket_addrs()
                        .map_err(|e| format!("expected HOST:PORT ({e})"))?
                        .next()
                        .ok_or("HOST has no address")?,
                };
                if addr.port() == 0 {
                    return Err("PORT must not be 0".into());
                }
                Ok(Some(addr))
            })?,
            sdp_out: self.field(k("sdp-out"), |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))?,
            dscp,
            multicast: {
                let port = self.field(k("multicast-port"), |v| match v.parse::<u16>() {
                    Ok(n) if n >= 2 && n % 2 == 0 && n < u16::MAX => Ok(n),
                    _ => Err("must be an even port number between 2 and 65534 (RTCP is port + 1)".into()),
                })?;
                let ttl = self.num(k("multicast-ttl"), 1, 255)? as u8;
                let interface = self.field(k("multicast-interface"), |v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let index = nix::net::if_::if_nametoindex(v).map_err(|_| "no such network interface".to_owned())?;
                    Ok(Some((v.to_owned(), index)))
                })?;
                self.field(k("multicast-group"), |v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let group = v.parse::<IpAddr>().map_err(|_| "not an IP address".to_owned())?;
                    if !group.is_multicast() {
                        return Err(
                            "not a multicast address (IPv4 224.0.0.0/4, e.g. 239.255.42.42; IPv6 ff00::/8)".into()
                        );
                    }
                    Ok(Some(Multicast { group, port, ttl, interface }))
                })?
            },
        };
        if st.record.is_some() && st.codec == Codec::Jpeg {
            let k = KeyRef::of(Scope::Stream, "record-dir", n);
            let (v, origin) = self.raw.value(k);
            return Err(ConfigError {
                key: k.name(),
                value: v.to_owned(),
                origin,
                reason: "only H.264 streams are recorded (MP4's motion-JPEG mapping plays in ffmpeg-based players only); record an H.264 stream of the camera".into(),
            });
        }
        Ok(st)
    }

    /// The `record-*` keys of stream `n`: `None` without a `record-dir`.
    fn record(&self, n: u8) -> Result<Option<crate::record::RecorderSettings>, ConfigError> {
        use crate::record::{FsyncPolicy, RecorderSettings};
        let k = |name| KeyRef::of(Scope::Stream, name, n);
        let seconds = |v: &str| -> Result<std::time::Duration, String> {
            match v.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(s)),
                _ => Err("expected seconds, e.g. 60 or 0.5".into()),
            }
        };
        let Some(dir) = self.field(k("record-dir"), |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))? else {
            return Ok(None);
        };
        let mut s = RecorderSettings::new(dir);
        s.segment = self.field(k("record-segment"), seconds)?;
        s.fragment = self.field(k("record-fragment"), seconds)?;
        s.fsync = self.field(k("record-fsync"), |v| {
            FsyncPolicy::parse(v).ok_or_else(|| "expected fragment, segment or off".to_owned())
        })?;
        s.max_size =
            self.field(k("record-max-size"), |v| if v.is_empty() { Ok(None) } else { parse_size(v).map(Some) })?;
        s.max_age =
            self.field(k("record-max-age"), |v| if v.is_empty() { Ok(None) } else { parse_age(v).map(Some) })?;
        s.min_free = self.field(k("record-min-free"), |v| parse_size(v).map(|b| (b > 0).then_some(b)))?;
        if let Err(why) = s.validate() {
            let key = if why.contains("fragment") { "record-fragment" } else { "record-segment" };
            let (v, origin) = self.raw.value(k(key));
            return Err(ConfigError { key: k(key).name(), value: v.to_owned(), origin, reason: why.to_owned() });
        }
        Ok(Some(s))
    }

    /// Two streams never share a multicast group and port, or an `sdp-out` file.
    fn check_unique_destinations(&self, streams: &[StreamConfig]) -> Result<(), ConfigError> {
        for (i, s) in streams.iter().enumerate() {
            for o in &streams[..i] {
                let clash = match (&s.multicast, &o.multicast) {
                    (Some(a), Some(b)) if a.group == b.group && a.port == b.port => Some((
                        "multicast-group",
                        format!(
                            "{} already sends to this group at port {}; give one of them another multicast-port",
                            o.name, a.port
                        ),
                    )),
                    _ => None,
                }
                .or_else(|| {
                    (s.sdp_out.is_some() && s.sdp_out == o.sdp_out)
                        .then(|| ("sdp-out", format!("{} already writes this file", o.name)))
                })
                .or_else(|| match (&s.record, &o.record) {
                    (Some(a), Some(b)) if a.dir == b.dir => Some((
                        "record-dir",
                        format!("{} already records there (latest_video.mp4 is one per directory)", o.name),
                    )),
                    _ => None,
                });
                if let Some((name, reason)) = clash {
                    let k = KeyRef::of(Scope::Stream, name, i as u8 + 1);
                    let (v, origin) = self.raw.value(k);
                    return Err(ConfigError { key: k.name(), value: v.to_owned(), origin, reason });
                }
            }
        }
        Ok(())
    }
}

fn even_dimension(v: &str) -> Result<u32, String> {
    let n: u32 = v.parse().map_err(|_| "not a whole number".to_owned())?;
    if !(16..=limits::MAX_DIMENSION).contains(&n) || n % 2 != 0 {
        return Err(format!("must be an even number between 16 and {}", limits::MAX_DIMENSION));
    }
    Ok(n)
}

fn parse_bitrate(v: &str) -> Result<u32, String> {
    let (num, mult) = match v.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1_000),
        None => match v.strip_suffix('M') {
            Some(n) => (n, 1_000_000),
            None => (v, 1),
        },
    };
    let n: u64 = num.trim().parse().map_err(|_| "not a number (e.g. 2000000, 2000k or 2M)".to_owned())?;
    let bps = n.saturating_mul(mult);
    if !(10_000..=100_000_000).contains(&bps) {
        return Err("must be between 10k and 100M bit/s".into());
    }
    Ok(bps as u32)
}

/// `8G`, `500M`, `64k`, `1048576` (bytes; powers of 1024).
fn parse_size(v: &str) -> Result<u64, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err("expected a size such as 8G, 500M or 1048576".into()),
            };
            (&v[..i], m)
        }
        _ => (v, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| "expected a size such as 8G, 500M or 1048576".to_owned())?;
    n.checked_mul(mult).ok_or_else(|| "too large".into())
}

/// `7d`, `12h`, `30m`, `3600` (seconds).
fn parse_age(v: &str) -> Result<std::time::Duration, String> {
    let (num, mult) = match v.as_bytes().last() {
        Some(b'd') => (&v[..v.len() - 1], 86_400),
        Some(b'h') => (&v[..v.len() - 1], 3_600),
        Some(b'm') => (&v[..v.len() - 1], 60),
        Some(b's') => (&v[..v.len() - 1], 1),
        _ => (v, 1),
    };
    match num.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n.saturating_mul(mult))),
        _ => Err("expected an age such as 7d, 12h, 30m or 3600 (seconds)".into()),
    }
}

/// The resolved configuration: global settings, the cameras, and the streams they feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: IpAddr,
    pub port: u16,
    pub max_clients: usize,
    pub rtp_ports: (u16, u16),
    pub mtu: usize,
    pub session_timeout: u32,
    /// Seconds without an access unit before a pipeline is rebuilt.
    pub stall_timeout: u32,
    pub max_pending_connections: usize,
    pub idle_timeout: u32,
    pub request_timeout: u32,
    pub max_request_rate: u32,
    pub client_stall_timeout: u32,
    /// Seconds between stats lines, 0 = off.
    pub stats_interval: u32,
    pub log_level: String,
    /// Users allowed to watch; empty: no authentication.
    pub auth_users: Vec<AuthUser>,
    /// HTTP (MJPEG, snapshots) port; 0 = off.
    pub http_port: u16,
    pub max_http_clients: usize,
    /// DSCP of RTSP/HTTP connections and session sockets, and every stream's default; 0 = unmarked.
    pub dscp: u8,
    /// At least one.
    pub cameras: Vec<CameraConfig>,
    /// At least one; every camera feeds at least one.
    pub streams: Vec<StreamConfig>,
}

/// One camera: where frames come from, at what size and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraConfig {
    /// `camera1`, `camera2`, …
    pub name: String,
    pub source: SourceSpec,
    /// `auto` or a device path.
    pub device: String,
    /// Requested V4L2 FourCC, `None` for automatic choice.
    pub pixel_format: Option<[u8; 4]>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// One stream: a path, a codec, its size and rate (at most its camera's), its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// `stream1`, `stream2`, …
    pub name: String,
    /// Index into [`Config::cameras`].
    pub camera: usize,
    pub path: String,
    pub codec: Codec,
    pub encoder: EncoderChoice,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: u32,
    pub idr_interval: u32,
    /// Quality of JPEGs encoded here (1-100).
    pub jpeg_quality: u8,
    /// Push mode: RTP to this fixed destination, without RTSP.
    pub rtp_dest: Option<SocketAddr>,
    /// Where to write the push-mode SDP.
    pub sdp_out: Option<PathBuf>,
    /// DSCP of the stream's UDP packets; 0 = unmarked.
    pub dscp: u8,
    /// RTSP multicast: the group RTP/AVP;multicast sessions receive; `None` = off.
    pub multicast: Option<Multicast>,
    /// Recording (`record-*` keys); `None` = off.
    pub record: Option<crate::record::RecorderSettings>,
}

/// What one camera → stream pipeline is built from: the camera's capture settings and the
/// stream's encoding settings, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    pub source: SourceSpec,
    pub device: String,
    pub pixel_format: Option<[u8; 4]>,
    pub encoder: EncoderChoice,
    /// The stream's size and rate.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: u32,
    pub idr_interval: u32,
    pub codec: Codec,
    pub jpeg_quality: u8,
    /// The stream takes its frames from its camera through a frame tap (every stream of a
    /// test-pattern camera, and a V4L2 camera's streams after its first), instead of capturing.
    pub fed: bool,
    /// The camera's capture size and rate (a fed stream scales and thins its frames from them).
    pub camera_width: u32,
    pub camera_height: u32,
    pub camera_fps: u32,
}

impl PipelineConfig {
    /// Frames between IDRs, with 0 meaning one second.
    pub fn idr_period(&self) -> u32 {
        if self.idr_interval == 0 {
            self.fps
        } else {
            self.idr_interval
        }
    }
}

/// The multicast group stream (`multicast-*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multicast {
    pub group: IpAddr,
    /// RTP port (even); RTCP is port + 1.
    pub port: u16,
    pub ttl: u8,
    /// Interface name and index (`multicast-interface`); `None`: the routing table decides.
    pub interface: Option<(String, u32)>,
}

impl StreamConfig {
    /// The stream as the RTSP core serves it: its path and multicast group.
    pub fn rtsp_route(&self) -> crate::rtsp::session::StreamRoute<'_> {
        crate::rtsp::session::StreamRoute {
            path: &self.path,
            multicast: self.multicast.as_ref().map(|m| crate::rtsp::transport::MulticastGroup {
                group: m.group,
                port: m.port,
                ttl: m.ttl,
            }),
        }
    }
}

impl Config {
    /// Largest RTP packet, so that it fits the link MTU over IPv6 as well as IPv4.
    pub fn max_rtp_packet(&self) -> usize {
        self.mtu - limits::IPV6_UDP_OVERHEAD
    }

    /// The pipeline of stream `i`: its camera's capture and its own encoding.
    pub fn pipeline(&self, i: usize) -> PipelineConfig {
        let st = &self.streams[i];
        let cam = &self.cameras[st.camera];
        PipelineConfig {
            source: cam.source.clone(),
            device: cam.device.clone(),
            pixel_format: cam.pixel_format,
            encoder: st.encoder,
            width: st.width,
            height: st.height,
            fps: st.fps,
            bitrate: st.bitrate,
            idr_interval: st.idr_interval,
            codec: st.codec,
            jpeg_quality: st.jpeg_quality,
            fed: self.is_fed(i),
            camera_width: cam.width,
            camera_height: cam.height,
            camera_fps: cam.fps,
        }
    }

    /// Whether stream `i` takes its frames from its camera through a tap: every stream of a
    /// test-pattern camera (rendered once for all), and each stream of a capturing camera after
    /// its first (which captures).
    pub fn is_fed(&self, i: usize) -> bool {
        let st = &self.streams[i];
        self.cameras[st.camera].source == SourceSpec::TestPattern
            || self.streams.iter().position(|s| s.camera == st.camera) != Some(i)
    }
}

#[cfg(test)]
mod tests;
