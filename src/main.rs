//! uavstream: low-latency RTSP/RTP camera streaming daemon.
//!
//! Thin: load the configuration, start logging, build the pipeline, run the loop, map the
//! outcome to an exit status (0 clean stop, 1 runtime failure, 2 bad configuration).

use std::process::ExitCode;

use argh::FromArgs;
use uavstream::config::{self, Origin, RawConfig};
use uavstream::rtsp::auth::Credential;
use uavstream::{event_loop, source, sys};

/// Low-latency RTSP/RTP H.264 streaming daemon for embedded Linux.
///
/// Every option is also an environment variable (UAVSTREAM_WIDTH=1280) and a kernel
/// command-line key (uavstream.width=1280). Precedence: defaults < kernel command line <
/// environment < flags.
#[derive(FromArgs, Debug)]
struct Flags {
    /// testpattern | file:PATH (H.264 Annex B replayed at --fps, looping) | v4l2 [testpattern]
    #[argh(option)]
    source: Option<String>,
    /// V4L2 capture device, or auto: the first capture-capable /dev/video* [auto]
    #[argh(option)]
    device: Option<String>,
    /// V4L2 capture FourCC: auto | NV12 | YU12 | YUYV | MJPG | H264 [auto]
    #[argh(option)]
    pixel_format: Option<String>,
    /// auto | software | passthrough | v4l2 [auto]
    #[argh(option)]
    encoder: Option<String>,
    /// frame width in pixels [1280]
    #[argh(option)]
    width: Option<String>,
    /// frame height in pixels [720]
    #[argh(option)]
    height: Option<String>,
    /// frames per second [30]
    #[argh(option)]
    fps: Option<String>,
    /// encoder bitrate in bit/s, k and M suffixes accepted [2000000]
    #[argh(option)]
    bitrate: Option<String>,
    /// frames between IDRs, 0 = one per second [0]
    #[argh(option)]
    idr_interval: Option<String>,
    /// address to listen on [0.0.0.0]
    #[argh(option)]
    listen: Option<String>,
    /// RTSP port [8554]
    #[argh(option)]
    port: Option<String>,
    /// stream path [/live]
    #[argh(option)]
    path: Option<String>,
    /// RTSP session slots, allocated at start; more get 503 [16]
    #[argh(option)]
    max_clients: Option<String>,
    /// UDP port range for per-session RTP/RTCP pairs [50000-50999]
    #[argh(option)]
    rtp_ports: Option<String>,
    /// link MTU; RTP packets are sized to fit it [1500]
    #[argh(option)]
    mtu: Option<String>,
    /// seconds of silence before an RTSP session expires [60]
    #[argh(option)]
    session_timeout: Option<String>,
    /// seconds without an access unit before source and encoder restart [2]
    #[argh(option)]
    stall_timeout: Option<String>,
    /// connections without a session; beyond it the oldest is closed [16]
    #[argh(option)]
    max_pending_connections: Option<String>,
    /// seconds a connection without a session may stay silent [30]
    #[argh(option)]
    idle_timeout: Option<String>,
    /// seconds a request may take to arrive completely [10]
    #[argh(option)]
    request_timeout: Option<String>,
    /// RTSP requests per second per connection, bursts of 40 [20]
    #[argh(option)]
    max_request_rate: Option<String>,
    /// seconds a TCP client may accept no bytes before it is dropped [5]
    #[argh(option)]
    client_stall_timeout: Option<String>,
    /// seconds between stats log lines, 0 = off [0]
    #[argh(option)]
    stats_interval: Option<String>,
    /// USER:PASSWORD[,...] for RTSP and HTTP Basic/Digest authentication (prefer auth-file)
    #[argh(option)]
    auth: Option<String>,
    /// file of [/PATH ]USER:PASSWORD lines
    #[argh(option)]
    auth_file: Option<String>,
    /// error | warn | info | debug | trace [info]
    #[argh(option)]
    log_level: Option<String>,
    /// h264 | mjpeg: payload format of the stream [h264]
    #[argh(option)]
    codec: Option<String>,
    /// JPEG quality 1-100 when frames are JPEG-encoded here [80]
    #[argh(option)]
    jpeg_quality: Option<String>,
    /// HTTP port for /PATH.mjpeg, /PATH.jpg and /, 0 = off [8080]
    #[argh(option)]
    http_port: Option<String>,
    /// HTTP connection slots; when full the longest-idle keep-alive one gives way, else 503 [8]
    #[argh(option)]
    max_http_clients: Option<String>,
    /// HOST:PORT: also push the RTP stream there over UDP, without RTSP
    #[argh(option)]
    rtp_dest: Option<String>,
    /// DSCP of all media packets (UDP RTP/RTCP, RTSP and HTTP connections, multicast, push), e.g. 46; 0 = unmarked [0]
    #[argh(option)]
    dscp: Option<String>,
    /// file to write the SDP a push-mode receiver needs
    #[argh(option)]
    sdp_out: Option<String>,
    /// IPv4/IPv6 multicast group for RTSP clients asking for RTP/AVP;multicast (e.g. 239.255.42.42); empty = off []
    #[argh(option)]
    multicast_group: Option<String>,
    /// even UDP port of the multicast RTP stream, RTCP is port + 1 [5004]
    #[argh(option)]
    multicast_port: Option<String>,
    /// multicast TTL / hop limit 1-255, 1 = the local network only [1]
    #[argh(option)]
    multicast_ttl: Option<String>,
    /// network interface the multicast stream leaves by (e.g. wlan0); empty = the routing table decides []
    #[argh(option)]
    multicast_interface: Option<String>,
    /// print every resolved setting with its origin, then exit
    #[argh(switch)]
    print_config: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// list V4L2 devices with their formats, sizes and frame rates, then exit
    #[argh(switch)]
    list_devices: bool,
}

