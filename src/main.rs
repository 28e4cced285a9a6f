//! uavstream: low-latency RTSP/RTP camera streaming daemon.
//!
//! Thin: load the configuration, start logging, build the pipeline, run the loop, map the
//! outcome to an exit status (0 clean stop, 1 runtime failure, 2 bad configuration).

use std::process::ExitCode;

use uavstream::config::{self, Origin, RawConfig};
use uavstream::rtsp::auth::Credential;
use uavstream::rtsp::session::StreamRoute;
use uavstream::{event_loop, limits, source, sys};

/// What the command line asks for: switches, and `--KEY VALUE` / `--KEY=VALUE` for every key in
/// [`config::KEYS`] (`--width 1280`, `--stream2-path /low`, `--stream2.path=/low`).
#[derive(Debug, Default)]
struct Flags {
    help: bool,
    version: bool,
    print_config: bool,
    list_devices: bool,
    values: Vec<(String, String)>,
}

impl Flags {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--help" | "-h" | "help" => flags.help = true,
                "--version" => flags.version = true,
                "--print-config" => flags.print_config = true,
                "--list-devices" => flags.list_devices = true,
                _ => {
                    let Some(name) = arg.strip_prefix("--") else {
                        return Err(format!("unexpected argument {arg:?} (flags are --KEY VALUE; see --help)"));
                    };
                    let (name, value) = match name.split_once('=') {
                        Some((n, v)) => (n.to_owned(), v.to_owned()),
                        None => {
                            let v = args.next().ok_or_else(|| format!("--{name} needs a value"))?;
                            (name.to_owned(), v)
                        }
                    };
                    if config::KeyRef::lookup(&name).is_none() {
                        return Err(format!("unknown flag --{name} (see --help)"));
                    }
                    flags.values.push((name, value));
                }
            }
        }
        Ok(flags)
    }

    fn apply(&self, raw: &mut RawConfig) {
        for (k, v) in &self.values {
            raw.set(k, v, Origin::Flag);
        }
    }
}

/// `--help`: generated from the key table, so it lists every key once.
fn usage() -> String {
    use config::Scope;
    let mut s = String::from(
        "Usage: uavstream [--KEY VALUE]... [--print-config] [--list-devices] [--version]\n\n\
         Low-latency RTSP/RTP camera streaming daemon for embedded Linux.\n\n\
         Every key is also an environment variable (UAVSTREAM_WIDTH=1280) and a kernel command-line\n\
         key (uavstream.width=1280). Precedence: defaults < kernel command line < environment < flags.\n\
         Further cameras and streams: cameraN.KEY and streamN.KEY (N = 2, 3, ...), e.g.\n\
         --stream2-path /low = UAVSTREAM_STREAM2_PATH=/low = uavstream.stream2.path=/low.\n",
    );
    for (scope, title) in [
        (Scope::Camera, "Camera keys (plain: the first camera; cameraN.KEY)"),
        (Scope::Stream, "Stream keys (plain: the first stream; streamN.KEY)"),
        (Scope::Global, "Global keys"),
    ] {
        s.push_str(&format!("\n{title}:\n"));
        for k in config::KEYS.iter().filter(|k| k.scope == scope) {
            let name = if k.plain { k.name.to_owned() } else { format!("streamN.{}", k.name) };
            let default = if k.default.is_empty() { String::new() } else { format!(" [{}]", k.default) };
            s.push_str(&format!("  --{name:<24} {}{default}\n", k.help));
        }
    }
    s.push_str(
        "\nSwitches:\n  --print-config             print every resolved setting with its origin, then exit\n  \
         --list-devices             list V4L2 devices and libcamera cameras with their formats, sizes and rates, then exit\n  \
         --version                  print the version and exit\n",
    );
    s
}

