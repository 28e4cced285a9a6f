#!/usr/bin/env python3
"""Host side of rig/init-systems: boots one guest and checks the shipped init files in it.

    init-systems.py systemd|busybox VMLINUZ INITRAMFS CONSOLE_LOG

The guest runs a command server on port 9000 (busybox `nc -l -p 9000 -e rig-cmd`): one
connection, one shell command line in, its output and `RIG-RC=<status>` out. Port 8554 (RTSP)
is forwarded too. Real clients only: ffprobe decodes the stream; the RTCP BYE check is a plain
RTSP-over-TCP client here (RFC 2326 interleaved framing), since that is the one place where
a BYE sent at shutdown can be seen on the host without a packet capture.
Every wait is bounded; the whole run is bounded by the caller's timeout too.
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtsp_check import RtspTcpClient, free_port, setup, until  # noqa: E402
from rtsp_check import ffprobe as probe  # noqa: E402

KIND, VMLINUZ, INITRD, CONSOLE = sys.argv[1:5]
T0 = time.monotonic()


def log(msg):
    print(f"== {KIND} [{time.monotonic() - T0:.0f} s] {msg}", flush=True)


RTSP_PORT, CMD_PORT = free_port(), free_port()
COMMON = ("console=ttyS0 panic=-1 loglevel=4 uavstream.source=v4l2 uavstream.device=auto "
          "uavstream.width=320 uavstream.height=180 uavstream.fps=15 uavstream.pixel-format=NV12 "
          "uavstream.bitrate=500k uavstream.log-level=info")
if KIND == "systemd":
    APPEND = COMMON + " rdinit=/lib/systemd/systemd systemd.show_status=auto"
    PATH = "/live"
else:
    APPEND = COMMON + " rdinit=/sbin/init"
    PATH = "/busybox"  # from /etc/default/uavstream (UAVSTREAM_PATH), the rest from the cmdline

qemu = subprocess.Popen(
    ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-smp", "1", "-nographic",
     "-no-reboot", "-kernel", VMLINUZ, "-initrd", INITRD, "-append", APPEND,
     "-nic", f"user,model=e1000,hostfwd=tcp:127.0.0.1:{RTSP_PORT}-:8554,"
             f"hostfwd=tcp:127.0.0.1:{CMD_PORT}-:9000"],
    stdin=subprocess.DEVNULL, stdout=open(CONSOLE, "wb"), stderr=subprocess.STDOUT)


def fail(msg):
    print(f"init-systems {KIND}: FAIL: {msg}", file=sys.stderr, flush=True)
    try:
        print("---- guest console (last 80 lines) ----", file=sys.stderr)
        print("\n".join(open(CONSOLE, errors="replace").read().splitlines()[-80:]), file=sys.stderr)
    except OSError:
        pass
    qemu.kill()
    sys.exit(1)


setup(log, fail)


def guest(cmd, timeout=60, check=True, booting=False):
    """Runs `cmd` in the guest (as root); returns (status, output)."""
    # Between two connections the server is not listening for a moment: the guest refuses
    # (the host sees a reset or an empty answer) and the command has not run. Try again.
    for attempt in range(20):
        try:
            return _guest(cmd, timeout, check)
        except (OSError, ConnectionError) as e:
            if booting or isinstance(e, socket.timeout):
                if booting:
                    raise
                fail(f"guest command {cmd!r}: {e}")
            err = e
            time.sleep(0.5)
    fail(f"guest command {cmd!r}: {err}")


def _guest(cmd, timeout, check):
    s = socket.create_connection(("127.0.0.1", CMD_PORT), timeout=timeout)
    s.sendall(cmd.encode() + b"\n")
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    finally:
        s.close()
    text = out.decode(errors="replace")
    m = re.search(r"RIG-RC=(\d+)\s*$", text)
    if not m:
        if text:
            fail(f"no status from the guest for {cmd!r}: {text!r}")
        raise ConnectionError(f"no answer from the guest for {cmd!r}")
    rc, text = int(m.group(1)), text[:m.start()]
    if check and rc != 0:
        fail(f"guest command failed ({rc}): {cmd}\n{text}")
    return rc, text


def wait_guest(seconds):
    """Waits for the command server (the guest has booted that far)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if qemu.poll() is not None:
            fail("the guest stopped")
        try:
            return guest("true", timeout=20, booting=True)
        except (OSError, ConnectionError):
            time.sleep(2)
    fail(f"the guest's command server did not answer within {seconds} s")


