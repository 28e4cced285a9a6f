//! Configuration: one key, three spellings, four layers.
//!
//! `--width 1280` = `UAVSTREAM_WIDTH=1280` = `uavstream.width=1280` on the kernel command line.
//! Precedence: defaults < kernel command line < environment < flags. Every resolved value
//! remembers its origin so `--print-config` can show it and an error can name it. A bad value is
//! a [`ConfigError`] naming key, value and origin (the binary exits with status 2). Unknown
//! `uavstream.*` command-line keys and unknown `UAVSTREAM_*` variables are warnings, not errors:
//! the Pi firmware adds keys of its own and a typo must not brick a drone's video on boot.

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
    pub key: &'static str,
    pub value: String,
    pub origin: Origin,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spelled = match self.origin {
            Origin::Default => format!("default {}", self.key),
            Origin::KernelCmdline => format!("uavstream.{}", self.key),
            Origin::Environment => env_name(self.key),
            Origin::Flag => format!("--{}", self.key),
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

/// Every key: name, default, help. The order is the `--print-config` order.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("source", "testpattern", "testpattern | file:PATH (H.264 Annex B, replayed at --fps, looping) | v4l2"),
    ("device", "auto", "V4L2 capture device, or auto: the first capture-capable /dev/video*"),
    ("pixel-format", "auto", "V4L2 capture format: auto | NV12 | YU12 | YUYV | MJPG | H264"),
    ("encoder", "auto", "auto | software | passthrough | v4l2"),
    ("width", "1280", "frame width in pixels (even)"),
    ("height", "720", "frame height in pixels (even)"),
    ("fps", "30", "frames per second"),
    ("bitrate", "2000000", "encoder bitrate in bit/s (suffixes k and M accepted)"),
    ("idr-interval", "0", "frames between IDRs; 0 = one per second"),
    ("listen", "0.0.0.0", "address the RTSP server listens on"),
    ("port", "8554", "RTSP TCP port"),
    ("path", "/live", "stream path: rtsp://HOST:PORT/PATH"),
    ("max-clients", "16", "RTSP session slots, allocated at start; more get 503"),
    ("rtp-ports", "50000-50999", "UDP port range for per-session RTP/RTCP pairs"),
    ("mtu", "1500", "link MTU; RTP packets are sized to fit IPv4 and IPv6"),
    ("session-timeout", "60", "seconds of silence before an RTSP session expires"),
    ("stall-timeout", "2", "seconds without an access unit before source and encoder are restarted"),
    ("max-pending-connections", "16", "connections without a session; beyond it the oldest is closed"),
    ("idle-timeout", "30", "seconds a sessionless RTSP or idle keep-alive HTTP connection may stay silent"),
    ("request-timeout", "10", "seconds a request may take to arrive completely (slowloris guard)"),
    ("max-request-rate", "20", "RTSP requests per second per connection (bursts of 40); beyond: 503, close"),
    ("client-stall-timeout", "5", "seconds a TCP client may accept no bytes before it is disconnected"),
    ("stats-interval", "0", "seconds between stats log lines (sessions, latency p50/p99/max, RSS); 0 = off"),
    ("auth", "", "USER:PASSWORD[,USER:PASSWORD...] for RTSP and HTTP Basic/Digest auth (never on the kernel command line)"),
    ("auth-file", "", "file of [/PATH ]USER:PASSWORD lines (# comments); /PATH limits a user to that stream"),
    ("log-level", "info", "error | warn | info | debug | trace"),
    ("codec", "h264", "h264 | mjpeg: the stream's payload format (RTP/JPEG is payload type 26)"),
    ("jpeg-quality", "80", "JPEG quality 1-100 when frames are JPEG-encoded here"),
    ("http-port", "8080", "HTTP port for /PATH.mjpeg, /PATH.jpg and /; 0 = off"),
    ("max-http-clients", "8", "HTTP connection slots, allocated at start; an idle keep-alive one gives way, else 503"),
    ("rtp-dest", "", "HOST:PORT: also push the RTP stream there over UDP, without RTSP"),
    ("dscp", "0", "DSCP of all media packets: RTP/RTCP over UDP, RTSP and HTTP connections, multicast, push mode (IP_TOS = dscp << 2), e.g. 46 (EF); 0 = unmarked"),
    ("sdp-out", "", "file to write the SDP a push-mode receiver needs"),
    ("multicast-group", "", "IPv4/IPv6 multicast group served to RTSP clients asking for RTP/AVP;multicast, e.g. 239.255.42.42; empty = multicast off"),
    ("multicast-port", "5004", "even UDP port of the multicast RTP stream; RTCP is port + 1"),
    ("multicast-ttl", "1", "multicast TTL / hop limit, 1-255; 1 = the local network only"),
    ("multicast-interface", "", "network interface the multicast stream leaves by (e.g. wlan0); empty = the routing table decides"),
];

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

