"""Helpers the rig's Python checks share (rig/libcamera.py, rig/libcamera_vimc.py,
rig/init-systems.py): bounded waits, ffprobe of an RTSP path, and a plain RTSP client over TCP
that counts RTP packets, notes when each arrived and which H.264 NAL unit it starts, keeps the
RTCP packets (an RTCP BYE), sees the connection close, and can send GET_PARAMETER on the session
it started with.

Every check module calls `setup(log, fail, alive)` first: `fail` ends the run (it must not
return), `alive` says whether whatever serves the stream is still running.
"""
import re
import socket
import subprocess
import threading
import time

_log = print
_fail = None
_alive = None


def setup(log, fail, alive=lambda: True):
    global _log, _fail, _alive
    _log, _fail, _alive = log, fail, alive


def until(what, seconds, fn, step=0.5):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        if not _alive():
            _fail(f"{what}: the server is gone")
        time.sleep(step)
    _fail(f"{what}: not within {seconds} s")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ffprobe(url, size, frames, timeout=60, min_frames=None):
    """Decodes `frames` packets of `url`: H.264 at `size`, at least `min_frames` (2/3) decoded."""
    r = subprocess.run(["timeout", str(timeout), "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
                        "-select_streams", "v:0", "-count_frames", "-read_intervals", f"%+#{frames}",
                        "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", url],
                       capture_output=True, text=True)
    out = r.stdout.strip()
    _log(f"ffprobe {url}: {out or r.stderr.strip()}")
    f = out.split(",")
    want = ["h264", str(size[0]), str(size[1])]
    need = frames * 2 // 3 if min_frames is None else min_frames
    if len(f) < 4 or f[:3] != want or not f[3].isdigit() or int(f[3]) < need:
        _fail(f"ffprobe did not decode {need} frames of {size[0]}x{size[1]} H.264 from {url}: {out}")
    return int(f[3])


def nal_types(payload):
    """The H.264 NAL unit types an RTP payload starts (STAP-A: each unit in it; FU-A: the
    fragmented unit's type on its first fragment, nothing on the others)."""
    if not payload:
        return []
    t = payload[0] & 0x1F
    if t == 24:
        out, i = [], 1
        while i + 2 < len(payload):
            n = int.from_bytes(payload[i:i + 2], "big")
            out.append(payload[i + 2] & 0x1F)
            i += 2 + n
        return out
    if t == 28:
        return [payload[1] & 0x1F] if len(payload) > 1 and payload[1] & 0x80 else []
    return [t]


class RtspTcpClient:
    """DESCRIBE/SETUP (interleaved)/PLAY over one TCP connection, reading on a thread."""

    def __init__(self, host, port, path):
        self.url = f"rtsp://{host}:{port}{path}"
        self.s = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self.cseq = 0
        self.rtp = 0
        # (arrival time, NAL type) of every NAL unit the RTP packets start.
        self.nals = []
        # (arrival time, RTP timestamp) of the first packet of each picture.
        self.pictures = []
        self.session = None
        self.answers = []
        # RTCP packets (interleaved channel 1), and whether the server closed the connection.
        self.rtcp = []
        self.closed = False
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
            _fail(f"{method} {url} answered: {head.splitlines()[0]}")
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
                    pkt, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    if ch == 0:
                        cc = pkt[0] & 0x0F if pkt else 0
                        now = time.monotonic()
                        ts = int.from_bytes(pkt[4:8], "big") if len(pkt) >= 12 else None
                        with self.lock:
                            self.rtp += 1
                            if ts is not None and (not self.pictures or self.pictures[-1][1] != ts):
                                self.pictures.append((now, ts))
                            self.nals.extend((now, t) for t in nal_types(pkt[12 + 4 * cc:]))
                    elif ch == 1:
                        with self.lock:
                            self.rtcp.append(pkt)
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
                with self.lock:
                    self.closed = True
                return

    def packets(self):
        with self.lock:
            return self.rtp

    def last_packet_at(self):
        with self.lock:
            return self.nals[-1][0] if self.nals else None

    def nal_types_since(self, t):
        """NAL types of the units started at or after monotonic time `t`, in order."""
        with self.lock:
            return [n for at, n in self.nals if at >= t]

    def picture_rate(self, since):
        """Pictures a second since monotonic time `since`: (by RTP timestamps, by arrival)."""
        with self.lock:
            p = [x for x in self.pictures if x[0] >= since]
        if len(p) < 3:
            return None, None
        span_ts = ((p[-1][1] - p[0][1]) & 0xFFFFFFFF) / 90000
        span_arrival = p[-1][0] - p[0][0]
        return (len(p) - 1) / span_ts if span_ts else None, (len(p) - 1) / span_arrival if span_arrival else None

    def is_closed(self):
        with self.lock:
            return self.closed

    def rtcp_count(self):
        with self.lock:
            return len(self.rtcp)

    def saw_bye(self):
        """Whether an RTCP BYE (packet type 203) came in any compound packet."""
        with self.lock:
            packets = list(self.rtcp)
        for pkt in packets:
            i = 0
            while i + 4 <= len(pkt):
                if pkt[i + 1] == 203:
                    return True
                i += 4 * (int.from_bytes(pkt[i + 2:i + 4], "big") + 1)
        return False

    def keepalive_ok(self):
        """GET_PARAMETER on the session it started with."""
        self.cseq += 1
        self.s.sendall(f"GET_PARAMETER {self.url} RTSP/1.0\r\nCSeq: {self.cseq}\r\nSession: {self.session}\r\n\r\n"
                       .encode())
        until(f"GET_PARAMETER answer on {self.url}", 10, lambda: any(f"CSeq: {self.cseq}" in a for a in self.answers))
        answer = next(a for a in self.answers if f"CSeq: {self.cseq}" in a)
        return answer.startswith("RTSP/1.0 200")
