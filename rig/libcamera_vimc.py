#!/usr/bin/env python3
"""Host side of rig/libcamera-vimc: the guest runs uavstream (source=libcamera, configured by
the kernel command line alone) on vimc through libcamera's vimc pipeline handler; this plays it
and drives the guest (rig/init-vimc) through the trigger port, one word a connection.

Checks:
- libcamera lists the vimc camera; its pipeline offers one stream (no Viewfinder output), so the
  second stream comes from the software scaler and the daemon says so;
- ffprobe and GStreamer decode /live at the configured size, ffprobe measures the configured
  frame rate from the stream's timestamps; ffprobe decodes /stream2 at 160x120;
- controls: the daemon logs what the first completed request's metadata reports of the controls
  it set (vimc's handler in libcamera 0.4 reports only SensorTimestamp), and the vimc sensor
  subdevice holds the V4L2 values libcamera's vimc handler computes from them
  (brightness b -> round(128 b + 128), contrast c -> round(128 c));
- CPU per frame (the daemon's utime + stime over a span, with the frames the client got);
- vimc unbound and bound again (platform device vimc.0): the same RTSP session (TCP, interleaved)
  gets pictures again, starting with SPS, PPS, IDR, and GET_PARAMETER on it answers 200; the
  daemon exits 0 when the guest stops it.
Every wait is bounded.
"""
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtsp_check import RtspTcpClient, ffprobe, setup, until  # noqa: E402

RTSP_PORT, TRIGGER = int(os.environ["RIG_RTSP_PORT"]), int(os.environ["RIG_TRIGGER_PORT"])
CONSOLE, QEMU = os.environ["RIG_CONSOLE"], int(os.environ["RIG_QEMU_PID"])
W, H, FPS = int(os.environ["VIMC_WIDTH"]), int(os.environ["VIMC_HEIGHT"]), int(os.environ["VIMC_FPS"])
BRIGHTNESS, CONTRAST = float(os.environ["VIMC_BRIGHTNESS"]), float(os.environ["VIMC_CONTRAST"])
URL = f"rtsp://127.0.0.1:{RTSP_PORT}"
T0 = time.monotonic()


def log(msg):
    print(f"== libcamera_vimc.py [{time.monotonic() - T0:.0f} s] {msg}", flush=True)


def console():
    try:
        return open(CONSOLE, errors="replace").read()
    except OSError:
        return ""


def qemu_alive():
    try:
        os.kill(QEMU, 0)
        return True
    except OSError:
        return False


def fail(msg):
    print(f"rig/libcamera-vimc: FAIL: {msg}", file=sys.stderr, flush=True)
    print("---- guest console (last 80 lines) ----", file=sys.stderr)
    print("\n".join(console().splitlines()[-80:]), file=sys.stderr)
    sys.exit(1)


setup(log, fail, qemu_alive)


def command(word, timeout=60):
    """Sends one word to rig/init-vimc; returns the console lines it printed for it."""
    start = console().count(f"RIG: command {word}")
    until(f"the guest's trigger port for {word}", 30, lambda: send(word))
    until(f"the guest done with {word}", timeout, lambda: console().count(f"RIG: done {word}") > start)
    text = console()
    at = -1
    for _ in range(start + 1):
        at = text.index(f"RIG: command {word}", at + 1)
    return text[at:]


def send(word):
    try:
        with socket.create_connection(("127.0.0.1", TRIGGER), timeout=5) as s:
            s.sendall(word.encode())
        return True
    except OSError:
        return False


