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
import re
import socket
import subprocess
import sys
import threading
import time

KIND, VMLINUZ, INITRD, CONSOLE = sys.argv[1:5]
T0 = time.monotonic()


def log(msg):
    print(f"== {KIND} [{time.monotonic() - T0:.0f} s] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


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


def until(what, seconds, fn):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(1)
    fail(f"{what}: not within {seconds} s")


def ffprobe(frames):
    url = f"rtsp://127.0.0.1:{RTSP_PORT}{PATH}"
    r = subprocess.run(["timeout", "90", "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams",
                        "v:0", "-count_frames", "-read_intervals", f"%+#{frames}", "-show_entries",
                        "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", url],
                       capture_output=True, text=True)
    out = r.stdout.strip()
    log(f"ffprobe {url}: {out or r.stderr.strip()}")
    f = out.split(",")
    if len(f) < 4 or f[:3] != ["h264", "320", "180"] or not f[3].isdigit() or int(f[3]) < frames * 2 // 3:
        fail(f"ffprobe did not decode {frames * 2 // 3} frames of 320x180 H.264 from {url}: {out} {r.stderr}")


class RtspTcpClient:
    """DESCRIBE/SETUP (interleaved)/PLAY over one TCP connection; records what comes back."""

    def __init__(self):
        self.url = f"rtsp://127.0.0.1:{RTSP_PORT}{PATH}"
        self.s = socket.create_connection(("127.0.0.1", RTSP_PORT), timeout=30)
        self.buf = b""
        self.cseq = 0
        self.rtp = 0
        self.rtcp = []
        self.closed = False

    def request(self, method, url, headers=""):
        self.cseq += 1
        self.s.sendall(f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{headers}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        head = head.decode(errors="replace")
        n = int((re.search(r"(?im)^content-length:\s*(\d+)", head) or [0, 0])[1])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n].decode(errors="replace"), self.buf[n:]
        if not head.startswith("RTSP/1.0 200"):
            fail(f"{method} answered: {head.splitlines()[0]}")
        return head, body

    def _fill(self):
        b = self.s.recv(65536)
        if not b:
            raise EOFError
        self.buf += b

    def play(self):
        head, sdp = self.request("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        base = (re.search(r"(?im)^content-base:\s*(\S+)", head) or [None, self.url + "/"])[1]
        ctl = re.findall(r"(?m)^a=control:(\S+)", sdp)
        ctl = [c for c in ctl if c != "*"] or [""]
        track = ctl[-1] if ctl[-1].startswith("rtsp://") else base.rstrip("/") + "/" + ctl[-1]
        head, _ = self.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        session = re.search(r"(?im)^session:\s*([^;\s]+)", head)[1]
        self.request("PLAY", self.url, f"Session: {session}\r\nRange: npt=0.000-\r\n")

    def read_interleaved(self, seconds, stop=lambda: False):
        """Reads $-framed packets until EOF, `stop()` or `seconds`."""
        end = time.monotonic() + seconds
        self.s.settimeout(1)
        while time.monotonic() < end and not stop():
            while len(self.buf) >= 4 and self.buf[0] == 0x24:
                ch, n = self.buf[1], int.from_bytes(self.buf[2:4], "big")
                if len(self.buf) < 4 + n:
                    break
                pkt, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                if ch == 0:
                    self.rtp += 1
                elif ch == 1:
                    self.rtcp.append(pkt)
            try:
                self._fill()
            except socket.timeout:
                continue
            except (EOFError, ConnectionResetError):
                self.closed = True
                return

    def saw_bye(self):
        for pkt in self.rtcp:
            i = 0
            while i + 4 <= len(pkt):
                if pkt[i + 1] == 203:
                    return True
                i += 4 * (int.from_bytes(pkt[i + 2:i + 4], "big") + 1)
        return False


def bye_on_stop(stop_cmd):
    """A TCP client plays; `stop_cmd` runs in the guest; the client must get an RTCP BYE."""
    c = RtspTcpClient()
    c.play()
    c.read_interleaved(60, stop=lambda: c.rtp >= 30)
    if c.rtp < 30:
        fail(f"the RTSP TCP client got only {c.rtp} RTP packets")
    before = len(c.rtcp)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=guest(stop_cmd, timeout=90)))
    t.start()
    c.read_interleaved(60)
    t.join()
    log(f"`{stop_cmd}`: client got {c.rtp} RTP and {len(c.rtcp)} RTCP packets "
        f"({len(c.rtcp) - before} after the stop), connection closed: {c.closed}, BYE: {c.saw_bye()}")
    if not c.saw_bye():
        fail(f"no RTCP BYE reached the playing client on `{stop_cmd}`")
    if not c.closed:
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
