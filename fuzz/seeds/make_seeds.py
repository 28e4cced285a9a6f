#!/usr/bin/env python3
"""Derives the structured seeds (rtsp_session, rtp_h264_roundtrip, base64) from the verbatim
ones (rtsp_input, rtcp, h264) in this directory. Run from anywhere; rewrites its outputs.

The byte layouts follow `fuzz/src/harness.rs` (its `Cursor` reads big-endian integers and
length-prefixed strings: `short` = u8 length, `long` = u16 length).
"""
import glob
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def read(path):
    with open(os.path.join(HERE, path), "rb") as f:
        return f.read()


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def nals(stream):
    parts = re.split(b"\x00\x00\x01", stream)[1:]
    return [p.rstrip(b"\x00") for p in parts if p.rstrip(b"\x00")]


def short(b):
    return bytes([len(b)]) + b


def long(b):
    return struct.pack(">H", len(b)) + b


# --- rtsp_session -------------------------------------------------------------------------------
# Header: slots, timeout, path, sps choice (0: built-in x264 SPS), has_stream, ssrc, rtptime,
# framerate, bitrate, seed, auth (u8 % 4 == 0: Basic/Digest users configured).
def session_header(slots=4, timeout=60, auth=False):
    return (
        bytes([slots - 1, timeout - 1, 0, 0, 1])
        + struct.pack(">IIBI", 0x12345678, 9000, 30, 2000)
        + struct.pack(">Q", 0x0123456789ABCDEF)
        + bytes([0 if auth else 1])
    )


METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"]


def built(conn, method, uri_kind=0, cseq=1, slot=None, transport=None, extra=0, body=b""):
    """A request from the harness's builder (opcode 0). transport: index into its TRANSPORTS."""
    op = bytes([conn, 0, METHODS.index(method), 0, uri_kind, 2]) + struct.pack(">I", cseq)
    op += bytes([0 if slot is None else 1 + 4 * slot])
    op += bytes([0 if transport is None else 1 + 5 * transport if (1 + 5 * transport) % 3 else 2 + 5 * transport])
    op += bytes([extra])
    if extra & 16:
        op += short(body)
    return op


def raw(conn, data):
    return bytes([conn, 4]) + long(data)


def rtcp(conn, slot, pkt):
    return bytes([conn, 5, slot, 1]) + short(pkt)


def advance(conn, ms, backwards=False):
    return bytes([conn, 8]) + struct.pack(">I", ms) + bytes([1 if backwards else 0])


def close(conn):
    return bytes([conn, 6])