def cpu_sample():
    out = command("cpu")
    m = re.search(r"RIG: cpu (\d+) (\d+) uptime ([0-9.]+) cpu +(\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        fail(f"no CPU sample: {out}")
    # The daemon's user + system time; the whole guest's idle time (vimc works in a kernel thread).
    return (int(m[1]) + int(m[2])) / 100.0, float(m[3]), int(m[7]) / 100.0


# --- start-up: the camera, its one stream, the configuration from the kernel command line ---------
def serving():
    if "RIG: uavstream exited" in console() or "libcamera lists no camera" in console():
        fail("the daemon exited, or libcamera found no camera")
    return re.search(r"serving rtsp://\S+/stream2", console())


until("the daemon serving /stream2 in the guest", 400, serving)
text = console()
listing = [ln[len("RIG: list: "):] for ln in text.splitlines() if ln.startswith("RIG: list: ")]
cams = next((i for i, ln in enumerate(listing) if ln.startswith("libcamera v")), None)
listing = listing[cams:cams + 10] if cams is not None else []
log("--list-devices (libcamera part):\n" + "\n".join(ln[:160] for ln in listing))
if not any(re.search(r"0: .* id platform/vimc\.0 ", ln) for ln in listing):
    fail("--list-devices does not list the vimc camera")
if not any("second output (Viewfinder role) for a smaller stream: not offered" in ln for ln in listing):
    fail("--list-devices does not say the vimc pipeline has no second output")
lores = re.search(r"WARN .*: (.*): the 160x120 stream is scaled in software instead", text)
if not lores:
    fail("the log does not say where the 160x120 stream comes from")
log(f"second stream: the vimc pipeline has no second output ({lores[1]}): the software scaler makes it")
if not re.search(r"stream 0 comes as (BGR888|RGB888) .*converted to I420", text):
    fail("the log does not say the RGB frames are converted")
for ctrl in ("Brightness", "Contrast"):
    if not re.search(rf"control {ctrl} = Float\(Real\(", text):
        fail(f"the daemon did not set {ctrl} from the kernel command line")

# --- the stream at the configured size and rate ---------------------------------------------------
ffprobe(URL + "/live", (W, H), 30, timeout=120)
r = subprocess.run(["timeout", "120", "gst-launch-1.0", "-q", "rtspsrc", f"location={URL}/live", "protocols=tcp",
                    "latency=0", "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "!",
                    f"video/x-raw,width={W},height={H}", "!", "identity", "eos-after=20", "silent=true", "!",
                    "fakesink", "sync=false"], capture_output=True, text=True)
if r.returncode != 0:
    fail(f"GStreamer did not decode 20 frames of {W}x{H}: {r.stdout} {r.stderr}")
log(f"GStreamer: 20 frames of {W}x{H} decoded")
ffprobe(URL + "/stream2", (160, 120), 20, timeout=120)

# --- controls: request metadata, and the sensor's V4L2 controls -----------------------------------
m = re.search(r"controls read back from request metadata: ([^\r\n]*)", console())
if not m:
    fail("the daemon logged no control read-back")
log(f"read back from request metadata: {m[1]}")
out = command("ctrls")
got = {k: int(v) for k, v in re.findall(r'RIG: sensor: .*?: "(\w+)" \(0x[0-9a-f]+\) = (-?\d+)', out)}
want = {"Brightness": round(128 * BRIGHTNESS + 128), "Contrast": round(128 * CONTRAST)}
log(f"vimc sensor's controls: {got}; expected from the configuration: {want}")
for k, v in want.items():
    if got.get(k) != v:
        fail(f"the vimc sensor's {k} is {got.get(k)}, expected {v}")

# --- frame rate and CPU per frame -----------------------------------------------------------------
client = RtspTcpClient("127.0.0.1", RTSP_PORT, "/live")
client.play()
until("the client playing", 60, lambda: client.packets() >= 10)
cpu0, up0, idle0 = cpu_sample()
t0 = time.monotonic()
time.sleep(15)
cpu1, up1, idle1 = cpu_sample()
by_ts, by_arrival = client.picture_rate(t0)
pictures = len([p for p in client.pictures if p[0] >= t0])
log(f"/live: {by_ts or 0:.2f} pictures/s by RTP timestamps, {by_arrival or 0:.2f} by arrival (configured {FPS})")
span = up1 - up0
log(f"CPU: the daemon used {cpu1 - cpu0:.2f} s over {span:.1f} s of guest time ({(cpu1 - cpu0) / span * 100:.0f} % "
    f"of the guest's one CPU): {(cpu1 - cpu0) / (span * (by_ts or 1)) * 1000:.1f} ms a frame (two encodes: /live and "
    f"/stream2; {pictures} pictures reached the client); the guest was idle {(idle1 - idle0) / span * 100:.0f} %")

if not by_ts or abs(by_ts - FPS) > FPS * 0.15 or abs(by_arrival - FPS) > FPS * 0.2:
    fail(f"/live does not run at the configured {FPS} frames/s")

# --- vimc unbound and bound again: the same session recovers ---------------------------------------
until("packets flowing before the unbind", 30, lambda: client.packets() >= 20)
t_unbind = time.monotonic()
out = command("unbind", timeout=60)
log("vimc.0 unbound and bound again: " + " ".join(ln for ln in out.splitlines() if "RIG:" in ln))
t_rebind = time.monotonic()
until("pictures again on the same session after the rebind", 60,
      lambda: 5 in client.nal_types_since(t_rebind))
after = client.nal_types_since(t_rebind)
first = [t for t in after if t in (1, 5, 7, 8)][:3]
if first != [7, 8, 5]:
    fail(f"after the rebind the stream starts with NAL types {first}, not SPS, PPS, IDR")
gap_from = max((at for at, _ in client.nals if at < t_unbind + 1.0), default=t_unbind)
log(f"after the rebind: SPS, PPS, IDR first; pictures again "
    f"{min(at for at, t in client.nals if at >= t_rebind and t == 5) - t_rebind:.1f} s after the bind "
    f"(last packet before: {gap_from - t_unbind:+.1f} s from the unbind)")
if not client.keepalive_ok():
    fail("GET_PARAMETER on the original session did not answer 200 after the rebind")
log("GET_PARAMETER on the original session: 200")
text = console()
why = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in text.splitlines()
       if re.search(r"pipeline failed|source restart|no access unit|device is gone", ln)]
if not any("the camera's device is gone" in ln for ln in why):
    fail("the daemon did not notice the camera's device going away")
log("the daemon on the way:\n" + "\n".join(ln[:100] + " ... " + ln[-80:] for ln in why[-8:]))
client.stop = True
lat = re.findall(r"capture to encoded ([^\r\n]*)", text)
if lat:
    log(f"sensor timestamp to access unit: {lat[-1]}")

send("done")
until("the daemon stopped", 60, lambda: "RIG: uavstream exited" in console())
m = re.search(r"RIG: uavstream exited \(status (\d+)\)", console())
if not m or m[1] != "0":
    fail(f"the daemon did not exit 0: {m[0] if m else 'no status'}")
log("passed")