/// The `UAVSTREAM_*` variable of a key.
pub fn env_name(key: &str) -> String {
    format!("UAVSTREAM_{}", key.to_ascii_uppercase().replace('-', "_"))
}

/// Raw layered values before parsing: one slot per key in [`KEYS`].
#[derive(Debug, Clone)]
pub struct RawConfig {
    values: Vec<(String, Origin)>,
    pub warnings: Vec<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RawConfig {
    pub fn new() -> Self {
        Self { values: KEYS.iter().map(|(_, d, _)| ((*d).to_owned(), Origin::Default)).collect(), warnings: Vec::new() }
    }

    fn index(key: &[u8]) -> Option<usize> {
        KEYS.iter().position(|(k, _, _)| cmdline::param_eq(k.as_bytes(), key))
    }

    /// Sets `key` if `origin` ranks at least as high as what is there.
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) -> bool {
        match Self::index(key.as_bytes()) {
            Some(i) if origin >= self.values[i].1 => {
                self.values[i] = (value.to_owned(), origin);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    pub fn get(&self, key: &str) -> (&str, Origin) {
        let i = Self::index(key.as_bytes()).expect("known key");
        (&self.values[i].0, self.values[i].1)
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

    /// Parses every value.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let p = Parser { raw: self };
        let fps: u32 = p.num("fps", 1, limits::MAX_FPS)?;
        let max_clients: usize = p.num("max-clients", 1, limits::MAX_CLIENTS_LIMIT as u32)? as usize;
        let rtp_ports = p.field("rtp-ports", |v| {
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
        Ok(Config {
            source: p.field("source", |v| match v {
                "testpattern" => Ok(SourceSpec::TestPattern),
                "v4l2" => Ok(SourceSpec::V4l2),
                _ => match v.strip_prefix("file:") {
                    Some(path) if !path.is_empty() => Ok(SourceSpec::File(PathBuf::from(path))),
                    _ => Err("expected testpattern, file:PATH or v4l2".into()),
                },
            })?,
            encoder: p.field("encoder", |v| match v {
                "auto" => Ok(EncoderChoice::Auto),
                "software" => Ok(EncoderChoice::Software),
                "passthrough" => Ok(EncoderChoice::Passthrough),
                "v4l2" => Ok(EncoderChoice::V4l2),
                _ => Err("expected auto, software, passthrough or v4l2".into()),
            })?,
            width: p.field("width", even_dimension)?,
            height: p.field("height", even_dimension)?,
            fps,
            bitrate: p.field("bitrate", parse_bitrate)?,
            idr_interval: p.num("idr-interval", 0, 100_000)?,
            listen: p.field("listen", |v| v.parse::<IpAddr>().map_err(|_| "not an IP address".into()))?,
            port: p.num("port", 1, 65535)? as u16,
            path: p.field("path", |v| {
                if !v.starts_with('/')
                    || v.len() > 64
                    || v.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
                {
                    Err("must start with '/', be at most 64 characters, without spaces, '?' or '#'".into())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            max_clients,
            rtp_ports,
            mtu: p.num("mtu", limits::MIN_MTU as u32, limits::MAX_RTP_PACKET as u32)? as usize,
            session_timeout: p.num("session-timeout", 5, 3600)?,
            stall_timeout: p.num("stall-timeout", 1, 600)?,
            max_pending_connections: p.num("max-pending-connections", 1, 4096)? as usize,
            idle_timeout: p.num("idle-timeout", 1, 3600)?,
            request_timeout: p.num("request-timeout", 1, 600)?,
            max_request_rate: p.num("max-request-rate", 1, 10_000)?,
            client_stall_timeout: p.num("client-stall-timeout", 1, 600)?,
            stats_interval: p.num("stats-interval", 0, 86_400)?,
            device: p.field("device", |v| {
                if v == "auto" || v.starts_with('/') {
                    Ok(v.to_owned())
                } else {
                    Err("expected auto or a device path such as /dev/video0".into())
                }
            })?,
            pixel_format: p.field("pixel-format", |v| match v {
                "auto" => Ok(None),
                _ if v.len() == 4 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    let b = v.as_bytes();
                    Ok(Some([b[0], b[1], b[2], b[3]]))
                }
                _ => Err("expected auto or a FourCC such as NV12, YU12, YUYV, MJPG, H264".into()),
            })?,
            auth_users: {
                let mut users = p.field("auth", |v| {
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
                users.extend(p.field("auth-file", |v| {
                    if v.is_empty() {
                        Ok(Vec::new())
                    } else {
                        read_auth_file(std::path::Path::new(v))
                    }
                })?);
                users
            },
            codec: p.field("codec", |v| match v {
                "h264" => Ok(Codec::H264),
                "mjpeg" | "jpeg" => Ok(Codec::Jpeg),
                _ => Err("expected h264 or mjpeg".into()),
            })?,
            jpeg_quality: p.num("jpeg-quality", 1, 100)? as u8,
            http_port: p.num("http-port", 0, 65535)? as u16,
            max_http_clients: p.num("max-http-clients", 1, 1024)? as usize,
            rtp_dest: p.field("rtp-dest", |v| {
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
            dscp: p.num("dscp", 0, 63)? as u8,
            multicast: {
                let port = p.field("multicast-port", |v| match v.parse::<u16>() {
                    Ok(n) if n >= 2 && n % 2 == 0 && n < u16::MAX => Ok(n),
                    _ => Err("must be an even port number between 2 and 65534 (RTCP is port + 1)".into()),
                })?;
                let ttl = p.num("multicast-ttl", 1, 255)? as u8;
                let interface = p.field("multicast-interface", |v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let index = nix::net::if_::if_nametoindex(v).map_err(|_| "no such network interface".to_owned())?;
                    Ok(Some((v.to_owned(), index)))
                })?;
                p.field("multicast-group", |v| {
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
            sdp_out: p.field("sdp-out", |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))?,
            log_level: p.field("log-level", |v| match v {
                "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(v.to_owned()),
                _ => Err("expected error, warn, info, debug or trace".into()),
            })?,
        })
    }

    /// `key = value (origin)` lines for `--print-config`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (i, (k, _, _)) in KEYS.iter().enumerate() {
            let (v, o) = &self.values[i];
            let v = if *k == "auth" && !v.is_empty() { "(set, not shown)" } else { v.as_str() };
            s.push_str(&format!("{k:<16} = {v:<24} ({o})\n"));
        }
        s
    }
}

struct Parser<'a> {
    raw: &'a RawConfig,
}

impl Parser<'_> {
    fn field<T>(&self, key: &'static str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let (v, origin) = self.raw.get(key);
        f(v.trim()).map_err(|reason| ConfigError { key, value: v.to_owned(), origin, reason })
    }

    fn num(&self, key: &'static str, min: u32, max: u32) -> Result<u32, ConfigError> {
        self.field(key, |v| {
            let n: u32 = v.parse().map_err(|_| "not a whole number".to_owned())?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        })
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

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: SourceSpec,
    pub encoder: EncoderChoice,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate: u32,
    pub idr_interval: u32,
    pub listen: IpAddr,
    pub port: u16,
    pub path: String,
    pub max_clients: usize,
    pub rtp_ports: (u16, u16),
    pub mtu: usize,
    pub session_timeout: u32,
    /// Seconds without an access unit before the pipeline is rebuilt.
    pub stall_timeout: u32,
    pub max_pending_connections: usize,
    pub idle_timeout: u32,
    pub request_timeout: u32,
    pub max_request_rate: u32,
    pub client_stall_timeout: u32,
    /// Seconds between stats lines, 0 = off.
    pub stats_interval: u32,
    /// `auto` or a device path.
    pub device: String,
    /// Requested V4L2 FourCC, `None` for automatic choice.
    pub pixel_format: Option<[u8; 4]>,
    pub log_level: String,
    /// Users allowed to watch; empty: no authentication.
    pub auth_users: Vec<AuthUser>,
    /// The stream's payload format.
    pub codec: Codec,
    /// Quality of JPEGs encoded here (1-100).
    pub jpeg_quality: u8,
    /// HTTP (MJPEG, snapshots) port; 0 = off.
    pub http_port: u16,
    pub max_http_clients: usize,
    /// Push mode: RTP to this fixed destination, without RTSP.
    pub rtp_dest: Option<SocketAddr>,
    /// DSCP of pushed packets; 0 = unmarked.
    pub dscp: u8,
    /// Where to write the push-mode SDP.
    pub sdp_out: Option<PathBuf>,
    /// RTSP multicast: the group RTP/AVP;multicast sessions receive; `None` = off.
    pub multicast: Option<Multicast>,
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

impl Config {
    /// Frames between IDRs, with 0 meaning one second.
    pub fn idr_period(&self) -> u32 {
        if self.idr_interval == 0 {
            self.fps
        } else {
            self.idr_interval
        }
    }

    /// Largest RTP packet, so that it fits the link MTU over IPv6 as well as IPv4.
    pub fn max_rtp_packet(&self) -> usize {
        self.mtu - limits::IPV6_UDP_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn every_key_is_documented_where_operators_look() {
        // The firmware's /etc/default file, the boot-configuration guide and the README list every
        // key: a key added here without them is invisible to whoever builds the image.
        let default_file = include_str!("../dist/default/uavstream");
        let boot_config = include_str!("../docs/boot-config.md");
        let readme = include_str!("../README.md");
        for (key, default, _) in KEYS {
            let env: String = format!("UAVSTREAM_{}", key.to_uppercase().replace('-', "_"));
            let line = format!("#{env}=");
            assert!(default_file.contains(&line), "dist/default/uavstream lacks {line}");
            if !default.is_empty() && *key != "auth-file" {
                assert!(
                    default_file.contains(&format!("{line}{default}\n")),
                    "dist/default/uavstream: {env} should show the default {default}"
                );
            }
            let cell = format!("`{key}`");
            assert!(boot_config.contains(&cell), "docs/boot-config.md lacks {cell}");
            assert!(readme.contains(&cell), "README.md lacks {cell}");
        }
    }

    #[test]
    fn defaults_resolve() {
        let c = RawConfig::new().resolve().unwrap();
        assert_eq!((c.width, c.height, c.fps, c.port), (1280, 720, 30, 8554));
        assert_eq!(c.source, SourceSpec::TestPattern);
        assert_eq!(c.idr_period(), 30);
        assert_eq!(c.max_rtp_packet(), 1452);
    }

    #[test]
    fn precedence_is_default_cmdline_env_flag() {
        let mut raw = RawConfig::new();
        raw.apply_cmdline(
            "console=ttyS0 uavstream.width=640 uavstream.height=480 uavstream.fps=15 uavstream.port=1000",
        );
        raw.apply_env(env(&[("UAVSTREAM_HEIGHT", "360"), ("UAVSTREAM_FPS", "20"), ("HOME", "/root")]));
        // flags come last, whatever order the layers are applied in
        raw.set("fps", "25", Origin::Flag);
        raw.apply_env(env(&[("UAVSTREAM_FPS", "21")]));
        raw.apply_cmdline("uavstream.fps=22");
        let c = raw.resolve().unwrap();
        assert_eq!((c.width, c.height, c.fps, c.port), (640, 360, 25, 1000));
        assert_eq!(raw.get("width").1, Origin::KernelCmdline);
        assert_eq!(raw.get("height").1, Origin::Environment);
        assert_eq!(raw.get("fps").1, Origin::Flag);
        assert_eq!(raw.get("bitrate").1, Origin::Default);
        assert!(raw.describe().contains("width            = 640                      (kernel command line)"));
    }

    #[test]
    fn cmdline_keys_use_kernel_quoting_and_dash_underscore_equivalence() {
        let mut raw = RawConfig::new();
        raw.apply_cmdline(
            "uavstream.max_clients=4 \"uavstream.path=/front cam\" uavstream.session-timeout=30 -- uavstream.port=1",
        );
        assert_eq!(raw.get("max-clients"), ("4", Origin::KernelCmdline));
        assert_eq!(raw.get("path"), ("/front cam", Origin::KernelCmdline));
        assert_eq!(raw.get("session-timeout"), ("30", Origin::KernelCmdline));
        assert_eq!(raw.get("port"), ("8554", Origin::Default));
        // the path has a space: a clear error naming the cmdline key
        let e = raw.resolve().unwrap_err();
        assert_eq!((e.key, e.origin), ("path", Origin::KernelCmdline));
        assert!(e.to_string().contains("uavstream.path"), "{e}");
    }

    #[test]
    fn unknown_keys_warn() {
        let mut raw = RawConfig::new();
        raw.apply_cmdline("uavstream.widht=1 uavstream.fps uavstream.width=320");
        raw.apply_env(env(&[("UAVSTREAM_HIEGHT", "2"), ("UAVSTREAM_PROC_CMDLINE", "x")]));
        assert_eq!(raw.warnings.len(), 3, "{:?}", raw.warnings);
        assert!(raw.warnings[0].contains("uavstream.widht"));
        assert!(raw.warnings[2].contains("UAVSTREAM_HIEGHT"));
        assert_eq!(raw.resolve().unwrap().width, 320);
    }

    #[test]
    fn bad_values_name_key_value_and_origin() {
        let cases: &[(&str, &str, Origin, &str)] = &[
            ("width", "abc", Origin::Flag, "--width"),
            ("width", "641", Origin::Environment, "UAVSTREAM_WIDTH"),
            ("fps", "0", Origin::KernelCmdline, "uavstream.fps"),
            ("port", "70000", Origin::Flag, "--port"),
            ("bitrate", "2G", Origin::Flag, "--bitrate"),
            ("listen", "localhost", Origin::Flag, "--listen"),
            ("source", "v4l3", Origin::Flag, "--source"),
            ("device", "video0", Origin::Flag, "--device"),
            ("pixel-format", "NV1", Origin::Flag, "--pixel-format"),
            ("stall-timeout", "0", Origin::Flag, "--stall-timeout"),
            ("source", "file:", Origin::Flag, "--source"),
            ("encoder", "x264", Origin::Flag, "--encoder"),
            ("path", "live", Origin::Flag, "--path"),
            ("max-clients", "0", Origin::Flag, "--max-clients"),
            ("rtp-ports", "6000-6010", Origin::Flag, "--rtp-ports"),
            ("rtp-ports", "7000-6000", Origin::Flag, "--rtp-ports"),
            ("mtu", "100", Origin::Flag, "--mtu"),
            ("session-timeout", "1", Origin::Flag, "--session-timeout"),
            ("log-level", "loud", Origin::Flag, "--log-level"),
            ("codec", "vp8", Origin::Flag, "--codec"),
            ("jpeg-quality", "0", Origin::Environment, "UAVSTREAM_JPEG_QUALITY"),
            ("jpeg-quality", "101", Origin::Flag, "--jpeg-quality"),
            ("http-port", "65536", Origin::KernelCmdline, "uavstream.http-port"),
            ("max-http-clients", "0", Origin::Flag, "--max-http-clients"),
            ("rtp-dest", "10.0.0.1", Origin::Flag, "--rtp-dest"),
            ("rtp-dest", "10.0.0.1:0", Origin::Flag, "--rtp-dest"),
            ("dscp", "64", Origin::Flag, "--dscp"),
            ("multicast-group", "10.0.0.1", Origin::Flag, "--multicast-group"),
            ("multicast-group", "ff02:x", Origin::Environment, "UAVSTREAM_MULTICAST_GROUP"),
            ("multicast-group", "::1", Origin::KernelCmdline, "uavstream.multicast-group"),
            ("multicast-port", "5005", Origin::Flag, "--multicast-port"),
            ("multicast-port", "0", Origin::Flag, "--multicast-port"),
            ("multicast-port", "65535", Origin::Flag, "--multicast-port"),
            ("multicast-ttl", "0", Origin::Flag, "--multicast-ttl"),
            ("multicast-ttl", "256", Origin::Environment, "UAVSTREAM_MULTICAST_TTL"),
            ("multicast-interface", "nosuchif0", Origin::Flag, "--multicast-interface"),
        ];
        for (key, value, origin, spelled) in cases {
            let mut raw = RawConfig::new();
            raw.set(key, value, *origin);
            let e = raw.resolve().unwrap_err();
            assert_eq!(e.key, *key);
            assert_eq!(e.value, *value);
            assert_eq!(e.origin, *origin);
            let msg = e.to_string();
            assert!(msg.contains(spelled) && msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn auth_from_env_and_file_never_from_the_kernel_command_line() {
        let mut raw = RawConfig::new();
        raw.apply_env(env(&[("UAVSTREAM_AUTH", "pilot:s3cret,ground:station")]));
        let c = raw.resolve().unwrap();
        assert_eq!(c.auth_users.len(), 2);
        assert_eq!(c.auth_users[1], AuthUser { user: "ground".into(), password: "station".into(), path: None });
        assert!(!raw.describe().contains("s3cret"), "{}", raw.describe());

        let mut raw = RawConfig::new();
        raw.apply_cmdline("uavstream.auth=pilot:s3cret");
        let e = raw.resolve().unwrap_err();
        assert_eq!((e.key, e.origin), ("auth", Origin::KernelCmdline));
        assert!(e.reason.contains("refused"), "{e}");

        let dir = std::env::temp_dir().join(format!("uavstream-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        std::fs::write(&f, "# operators\npilot:pa:ss\n\n/live viewer:look\n").unwrap();
        let mut raw = RawConfig::new();
        raw.apply_cmdline(&format!("uavstream.auth-file={}", f.display()));
        let c = raw.resolve().unwrap();
        assert_eq!(c.auth_users[0].password, "pa:ss");
        assert_eq!(c.auth_users[1].path.as_deref(), Some("/live"));
        std::fs::write(&f, "nocolon\n").unwrap();
        let e = raw.resolve().unwrap_err();
        assert!(e.reason.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn multicast_is_off_by_default_and_on_with_a_group() {
        let c = RawConfig::new().resolve().unwrap();
        assert_eq!(c.multicast, None);
        let mut raw = RawConfig::new();
        raw.apply_cmdline("uavstream.multicast-group=239.255.42.42 uavstream.multicast_ttl=4");
        raw.apply_env(env(&[("UAVSTREAM_MULTICAST_PORT", "6000")]));
        raw.set("multicast-interface", "lo", Origin::Flag);
        let m = raw.resolve().unwrap().multicast.unwrap();
        assert_eq!((m.group, m.port, m.ttl), ("239.255.42.42".parse().unwrap(), 6000, 4));
        assert_eq!(m.interface.as_ref().map(|(n, i)| (n.as_str(), *i > 0)), Some(("lo", true)));
        let mut raw = RawConfig::new();
        raw.set("multicast-group", "ff15::4242", Origin::Flag);
        let m = raw.resolve().unwrap().multicast.unwrap();
        assert_eq!((m.port, m.ttl, m.interface), (5004, 1, None));
        assert!(m.group.is_ipv6());
    }

    #[test]
    fn bitrate_suffixes() {
        assert_eq!(parse_bitrate("2M"), Ok(2_000_000));
        assert_eq!(parse_bitrate("500k"), Ok(500_000));
        assert_eq!(parse_bitrate("8000000"), Ok(8_000_000));
        assert!(parse_bitrate("9999").is_err());
    }
}