def check_transport_indices():
    # TRANSPORTS in harness.rs: 0 ffmpeg TCP, 1 GStreamer/VLC UDP, 2 WinTAK UDP, ...; the builder
    # picks TRANSPORTS[(tr / 5) % len] when tr % 3 != 0 and tr % 5 < 3.
    for t in range(7):
        tr = 1 + 5 * t if (1 + 5 * t) % 3 else 2 + 5 * t
        assert tr % 3 != 0 and tr % 5 < 3 and (tr // 5) % 7 == t, (t, tr)


def session_seeds():
    check_transport_indices()
    # Whole captured connections, replayed raw (their Session ids are from another run, so
    # PLAY/TEARDOWN get 454: the built flows below reach the states).
    for path in sorted(glob.glob(os.path.join(HERE, "rtsp_input", "*.bin"))):
        name = os.path.basename(path)
        write("rtsp_session", "raw_" + name, session_header() + raw(1, read(path)))
    rr = read("rtcp/ffmpeg_udp_rr_sdes.bin")
    flows = {
        "ffmpeg_tcp_flow": [
            built(1, "OPTIONS", cseq=1, extra=1),
            built(1, "DESCRIBE", cseq=2),
            built(1, "SETUP", uri_kind=1, cseq=3, transport=0),
            built(1, "PLAY", cseq=4, slot=0),
            raw(1, b"$\x01" + long(rr)),
            built(1, "GET_PARAMETER", cseq=5, slot=0),
            built(1, "TEARDOWN", cseq=6, slot=0),
        ],
        "gstreamer_udp_flow_rr_and_expiry": [
            built(1, "DESCRIBE", cseq=2),
            built(1, "SETUP", uri_kind=1, cseq=3, transport=1),
            built(1, "PLAY", cseq=4, slot=0),
            rtcp(1, 0, rr),
            advance(1, 30_000),
            built(1, "PAUSE", cseq=5, slot=0),
            advance(1, 61_000),
        ],
        "wintak_vlc_full_server": [
            built(1, "SETUP", uri_kind=1, cseq=3, transport=2),
            built(2, "SETUP", uri_kind=1, cseq=4, transport=1),
            built(3, "SETUP", uri_kind=1, cseq=5, transport=4),
            close(2),
            built(3, "SETUP", uri_kind=1, cseq=6, transport=0),
        ],
        "auth_basic": [
            built(1, "OPTIONS", cseq=1),
            built(1, "DESCRIBE", cseq=2),
            built(1, "DESCRIBE", cseq=3, extra=8),
            built(1, "SETUP", uri_kind=1, cseq=4, transport=0, extra=8),
            built(1, "PLAY", cseq=5, slot=0),
            built(1, "PLAY", cseq=6, slot=0, extra=8),
        ],
        "set_parameter_body": [
            built(1, "SET_PARAMETER", cseq=1, extra=16, body=b"barparam: barstuff\r\n"),
            built(1, "GET_PARAMETER", cseq=2, extra=16, body=b"\r\n"),
        ],
    }
    for name, ops in flows.items():
        header = session_header(slots=2, auth=name.startswith("auth"))
        write("rtsp_session", name, header + b"".join(ops))


# --- rtp_h264_roundtrip ---------------------------------------------------------------------------
# max_packet (32 + u16 % 1469), first sequence, ssrc, payload type, units - 1; per unit:
# timestamp, flags (bits 0-1 / 2-3: prepend none, built-in SPS, a short NAL, empty), count, NALs.
def roundtrip_seeds():
    for path in sorted(glob.glob(os.path.join(HERE, "h264", "*.h264"))):
        units = nals(read(path))
        params = [n for n in units if n[0] & 0x1F in (7, 8)]
        rest = [n for n in units if n[0] & 0x1F not in (7, 8)][:4]
        name = os.path.splitext(os.path.basename(path))[0]
        for mtu, label in ((1400 - 32, "mtu1400"), (100 - 32, "mtu100")):
            seed = struct.pack(">HHIBB", mtu, 65530, 0x5E2F410A, 96, 1)
            seed += struct.pack(">IB", 90000, 0x02 | 0x08) + short(params[0][:255]) + short(params[-1][:255])
            seed += bytes([len(rest)]) + b"".join(long(n[:65535]) for n in rest)
            seed += struct.pack(">IB", 93000, 0x60) + bytes([1]) + long(rest[-1])
            write("rtp_h264_roundtrip", f"{name}_{label}", seed)


# --- base64 -----------------------------------------------------------------------------------------
# The input is base64-encoded and decoded; its halves are also the SDP's SPS and PPS.
def base64_seeds():
    for path in sorted(glob.glob(os.path.join(HERE, "h264", "*.h264"))):
        units = nals(read(path))
        sps = next(n for n in units if n[0] & 0x1F == 7)
        pps = next(n for n in units if n[0] & 0x1F == 8)
        name = os.path.splitext(os.path.basename(path))[0]
        # Pad the shorter half so the split at len/2 falls between SPS and PPS.
        n = max(len(sps), len(pps))
        write("base64", f"{name}_sps_pps", sps.ljust(n, b"\x80") + pps.ljust(n, b"\x80"))
    write("base64", "sprop_parameter_sets_text", b"Z0LAH9oBQBbsBEAAAAMAQAAADyPGDKg=,aM48gA==")


if __name__ == "__main__":
    session_seeds()
    roundtrip_seeds()
    base64_seeds()