def ffprobe(frames):
    probe(f"rtsp://127.0.0.1:{RTSP_PORT}{PATH}", (320, 180), frames, timeout=90)


def bye_on_stop(stop_cmd):
    """A TCP client plays; `stop_cmd` runs in the guest; the client must get an RTCP BYE."""
    c = RtspTcpClient("127.0.0.1", RTSP_PORT, PATH)
    c.play()
    until("30 RTP packets on the RTSP TCP client", 60, lambda: c.packets() >= 30)
    before = c.rtcp_count()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=guest(stop_cmd, timeout=90)))
    t.start()
    end = time.monotonic() + 60
    while not c.is_closed() and time.monotonic() < end:
        time.sleep(0.2)
    t.join()
    log(f"`{stop_cmd}`: client got {c.packets()} RTP and {c.rtcp_count()} RTCP packets "
        f"({c.rtcp_count() - before} after the stop), connection closed: {c.is_closed()}, BYE: {c.saw_bye()}")
    if not c.saw_bye():
        fail(f"no RTCP BYE reached the playing client on `{stop_cmd}`")
    if not c.is_closed():
        fail(f"the connection stayed open after `{stop_cmd}`")
    return result["r"][1]


def systemd_checks():
    wait_guest(300)
    log("guest up; command server answers")

    def state():
        _, out = guest("systemctl show -p ActiveState,SubState,NRestarts,MainPID,Result uavstream")
        return dict(line.split("=", 1) for line in out.split())

    def running():
        s = state()
        return s if (s["ActiveState"], s["SubState"]) == ("active", "running") else None

    s = until("uavstream active/running (READY=1)", 120, running)
    log(f"systemctl show: {s}")
    pid = s["MainPID"]
    _, out = guest(f"stat -c %U /proc/{pid}; id uavstream; systemctl show -p Type,NotifyAccess,WatchdogUSec uavstream")
    log("main process user / account / unit: " + " | ".join(out.split("\n")))
    if out.split("\n")[0] != "uavstream":
        fail(f"the daemon does not run as user uavstream: {out}")
    if "(video)" not in out:
        fail("systemd-sysusers did not put uavstream in group video")
    if "Type=notify" not in out:
        fail("the unit is not Type=notify")
    _, out = guest("ls -l /dev/video*; journalctl -b -u uavstream -o cat --no-pager | head -20")
    print(out)
    if not re.search(r"source: .*/dev/video0", out):
        fail("the daemon did not open vivid's /dev/video0 under the shipped hardening")

    ffprobe(45)

    n0 = int(s["NRestarts"])
    log("hung loop: SIGUSR2 every 3 s (each hangs the loop 5 s) until the watchdog (WatchdogSec=10) kills it")
    guest(f"for i in 1 2 3 4 5 6 7 8; do kill -USR2 {pid} 2>/dev/null || break; sleep 3; done; true", timeout=60)
    s = until("restart after the watchdog", 90,
              lambda: (r := running()) and int(r["NRestarts"]) > n0 and r["MainPID"] != pid and r)
    _, out = guest("journalctl -b -u uavstream -o cat --no-pager | grep -i -e watchdog -e 'fault injection' | tail -5")
    print(out)
    if "Watchdog timeout" not in out:
        fail("no 'Watchdog timeout' in the journal")
    log(f"watchdog killed pid {pid} and systemd restarted it: {s}")
    ffprobe(30)

    for sig in ("SEGV", "KILL"):
        pid, n0 = s["MainPID"], int(s["NRestarts"])
        # A SIGSEGV sent with kill(2) is not a fault: Rust's runtime (its stack-overflow handler)
        # sees no guard-page address, puts the default action back and returns, so the first one
        # is survived and a second one kills, as a real fault (which re-executes) would at once.
        _, out = guest(f"kill -{sig} {pid}; sleep 2; if kill -0 {pid} 2>/dev/null; then "
                       f"echo 'still alive: sent again'; kill -{sig} {pid}; fi; true")
        if out.strip():
            log(f"SIG{sig}: {out.strip()}")
        s = until(f"restart after SIG{sig}", 90,
                  lambda: (r := running()) and int(r["NRestarts"]) > n0 and r["MainPID"] != pid and r)
        _, out = guest("journalctl -b -u uavstream -o cat --no-pager | grep -e 'Main process exited' | tail -1")
        log(f"SIG{sig} on pid {pid}: {out.strip()} -> restarted: {s}")
        if f"status={ {'SEGV': 11, 'KILL': 9}[sig] }/{sig}" not in out:
            fail(f"the journal does not say the daemon died of SIG{sig}")

    out = bye_on_stop("systemctl stop uavstream")
    s = state()
    log(f"after systemctl stop: {s}")
    if (s["ActiveState"], s["SubState"], s["Result"]) != ("inactive", "dead", "success"):
        fail(f"systemctl stop was not clean: {s}")
    _, out = guest("journalctl -b -u uavstream -o cat --no-pager | grep -e 'signal 15' -e 'Stopped' | tail -2")
    print(out)
    if "signal 15: stopping" not in out:
        fail("the daemon did not log its SIGTERM shutdown")
    guest("systemctl start uavstream")
    until("active again after systemctl start", 60, running)
    log("systemd: all checks passed")