impl Flags {
    fn apply(&self, raw: &mut RawConfig) {
        let pairs: [(&str, &Option<String>); 37] = [
            ("source", &self.source),
            ("device", &self.device),
            ("pixel-format", &self.pixel_format),
            ("encoder", &self.encoder),
            ("width", &self.width),
            ("height", &self.height),
            ("fps", &self.fps),
            ("bitrate", &self.bitrate),
            ("idr-interval", &self.idr_interval),
            ("listen", &self.listen),
            ("port", &self.port),
            ("path", &self.path),
            ("max-clients", &self.max_clients),
            ("rtp-ports", &self.rtp_ports),
            ("mtu", &self.mtu),
            ("session-timeout", &self.session_timeout),
            ("stall-timeout", &self.stall_timeout),
            ("max-pending-connections", &self.max_pending_connections),
            ("idle-timeout", &self.idle_timeout),
            ("request-timeout", &self.request_timeout),
            ("max-request-rate", &self.max_request_rate),
            ("client-stall-timeout", &self.client_stall_timeout),
            ("stats-interval", &self.stats_interval),
            ("auth", &self.auth),
            ("auth-file", &self.auth_file),
            ("log-level", &self.log_level),
            ("codec", &self.codec),
            ("jpeg-quality", &self.jpeg_quality),
            ("http-port", &self.http_port),
            ("max-http-clients", &self.max_http_clients),
            ("rtp-dest", &self.rtp_dest),
            ("dscp", &self.dscp),
            ("sdp-out", &self.sdp_out),
            ("multicast-group", &self.multicast_group),
            ("multicast-port", &self.multicast_port),
            ("multicast-ttl", &self.multicast_ttl),
            ("multicast-interface", &self.multicast_interface),
        ];
        debug_assert_eq!(pairs.len(), config::KEYS.len());
        for (k, v) in pairs {
            if let Some(v) = v {
                raw.set(k, v, Origin::Flag);
            }
        }
    }
}

/// The kernel command line: `$UAVSTREAM_PROC_CMDLINE` when set (tests, like systemd's
/// `SYSTEMD_PROC_CMDLINE`), else `/proc/cmdline`.
fn kernel_cmdline() -> String {
    std::env::var("UAVSTREAM_PROC_CMDLINE")
        .unwrap_or_else(|_| std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    if flags.version {
        println!("uavstream {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if flags.list_devices {
        return list_devices();
    }
    let mut raw = RawConfig::new();
    raw.apply_cmdline(&kernel_cmdline());
    raw.apply_env(std::env::vars());
    flags.apply(&mut raw);
    let cfg = match raw.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uavstream: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.print_config {
        print!("{}", raw.describe());
        for w in &raw.warnings {
            println!("# warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    let mut logger = env_logger::Builder::new();
    logger.parse_filters(&cfg.log_level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        logger.parse_filters(&filters);
    }
    logger.format_timestamp_millis().init();
    for w in &raw.warnings {
        log::warn!("{w}");
    }

    // Before any thread exists, so every thread inherits the blocked mask.
    // Test-only: SIGUSR1 makes the pipeline look stalled, SIGUSR2 hangs the loop (watchdog tests).
    let fault_injection = std::env::var_os("UAVSTREAM_FAULT_INJECTION").is_some_and(|v| v == "1");
    if fault_injection {
        log::warn!("fault injection enabled (UAVSTREAM_FAULT_INJECTION=1): SIGUSR1 stalls the pipeline, SIGUSR2 hangs the loop");
    }
    let signals = match sys::signalfd(fault_injection) {
        Ok(s) => s,
        Err(e) => {
            log::error!("signalfd: {e}");
            return ExitCode::FAILURE;
        }
    };
    sys::ignore_sigpipe();
    sys::raise_fd_limit();
    let notifier = sys::sd_notify::Notifier::from_env();

    let pipeline = match source::build(&cfg) {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let factory = Box::new(|| source::build(&cfg));
    let credentials: Vec<Credential<'_>> = cfg
        .auth_users
        .iter()
        .map(|u| Credential { user: &u.user, password: &u.password, path: u.path.as_deref() })
        .collect();
    if !credentials.is_empty() {
        log::info!("RTSP authentication on: {} user(s), Digest (MD5) and Basic", credentials.len());
    }
    let mut lp = match event_loop::EventLoop::new(&cfg, signals, pipeline, factory, &credentials, notifier) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match lp.local_addr() {
        Ok(a) => log::info!("serving rtsp://{}:{}{}", display_host(a.ip()), a.port(), cfg.path),
        Err(e) => log::warn!("local address: {e}"),
    }
    if let Some(a) = lp.http_addr() {
        log::info!("serving http://{}:{}/ ({}.mjpeg, {}.jpg)", display_host(a.ip()), a.port(), cfg.path, cfg.path);
    }
    match lp.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "v4l2")]
#[allow(clippy::print_stdout)]
fn list_devices() -> ExitCode {
    print!("{}", source::v4l2::list_devices());
    ExitCode::SUCCESS
}

#[cfg(not(feature = "v4l2"))]
#[allow(clippy::print_stderr)]
fn list_devices() -> ExitCode {
    eprintln!("uavstream: this build has no V4L2 support (cargo feature `v4l2`)");
    ExitCode::from(2)
}

fn display_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".into(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}
