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
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtsp_check import RtspTcpClient, free_port, setup, until  # noqa: E402
from rtsp_check import ffprobe as probe  # noqa: E402

ROOT, CHROOT = os.environ["ROOT"], os.environ["CHROOT"]
LCTARGET = os.environ.get("LCTARGET", f"{ROOT}/target/libcamera")
BIN = f"{LCTARGET}/debug/uavstream"
LOG = f"{LCTARGET}/daemon.log"
STARVE = f"{LCTARGET}/starve"
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


def daemon_log():
    try:
        return open(LOG, errors="replace").read()
    except OSError:
        return ""


def restore_camera():
    if os.path.exists(STARVE):
        os.unlink(STARVE)


PORT = free_port()
URL = f"rtsp://127.0.0.1:{PORT}"


def ffprobe(path, size, frames):
    probe(URL + path, size, frames)


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


setup(log, fail, lambda: daemon is None or daemon.poll() is None)


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
clients = [RtspTcpClient("127.0.0.1", PORT, "/live"), RtspTcpClient("127.0.0.1", PORT, "/stream2")]
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
