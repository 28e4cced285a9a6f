#!/usr/bin/env python3
"""Host side of rig/libcamera: runs uavstream (built with --features libcamera) in the trixie
chroot on libcamera's virtual camera and plays it from the host over loopback.

Called by rig/libcamera inside its mount namespace, with the shell function `in_chroot`
exported (it runs a command in the chroot). The configuration comes in all three spellings:
the kernel command line (UAVSTREAM_PROC_CMDLINE), the environment and flags.

Checks: --list-devices lists the virtual camera and its second output; ffprobe decodes 640x360
H.264 on /live and 320x180 on /stream2 (the ISP's second output, Viewfinder role, not the
scaler); a decoded frame shows the virtual camera's colour bars; unsupported controls only
warn; a camera that stops completing requests (fault injection: the pipeline holds them) is
rebuilt after stall-timeout, again and again while it starves, and once requests flow both RTSP
clients get packets again on the sessions they started with (GET_PARAMETER on each: 200);
SIGTERM ends it with status 0.

Not here: a camera that vanishes and comes back. libcamera 0.4's virtual handler registers its
cameras once per process: a camera manager started while virtual.yaml is missing sets the
handler's static `created_` and no later manager gets a virtual camera again.
Every wait is bounded.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT, CHROOT = os.environ["ROOT"], os.environ["CHROOT"]
BIN = f"{ROOT}/target/libcamera/debug/uavstream"
LOG = f"{ROOT}/target/libcamera/daemon.log"
STARVE = f"{ROOT}/target/libcamera/starve"
T0 = time.monotonic()
daemon = None


def log(msg):
    print(f"== libcamera.py [{time.monotonic() - T0:.0f} s] {msg}", flush=True)


def fail(msg):
    print(f"rig/libcamera: FAIL: {msg}", file=sys.stderr, flush=True)
    try:
        print("---- daemon log (last 60 lines) ----", file=sys.stderr)
        print("\n".join(open(LOG, errors="replace").read().splitlines()[-60:]), file=sys.stderr)
    except OSError:
        pass
    if daemon and daemon.poll() is None:
        daemon.kill()
    restore_camera()
    sys.exit(1)


def in_chroot(*args):
    return ["bash", "-c", 'in_chroot "$@"', "in_chroot", *args]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def daemon_log():
    try:
        return open(LOG, errors="replace").read()
    except OSError:
        return ""


def until(what, seconds, fn):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        if daemon and daemon.poll() is not None:
            fail(f"{what}: the daemon exited with status {daemon.returncode}")
        time.sleep(0.5)
    fail(f"{what}: not within {seconds} s")


def restore_camera():
    if os.path.exists(STARVE):
        os.unlink(STARVE)


PORT = free_port()
URL = f"rtsp://127.0.0.1:{PORT}"


def ffprobe(path, size, frames):
    r = subprocess.run(["timeout", "60", "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams",
                        "v:0", "-count_frames", "-read_intervals", f"%+#{frames}", "-show_entries",
                        "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", URL + path],
                       capture_output=True, text=True)
    out = r.stdout.strip()
    log(f"ffprobe {path}: {out or r.stderr.strip()}")
    f = out.split(",")
    want = ["h264", str(size[0]), str(size[1])]
    if len(f) < 4 or f[:3] != want or not f[3].isdigit() or int(f[3]) < frames * 2 // 3:
        fail(f"ffprobe did not decode {frames * 2 // 3} frames of {size[0]}x{size[1]} H.264 from {path}: {out}")


def colour_bars():
    """One decoded frame of /live: the virtual camera's bars are several distinct colours."""
    r = subprocess.run(["timeout", "60", "ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", URL + "/live",
                        "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    w, h = 640, 360
    if len(r.stdout) < w * h * 3:
        fail(f"ffmpeg decoded no 640x360 frame: {r.stderr.decode(errors='replace')}")
    row = r.stdout[(h // 2) * w * 3:(h // 2 + 1) * w * 3]
    colours = {tuple(c >> 5 for c in row[x * 3:x * 3 + 3]) for x in range(w // 16, w, w // 8)}
    log(f"decoded frame: {len(colours)} distinct colours across the middle row")
    if len(colours) < 4:
        fail(f"the decoded frame does not show colour bars ({colours})")


class RtspTcpClient:
    """DESCRIBE/SETUP (interleaved)/PLAY over one TCP connection, reading on a thread."""

    def __init__(self, path):
        self.url = URL + path
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
        self.buf = b""
        self.cseq = 0
        self.rtp = 0
        self.session = None
        self.answers = []
        self.lock = threading.Lock()
        self.stop = False

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
            fail(f"{method} {url} answered: {head.splitlines()[0]}")
        return head, body

    def _fill(self):
        b = self.s.recv(65536)
        if not b:
            raise EOFError
        self.buf += b

    def play(self):
        head, sdp = self.request("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        base = (re.search(r"(?im)^content-base:\s*(\S+)", head) or [None, self.url + "/"])[1]
        ctl = [c for c in re.findall(r"(?m)^a=control:(\S+)", sdp) if c != "*"] or [""]
        track = ctl[-1] if ctl[-1].startswith("rtsp://") else base.rstrip("/") + "/" + ctl[-1]
        head, _ = self.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        self.session = re.search(r"(?im)^session:\s*([^;\s]+)", head)[1]
        self.request("PLAY", self.url, f"Session: {self.session}\r\nRange: npt=0.000-\r\n")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        """Counts $-framed RTP packets; keeps RTSP answers (GET_PARAMETER) for the main thread."""
        self.s.settimeout(1)
        while not self.stop:
            while self.buf:
                if self.buf[0] == 0x24:
                    if len(self.buf) < 4:
                        break
                    ch, n = self.buf[1], int.from_bytes(self.buf[2:4], "big")
                    if len(self.buf) < 4 + n:
                        break
                    self.buf = self.buf[4 + n:]
                    if ch == 0:
                        with self.lock:
                            self.rtp += 1
                elif b"\r\n\r\n" in self.buf:
                    head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                    self.answers.append(head.decode(errors="replace"))
                else:
                    break
            try:
                self._fill()
            except socket.timeout:
                continue
            except (EOFError, OSError):
                return

    def packets(self):
        with self.lock:
            return self.rtp

    def keepalive_ok(self):
        """GET_PARAMETER on the session it started with."""
        self.cseq += 1
        self.s.sendall(f"GET_PARAMETER {self.url} RTSP/1.0\r\nCSeq: {self.cseq}\r\nSession: {self.session}\r\n\r\n"
                       .encode())
        until(f"GET_PARAMETER answer on {self.url}", 10, lambda: any(f"CSeq: {self.cseq}" in a for a in self.answers))
        answer = next(a for a in self.answers if f"CSeq: {self.cseq}" in a)
        return answer.startswith("RTSP/1.0 200")


# --- --list-devices --------------------------------------------------------------------------
r = subprocess.run(in_chroot(BIN, "--list-devices"), capture_output=True, text=True, timeout=60)
log("--list-devices:\n" + r.stdout.rstrip())
if r.returncode != 0 or "0: uavstream-virtual id Virtual0" not in r.stdout:
    fail(f"--list-devices does not list the virtual camera: {r.stdout} {r.stderr}")
if "second output (Viewfinder role) for a smaller stream: offered" not in r.stdout:
    fail("--list-devices does not show the virtual camera's second output")

# --- the daemon: three spellings ---------------------------------------------------------------
cmdline = ("console=ttyS0 uavstream.source=libcamera uavstream.device=uavstream-virtual uavstream.width=640 "
           "uavstream.height=360 uavstream.fps=30 uavstream.stream2.camera=1 uavstream.stream2.width=320 "
           "uavstream.stream2.height=180 uavstream.stream2.bitrate=300k uavstream.stall-timeout=2")
env = [f"UAVSTREAM_PROC_CMDLINE={cmdline}", "UAVSTREAM_SHARPNESS=2", "UAVSTREAM_FAULT_INJECTION=1",
       f"UAVSTREAM_FAULT_LIBCAMERA_STARVE={STARVE}", "UAVSTREAM_BITRATE=1M"]
flags = ["--port", str(PORT), "--http-port", "0", "--awb", "daylight", "--log-level", "info"]
restore_camera()
daemon = subprocess.Popen(in_chroot("env", *env, BIN, *flags), stdout=open(LOG, "wb"), stderr=subprocess.STDOUT,
                          start_new_session=True)
until("the daemon serving /stream2", 60, lambda: "serving rtsp://127.0.0.1:" in daemon_log()
      and "/stream2" in daemon_log())
text = daemon_log()
for line in ["the 320x180 stream comes from the ISP's second output (Viewfinder role), not the scaler",
             "sharpness=2: the camera has no Sharpness control; ignored",
             "control FrameDurationLimits = I64Pair([33333, 33333])"]:
    if line not in text:
        fail(f"the log lacks: {line}")
warned = [ln.split("WARN ", 1)[-1] for ln in text.splitlines() if "WARN " in ln and "control" in ln]
log("unsupported controls warned about: " + "; ".join(warned))

ffprobe("/live", (640, 360), 45)
ffprobe("/stream2", (320, 180), 30)
colour_bars()

# --- faults: requests stop, the camera vanishes, it comes back ---------------------------------
clients = [RtspTcpClient("/live"), RtspTcpClient("/stream2")]
for c in clients:
    c.play()
until("both clients playing", 20, lambda: all(c.packets() >= 30 for c in clients))
open(STARVE, "w").close()
log("requests held back: the camera stops completing them")
until("the stall detected and /live rebuilt twice (each new pipeline starves too)", 30,
      lambda: "/live: no access unit for" in daemon_log() and daemon_log().count("/live: source restarted") >= 2)
before = [c.packets() for c in clients]
restore_camera()
log(f"requests flow again (clients had {before} RTP packets)")
until("both clients getting packets again", 40,
      lambda: all(c.packets() >= b + 60 for c, b in zip(clients, before)))
for c in clients:
    if not c.keepalive_ok():
        fail(f"the session of {c.url} did not survive")
log(f"both sessions kept: {[c.packets() for c in clients]} RTP packets; GET_PARAMETER 200 on each")
restarts = daemon_log().count("source restarted")
log(f"pipeline rebuilt {restarts} times")
for c in clients:
    c.stop = True

os.killpg(daemon.pid, signal.SIGTERM)
try:
    rc = daemon.wait(20)
except subprocess.TimeoutExpired:
    fail("the daemon did not stop on SIGTERM")
if rc != 0:
    fail(f"the daemon exited with status {rc} on SIGTERM")
log("passed")