def busybox_checks():
    wait_guest(180)
    log("guest up; command server answers")
    _, out = guest("cat /tmp/rcS.log")
    print(out)
    if "Starting uavstream: OK" not in out:
        fail("rcS did not start S99uavstream")

    def pid():
        rc, out = guest("cat /var/run/uavstream.pid && kill -0 $(cat /var/run/uavstream.pid)", check=False)
        return out.strip() if rc == 0 else None

    p0 = until("the daemon's pid file", 60, pid)
    _, out = guest(f"tr '\\0' '\\n' </proc/{p0}/environ | grep ^UAVSTREAM_; grep -o 'uavstream[.][^ ]*' /proc/cmdline")
    log("daemon environment (from /etc/default/uavstream) and kernel command line: " + " ".join(out.split()))
    if "UAVSTREAM_PATH=/busybox" not in out:
        fail("/etc/default/uavstream did not reach the daemon")
    until("RTSP answers", 60, lambda: subprocess.run(
        ["timeout", "20", "ffprobe", "-v", "quiet", "-rtsp_transport", "tcp", f"rtsp://127.0.0.1:{RTSP_PORT}{PATH}"]
    ).returncode == 0)
    ffprobe(45)  # 320x180 (the default is 1280x720): size and source came from the command line

    _, out = guest("/etc/init.d/S99uavstream restart")
    log(f"S99uavstream restart: {' '.join(out.split())}")
    p1 = until("the restarted daemon's pid file", 60, pid)
    if p1 == p0 or "Stopping uavstream: OK" not in out or "Starting uavstream: OK" not in out:
        fail(f"restart did not replace the daemon (pid {p0} -> {p1}): {out}")
    ffprobe(30)

    out = bye_on_stop("/etc/init.d/S99uavstream stop")
    log(f"S99uavstream stop: {' '.join(out.split())}")
    _, out = guest("if pidof uavstream; then echo running; fi; "
                   "if [ -e /var/run/uavstream.pid ]; then echo pid file; fi")
    if out.strip():
        fail(f"the daemon or its pid file is still there after stop: {out}")
    _, out = guest("/etc/init.d/S99uavstream start")
    until("the daemon after start", 60, pid)
    ffprobe(30)
    log("busybox init: all checks passed")


try:
    (systemd_checks if KIND == "systemd" else busybox_checks)()
finally:
    qemu.kill()
    qemu.wait()