/// The kernel command line: `$UAVSTREAM_PROC_CMDLINE` when set (tests, like systemd's
/// `SYSTEMD_PROC_CMDLINE`), else `/proc/cmdline`.
fn kernel_cmdline() -> String {
    std::env::var("UAVSTREAM_PROC_CMDLINE")
        .unwrap_or_else(|_| std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("uavstream: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.help {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
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
    export_tuning_file(&cfg);

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
    let fd_limit = sys::raise_fd_limit();
    let fds = limits::fds_needed(cfg.max_clients, cfg.max_pending_connections, cfg.max_http_clients);
    if fd_limit != 0 && fd_limit < fds as u64 {
        log::error!(
            "max-clients {} needs about {fds} file descriptors (two UDP sockets per session slot, one per connection) \
             but the open-file limit is {fd_limit}: raise it (systemd: LimitNOFILE=) or lower max-clients",
            cfg.max_clients
        );
        return ExitCode::from(2);
    }
    let notifier = sys::sd_notify::Notifier::from_env();

    let mut pipelines: Vec<Box<dyn source::Pipeline>> = Vec::with_capacity(cfg.streams.len());
    for (i, st) in cfg.streams.iter().enumerate() {
        // A camera's further streams learn its frame layout from the stream that captures it.
        let first = cfg.streams.iter().position(|s| s.camera == st.camera).unwrap_or(i);
        let camera_layout = pipelines.get(first).filter(|_| first < i).and_then(|p| p.raw_layout());
        match source::build_with(&cfg.pipeline(i), camera_layout) {
            Ok(p) => pipelines.push(p),
            Err(e) => {
                log::error!("{} ({}): {e}", st.name, st.path);
                return ExitCode::from(2);
            }
        }
    }
    let factory = Box::new(|i: usize, camera| source::build_with(&cfg.pipeline(i), camera));
    let routes: Vec<StreamRoute<'_>> = cfg.streams.iter().map(|st| st.rtsp_route()).collect();
    let credentials: Vec<Credential<'_>> = cfg
        .auth_users
        .iter()
        .map(|u| Credential { user: &u.user, password: &u.password, path: u.path.as_deref() })
        .collect();
    if !credentials.is_empty() {
        log::info!("RTSP authentication on: {} user(s), Digest (MD5) and Basic", credentials.len());
    }
    let mut lp = match event_loop::EventLoop::new(&cfg, &routes, signals, pipelines, factory, &credentials, notifier) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for st in &cfg.streams {
        match lp.local_addr() {
            Ok(a) => log::info!("serving rtsp://{}:{}{}", display_host(a.ip()), a.port(), st.path),
            Err(e) => log::warn!("local address: {e}"),
        }
    }
    if let Some(a) = lp.http_addr() {
        let paths: Vec<String> = cfg.streams.iter().map(|st| format!("{0}.mjpeg, {0}.jpg", st.path)).collect();
        log::info!("serving http://{}:{}/ ({})", display_host(a.ip()), a.port(), paths.join(", "));
    }
    match lp.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// V4L2 devices and libcamera cameras, as far as this build has them.
#[cfg(any(feature = "v4l2", feature = "libcamera"))]
#[allow(clippy::print_stdout)]
fn list_devices() -> ExitCode {
    #[cfg(feature = "v4l2")]
    print!("{}", source::v4l2::list_devices());
    #[cfg(feature = "libcamera")]
    print!("{}", source::libcamera::list_devices());
    ExitCode::SUCCESS
}

#[cfg(not(any(feature = "v4l2", feature = "libcamera")))]
#[allow(clippy::print_stderr)]
fn list_devices() -> ExitCode {
    eprintln!(
        "uavstream: this build has no V4L2 support (cargo feature `v4l2`) and no libcamera support (`libcamera`)"
    );
    ExitCode::from(2)
}

/// `tuning-file`: libcamera's Raspberry Pi IPA reads `LIBCAMERA_RPI_TUNING_FILE` when it starts,
/// so it is set here, before any thread exists. One file serves every camera of the process.
fn export_tuning_file(cfg: &uavstream::config::Config) {
    let mut files = cfg
        .cameras
        .iter()
        .filter(|c| c.source == uavstream::config::SourceSpec::Libcamera)
        .filter_map(|c| c.libcamera.tuning_file.as_ref().map(|f| (c.name.as_str(), f)));
    let Some((name, file)) = files.next() else { return };
    std::env::set_var("LIBCAMERA_RPI_TUNING_FILE", file);
    log::info!("{name}: tuning file {} (LIBCAMERA_RPI_TUNING_FILE)", file.display());
    for (other, f) in files.filter(|(_, f)| *f != file) {
        log::warn!("{other}: tuning-file {} ignored: libcamera takes one tuning file per process", f.display());
    }
}

fn display_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".into(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}
