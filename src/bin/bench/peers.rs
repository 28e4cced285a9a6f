//! The servers under test, as processes: uavstream (this build's release binary) and
//! gst-rtsp-server (Debian's, through python3-gi, a shared media factory). CPU time and RSS come
//! from /proc.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const GST_SERVER_PY: &str = r#"
import sys, gi
gi.require_version('Gst', '1.0')
gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
port, launch = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(True)
server.get_mount_points().add_factory('/live', factory)
server.attach(None)
print('ready', flush=True)
GLib.MainLoop().run()
"#;

pub struct Server {
    pub name: &'static str,
    child: Child,
    pub url: String,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Server {
    pub fn uavstream(bin: &Path, port: u16, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1", "--port", &port.to_string(), "--stats-interval", "1"])
            .args(["--max-clients", "400", "--rtp-ports", "40000-40999", "--max-pending-connections", "400"])
            .args(if args.contains(&"--http-port") { &[][..] } else { &["--http-port", "0"][..] })
            .args(args)
            .env("UAVSTREAM_PROC_CMDLINE", "")
            .env("RUST_LOG", "uavstream=info");
        Self::spawn("uavstream", cmd, port)
    }

    pub fn gst(script: &Path, port: u16, launch: &str) -> Server {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).arg(port.to_string()).arg(launch);
        Self::spawn("gst-rtsp-server", cmd, port)
    }

    fn spawn(name: &'static str, mut cmd: Command, port: u16) -> Server {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = log2.lock() {
                    l.push((Instant::now(), line));
                }
            }
        });
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(20) || child.try_wait().ok().flatten().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                let lines: Vec<String> =
                    log.lock().map(|l| l.iter().map(|(_, s)| s.clone()).collect()).unwrap_or_default();
                panic!("{name} did not start:\n{}", lines.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { name, child, url: format!("rtsp://127.0.0.1:{port}/live"), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The word after `prefix` in the newest log line containing it.
    pub fn last_log_field(&self, prefix: &str) -> Option<String> {
        let log = self.log.lock().ok()?;
        log.iter().rev().find_map(|(_, l)| Some(l.split(prefix).nth(1)?.split_whitespace().next()?.to_owned()))
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().map_or(0, |l| l.iter().filter(|(_, s)| s.contains(needle)).count())
    }

    /// System (kernel) CPU time in clock ticks (1/100 s).
    pub fn sys_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        after.split_whitespace().nth(12).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// User + system CPU time in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Server-added latency from uavstream's `stats:` lines logged between `from` and `to`:
    /// (median of the p50s, max of the p99s, max) in microseconds.
    pub fn latency_us(&self, from: Instant, to: Instant) -> Option<(u64, u64, u64)> {
        let log = self.log.lock().ok()?;
        let mut p50s = Vec::new();
        let (mut p99, mut max) = (0, 0);
        for (t, line) in log.iter().filter(|(t, _)| *t >= from && *t <= to) {
            let _ = t;
            let Some(rest) = line.split("server latency").nth(1) else { continue };
            let num = |key: &str| -> Option<u64> { rest.split(key).nth(1)?.split_whitespace().next()?.parse().ok() };
            p50s.push(num(" p50 ")?);
            p99 = p99.max(num(" p99 ")?);
            max = max.max(num(" max ")?);
        }
        if p50s.is_empty() {
            return None;
        }
        p50s.sort_unstable();
        Some((p50s[p50s.len() / 2], p99, max))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the gst-rtsp-server script into `dir`.
pub fn gst_script(dir: &Path) -> PathBuf {
    let p = dir.join("gst_rtsp_server.py");
    std::fs::write(&p, GST_SERVER_PY).expect("write script");
    p
}

/// Whether Debian's gst-rtsp-server bindings are usable.
pub fn gst_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
