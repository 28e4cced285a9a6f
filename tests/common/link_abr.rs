//! An emulated link for tests: the daemon in its own network namespace, joined to the test's
//! namespace by a veth pair, with a rate cap (`tc tbf`) on the daemon's side (daemon → clients)
//! and random loss (nftables `numgen random`) on the clients' input. This kernel has no `netem`;
//! see FIELD-NOTES "Lossy links and bitrate". Needs root.
//!
//! Kept small and general so it can merge with `tests/common/link.rs`: create, cap the rate live,
//! set the loss live, run a command inside, everything removed on drop.
//!
//! Invariants: every name (namespace, interfaces, nftables table) carries this process's id and a
//! counter, so parallel tests never share one; UDP segmentation offload is off on the daemon's
//! interface, so a drop removes one packet, not a frame's worth (FIELD-NOTES).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether the emulated link can be made here (root); otherwise the reason, to print.
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
    });
    (uid.as_deref() != Some("0")).then(|| "not root: network namespaces, tc and nftables need it".to_owned())
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// One veth link between the test (host side) and a namespace (daemon side).
pub struct Link {
    pub ns: String,
    /// The daemon's interface (in `ns`) and the test's.
    pub ns_if: String,
    pub host_if: String,
    pub ns_addr: Ipv4Addr,
    pub host_addr: Ipv4Addr,
    table: String,
    loss_on: bool,
}

impl Link {
    /// Creates the namespace and the veth pair, addressed and up, no cap, no loss.
    pub fn create() -> Result<Link, String> {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{n}", pid % 100_000);
        // A /30 per link: 10.213.X.Y, X and Y from the pid and counter.
        let k = (pid.wrapping_mul(8).wrapping_add(n * 4)) % (256 * 64);
        let (x, y) = ((k / 64) as u8, ((k % 64) * 4) as u8);
        let link = Link {
            ns: format!("uavs-l{id}"),
            ns_if: format!("ul{id}a"),
            host_if: format!("ul{id}b"),
            ns_addr: Ipv4Addr::new(10, 213, x, y + 1),
            host_addr: Ipv4Addr::new(10, 213, x, y + 2),
            table: format!("uavs_l{id}"),
            loss_on: false,
        };
        let (ns, a, b) = (link.ns.as_str(), link.ns_if.as_str(), link.host_if.as_str());
        run(&["ip", "netns", "add", ns])?;
        // From here on, Drop cleans up whatever was made.
        run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b])?;
        run(&["ip", "link", "set", a, "netns", ns])?;
        run(&["ip", "-n", ns, "addr", "add", &format!("{}/30", link.ns_addr), "dev", a])?;
        run(&["ip", "-n", ns, "link", "set", a, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        run(&["ip", "addr", "add", &format!("{}/30", link.host_addr), "dev", b])?;
        run(&["ip", "link", "set", b, "up"])?;
        run(&["ip", "netns", "exec", ns, "ethtool", "-K", a, "tx-udp-segmentation", "off", "gso", "off"])?;
        Ok(link)
    }

    /// Caps the daemon → clients direction at `kbit` kbit/s (`None`: no cap), at once, with a
    /// 200 ms queue (a radio's buffer; IDR bursts fit, a lasting excess is dropped).
    pub fn set_rate(&self, kbit: Option<u32>) -> Result<(), String> {
        let (ns, a) = (self.ns.as_str(), self.ns_if.as_str());
        match kbit {
            None => {
                let _ = run(&["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", a, "root"]);
                Ok(())
            }
            Some(k) => {
                let rate = format!("{k}kbit");
                run(&[
                    "ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", a, "root", "tbf", "rate", &rate,
                    "burst", "16kb", "latency", "200ms",
                ])
            }
        }
    }

    /// Drops `percent` % of the packets the test's side receives, at random (0: none).
    pub fn set_loss(&mut self, percent: u32) -> Result<(), String> {
        let t = self.table.as_str();
        if self.loss_on {
            run(&["nft", "delete", "table", "inet", t])?;
            self.loss_on = false;
        }
        if percent == 0 {
            return Ok(());
        }
        run(&["nft", "add", "table", "inet", t])?;
        self.loss_on = true;
        run(&["nft", "add", "chain", "inet", t, "input", "{ type filter hook input priority 0 ; }"])?;
        let rule = format!("iifname \"{}\" numgen random mod 100 < {percent} drop", self.host_if);
        run(&["nft", "add", "rule", "inet", t, "input", &rule])
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.loss_on {
            let _ = run(&["nft", "delete", "table", "inet", &self.table]);
        }
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

/// The daemon's RTSP and HTTP ports inside a link's namespace (it has the namespace to itself).
pub const RTSP_PORT: u16 = 8554;
pub const HTTP_PORT: u16 = 8080;

impl Link {
    /// Starts the daemon inside the namespace, listening on all its addresses; ready when its
    /// RTSP port answers across the link.
    pub fn start_daemon(&self, args: &[&str]) -> super::Daemon {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        use std::sync::{Arc, Mutex};
        use std::time::{Duration, Instant};
        let mut cmd = self.command(env!("CARGO_BIN_EXE_uavstream"));
        cmd.args(["--listen", "0.0.0.0", "--port", &RTSP_PORT.to_string(), "--http-port", &HTTP_PORT.to_string()])
            .args(args)
            .env("UAVSTREAM_PROC_CMDLINE", "")
            .env("RUST_LOG", "uavstream=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start uavstream in the namespace");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut d = super::Daemon { child, port: RTSP_PORT, http_port: HTTP_PORT, log };
        let t = Instant::now();
        while std::net::TcpStream::connect((self.ns_addr, RTSP_PORT)).is_err() {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("uavstream exited with {status} before listening:\n{}", d.log());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "uavstream did not listen within 20 s:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// `rtsp://` URL of the daemon's `path` across the link.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}:{RTSP_PORT}{path}", self.ns_addr)
    }

    /// The body of `GET path` from the daemon's HTTP port across the link (empty on failure).
    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        use std::time::Duration;
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&(self.ns_addr, HTTP_PORT).into(), Duration::from_secs(3))
        else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
    }
}

/// The number after `"key":` in `json`, from the first occurrence after `after` (a plain scan:
/// enough for the daemon's own /status).
pub fn json_number(json: &str, after: &str, key: &str) -> Option<f64> {
    let start = json.find(after)?;
    let pat = format!("\"{key}\":");
    let at = start + json[start..].find(&pat)? + pat.len();
    let end = json[at..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).map_or(json.len(), |e| at + e);
    json[at..end].parse().ok()
}
