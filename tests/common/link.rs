//! An emulated radio link for tests and benchmarks: a network namespace joined to the host's
//! by a veth pair, with random loss (nftables `numgen random`) and a rate cap (`tc tbf`) on
//! either side, changeable while traffic flows. This kernel has no `netem` (see FIELD-NOTES):
//! loss is dropped on the receiving side's input hook (an output-hook drop would be an EPERM to
//! the sender, not a loss), and the far side's veth has UDP segmentation off, so one netfilter
//! drop is one datagram, not a whole GSO run.
//!
//! ```text
//!   host namespace                          namespace `ns` (the daemon: Link::command)
//!   host_if  host_addr/30  <── veth ──>  ns_addr/30  ns_if
//!   loss(Side::Host): input of host_if      loss(Side::Ns): input of ns_if
//!   rate(Side::Host): egress of host_if     rate(Side::Ns): egress of ns_if
//! ```
//!
//! Everything is torn down on drop (the namespace, which takes the veth pair with it, and the
//! host-side nftables table). Names and addresses (198.18.0.0/15, RFC 2544's benchmarking range)
//! are unique per process and link, so tests and benchmarks can run side by side.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host's namespace (where the test process and, usually, the clients run).
    Host,
    /// The link's own namespace (where the daemon usually runs).
    Ns,
}

#[derive(Debug)]
pub struct Link {
    pub ns: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
    /// nftables table (inet family) of each side, when it has one.
    table: String,
    tables: [bool; 2],
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out)
}

fn sh(args: &[&str]) -> Result<Output, String> {
    run(Command::new(args[0]).args(&args[1..]))
}

impl Link {
    /// Why links cannot be made here (not root, no `ip`/`nft`/`tc`/`ethtool`, no namespaces),
    /// or `None` when they can. Tests print the reason and skip.
    pub fn unavailable() -> Option<String> {
        if !nix_is_root() {
            return Some("emulated links need root (network namespaces, nftables, tc)".into());
        }
        for tool in ["ip", "nft", "tc", "ethtool"] {
            if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
                return Some(format!("emulated links need `{tool}` (apt-get install iproute2 nftables ethtool)"));
            }
        }
        let probe = format!("uvprobe{}", std::process::id());
        match sh(&["ip", "netns", "add", &probe]) {
            Ok(_) => {
                let _ = sh(&["ip", "netns", "del", &probe]);
                None
            }
            Err(e) => Some(format!("no network namespaces here: {e}")),
        }
    }

    /// A new namespace and veth pair, up and addressed; no loss, no cap.
    pub fn new() -> Result<Link, String> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{}", pid & 0xfffff, n % 10);
        // 198.18.0.0/15 in /30s: (pid mod 4096) × 8 links per process.
        let index = ((pid % 4096) * 8 + n % 8) * 4;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index;
        let link = Link {
            ns: format!("uvlink{tag}"),
            host_if: format!("uvh{tag}"),
            ns_if: format!("uvn{tag}"),
            host_addr: Ipv4Addr::from(base + 1),
            ns_addr: Ipv4Addr::from(base + 2),
            table: format!("uvlink{tag}"),
            tables: [false; 2],
        };
        // Leftovers of a killed run with the same name.
        let _ = sh(&["ip", "netns", "del", &link.ns]);
        let _ = sh(&["ip", "link", "del", &link.host_if]);
        sh(&["ip", "netns", "add", &link.ns])?;
        sh(&["ip", "link", "add", &link.host_if, "type", "veth", "peer", "name", &link.ns_if, "netns", &link.ns])?;
        sh(&["ip", "addr", "add", &format!("{}/30", link.host_addr), "dev", &link.host_if])?;
        sh(&["ip", "link", "set", &link.host_if, "up"])?;
        link.in_ns(&["ip", "addr", "add", &format!("{}/30", link.ns_addr), "dev", &link.ns_if])?;
        link.in_ns(&["ip", "link", "set", &link.ns_if, "up"])?;
        link.in_ns(&["ip", "link", "set", "lo", "up"])?;
        // One datagram per skb on both sides (see the module docs).
        for side in [Side::Host, Side::Ns] {
            link.on(side, &["ethtool", "-K", link.iface(side), "tx-udp-segmentation", "off", "gso", "off"])?;
        }
        Ok(link)
    }

    fn iface(&self, side: Side) -> &str {
        match side {
            Side::Host => &self.host_if,
            Side::Ns => &self.ns_if,
        }
    }

    /// The address of `side` (where a daemon on that side listens).
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::Host => self.host_addr,
            Side::Ns => self.ns_addr,
        }
    }

    fn in_ns(&self, args: &[&str]) -> Result<Output, String> {
        run(Command::new("ip").args(["netns", "exec", &self.ns]).args(args))
    }

    fn on(&self, side: Side, args: &[&str]) -> Result<Output, String> {
        match side {
            Side::Host => sh(args),
            Side::Ns => self.in_ns(args),
        }
    }

    /// A command that runs `program` inside the link's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Drops `percent` % of the UDP datagrams arriving at `side` (0 = none), at random. TCP (the
    /// RTSP connection) is left alone, so a test's set-up never depends on luck.
    pub fn set_loss(&mut self, side: Side, percent: u32) -> Result<(), String> {
        let k = side as usize;
        let iface = self.iface(side).to_owned();
        if self.tables[k] {
            self.on(side, &["nft", "delete", "table", "inet", &self.table])?;
            self.tables[k] = false;
        }
        if percent == 0 {
            return Ok(());
        }
        let t = self.table.clone();
        self.on(side, &["nft", "add", "table", "inet", &t])?;
        self.tables[k] = true;
        self.on(side, &["nft", "add", "chain", "inet", &t, "input", "{ type filter hook input priority 0; }"])?;
        let rule = format!("iifname \"{iface}\" meta l4proto udp numgen random mod 100 < {percent} counter drop");
        self.on(side, &["nft", "add", "rule", "inet", &t, "input", &rule])?;
        Ok(())
    }

    /// Datagrams dropped so far at `side` by the loss rule.
    pub fn dropped(&self, side: Side) -> u64 {
        if !self.tables[side as usize] {
            return 0;
        }
        let Ok(out) = self.on(side, &["nft", "list", "table", "inet", &self.table]) else { return 0 };
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Caps what `side` sends at `kbit` kbit/s (token bucket, 200 ms of queue — a radio modem's
    /// buffer: beyond it packets drop), or lifts the cap (`None`). May be called while traffic
    /// flows.
    pub fn set_rate(&self, side: Side, kbit: Option<u32>) -> Result<(), String> {
        let iface = self.iface(side);
        match kbit {
            None => {
                let _ = self.on(side, &["tc", "qdisc", "del", "dev", iface, "root"]);
                Ok(())
            }
            Some(k) => {
                // Burst: 20 ms at the rate, at least ~11 MTU-sized packets (128 kbit).
                let burst = (k / 50).max(128);
                self.on(
                    side,
                    &[
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        iface,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{k}kbit"),
                        "burst",
                        &format!("{burst}kbit"),
                        "latency",
                        "200ms",
                    ],
                )
                .map(|_| ())
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The namespace takes its veth end, and with it the host end; its nft table goes too.
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        if self.tables[Side::Host as usize] {
            let _ = sh(&["nft", "delete", "table", "inet", &self.table]);
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
