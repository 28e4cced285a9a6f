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
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::cmdline;
use crate::limits;
use crate::rtsp::session::FeedbackPolicy;

mod keys;
mod parse;

pub use keys::{Key, KeyRef, Scope, KEYS};
use parse::Parser;

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
    /// A libcamera camera (`--device`: index, id or model): Pi CSI cameras through the ISP.
    Libcamera,
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

    pub(super) fn value(&self, k: KeyRef) -> (&str, Origin) {
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
            if rest == "PROC_CMDLINE" || rest == "FAULT_INJECTION" || rest.starts_with("FAULT_") {
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
        for kind in [SourceSpec::V4l2, SourceSpec::Libcamera] {
            if cameras.iter().filter(|c| c.source == kind).count() < 2 {
                continue;
            }
            if let Some(c) = cameras.iter().position(|c| c.source == kind && c.device == "auto") {
                let k = KeyRef::of(Scope::Camera, "device", c as u8 + 1);
                let (v, origin) = self.value(k);
                return Err(ConfigError {
                    key: k.name(),
                    value: v.to_owned(),
                    origin,
                    reason: if kind == SourceSpec::V4l2 {
                        "with several V4L2 cameras each needs its device (e.g. /dev/video0, or a /dev/v4l/by-path/ link)".into()
                    } else {
                        "with several libcamera cameras each needs its device (an index, id or model, see --list-devices)".into()
                    },
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
        p.check_unique_raw_sockets(&cameras)?;
        for (c, cam) in cameras.iter().enumerate() {
            let Some(snap) = &cam.snapshot else { continue };
            let reason = if matches!(cam.source, SourceSpec::File(_)) {
                Some(
                    "a file camera holds H.264 that is replayed without decoding: no frames to take snapshots of"
                        .to_owned(),
                )
            } else {
                cameras[..c].iter().find(|o| o.snapshot.as_ref().is_some_and(|s| s.dir == snap.dir)).map(|o| {
                    format!("{} already writes snapshots there (latest_image.jpg is one per directory)", o.name)
                })
            };
            if let Some(reason) = reason {
                let k = KeyRef::of(Scope::Camera, "snapshot-dir", c as u8 + 1);
                let (v, origin) = self.value(k);
                return Err(ConfigError { key: k.name(), value: v.to_owned(), origin, reason });
            }
        }
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
            fanout_threads: p.num(g("fanout-threads"), 1, limits::MAX_FANOUT_THREADS as u32)? as usize,
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
            nack: p.field(g("nack"), |v| match v {
                "on" => Ok(FeedbackPolicy::KnownClients),
                "all" => Ok(FeedbackPolicy::All),
                "off" => Ok(FeedbackPolicy::Off),
                _ => Err("expected on, all or off".into()),
            })?,
            nack_window: p.field(g("nack-window"), |v| match v {
                "auto" => Ok(None),
                _ => match v.strip_suffix("ms").unwrap_or(v).parse::<u64>() {
                    Ok(ms) if (1..=10_000).contains(&ms) => Ok(Some(std::time::Duration::from_millis(ms))),
                    _ => Err("expected auto or milliseconds between 1 and 10000".into()),
                },
            })?,
            http_port: p.num(g("http-port"), 0, 65535)? as u16,
            webrtc_port: p.num(g("webrtc-port"), 0, 65535)? as u16,
            webrtc_interfaces: p.field(g("webrtc-interfaces"), |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| match e.parse::<IpAddr>() {
                        Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                            Err(format!("{e}: a host candidate is one address of this machine"))
                        }
                        Ok(_) => Ok(e.to_owned()),
                        Err(_) if e.len() <= 15 && e.bytes().all(|b| b.is_ascii_graphic() && b != b'/') => {
                            Ok(e.to_owned())
                        }
                        Err(_) => Err(format!("{e}: neither an IP address nor an interface name")),
                    })
                    .collect()
            })?,
            max_webrtc_sessions: p.num(g("max-webrtc-sessions"), 1, 256)? as usize,
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

/// The resolved configuration: global settings, the cameras, and the streams they feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: IpAddr,
    pub port: u16,
    pub max_clients: usize,
    /// Threads that send an access unit to the UDP session slots: the loop and
    /// `fanout_threads - 1` sender threads (see `event_loop::fanout`).
    pub fanout_threads: usize,
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
    /// To whom DESCRIBE offers RTP/AVPF with NACK/RTX and PLI/FIR (`nack`).
    pub nack: FeedbackPolicy,
    /// `nack-window`: retransmit packets sent at most this long ago; `None` = auto.
    pub nack_window: Option<std::time::Duration>,
    /// HTTP (MJPEG, snapshots) port; 0 = off.
    pub http_port: u16,
    pub max_http_clients: usize,
    /// UDP port of WebRTC media; 0 = WebRTC off (also when HTTP is off: WHEP rides on it).
    pub webrtc_port: u16,
    /// ICE host candidates: interface names or addresses; empty = every up interface's IPv4.
    pub webrtc_interfaces: Vec<String>,
    pub max_webrtc_sessions: usize,
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
    /// Snapshots (`snapshot-*` keys); `None` = off.
    pub snapshot: Option<crate::record::snapshot::SnapshotSettings>,
    /// The raw-frame socket (`raw-socket*`, `raw-clients`); `None` = off.
    pub raw: Option<crate::raw::RawSettings>,
    /// Controls, flips and tuning file of a libcamera camera (empty for other sources).
    pub libcamera: crate::source::libcamera::settings::LibcameraSettings,
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
    /// Adaptive bitrate (`abr=on`); `None` = off.
    pub abr: Option<AbrSettings>,
    pub idr_interval: u32,
    /// Quality of JPEGs encoded here (1-100).
    pub jpeg_quality: u8,
    /// Push mode: RTP to this fixed destination, without RTSP.
    pub rtp_dest: Option<SocketAddr>,
    /// `publish`: the RTSP server the stream is published to (ANNOUNCE/RECORD).
    pub publish: Option<crate::rtsp::client::PublishUrl>,
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
    /// A libcamera camera's controls, flips and tuning file.
    pub libcamera: crate::source::libcamera::settings::LibcameraSettings,
    /// A capturing libcamera stream: the sizes of the camera's further streams, the first
    /// smaller of which the ISP's second output (Viewfinder role) can serve.
    pub further_sizes: Vec<(u32, u32)>,
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

/// Adaptive bitrate bounds (`abr-min`, `abr-max`), as configured: `min_bps <= max_bps`; the
/// controller raises a `min_bps` below [`crate::abr::FLOOR_BPS`] to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbrSettings {
    pub min_bps: u32,
    pub max_bps: u32,
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
            libcamera: cam.libcamera.clone(),
            further_sizes: if self.is_fed(i) {
                Vec::new()
            } else {
                self.streams
                    .iter()
                    .enumerate()
                    .filter(|(j, s)| *j != i && s.camera == st.camera)
                    .map(|(_, s)| (s.width, s.height))
                    .collect()
            },
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
