#!/usr/bin/env python3
"""Receive a camera's raw frames from uavstream (raw-socket=PATH) without copying them.

    python3 raw_frames.py [SOCKET [FRAMES]]      (defaults: /run/uavstream/raw.sock, forever)

Each message is an 80-byte little-endian header plus one file descriptor: a sealed memfd that
holds the frame. The memfd is mapped read-only and numpy views the planes in place. Prints one
line per frame: sequence, format, size, frames skipped, capture-to-here latency, mean luma.
Needs Python 3.9+ (socket.recv_fds) and numpy (Debian: python3-numpy).
"""
import mmap
import os
import socket
import struct
import sys
import time

import numpy as np

# magic, version, header length, fourcc, width, height, planes, strides[3], offsets[3],
# size, capture (CLOCK_MONOTONIC ns), sequence, skipped: see README "Local vision processes".
HEADER = struct.Struct("<4sHH4sIII3I3IQQQQ")


def planes(m, fourcc, width, height, count, strides, offsets):
    """numpy views (no copy) of each plane, cropped to the picture."""
    views = []
    for i in range(count):
        if fourcc == b"YUYV":
            rows, cols = height, width * 2
        else:
            rows = height if i == 0 else (height + 1) // 2
            cols = width if (i == 0 or fourcc == b"NV12") else width // 2
        plane = np.frombuffer(m, np.uint8, count=strides[i] * rows, offset=offsets[i])
        views.append(plane.reshape(rows, strides[i])[:, :cols])
    return views


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/run/uavstream/raw.sock"
    wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    got = 0
    while wanted == 0 or got < wanted:
        msg, fds, _, _ = socket.recv_fds(sock, 4 * HEADER.size, 1)
        if not msg:
            print("closed by uavstream (every raw-clients slot taken?)", flush=True)
            return 1
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        (magic, version, _hlen, fourcc, width, height, count, *rest) = HEADER.unpack_from(msg)
        strides, offsets = rest[0:3], rest[3:6]
        size, capture, sequence, skipped = rest[6:10]
        if magic != b"UAVF" or version != 1 or len(fds) != 1:
            print(f"not a version-1 raw-frame message: {msg[:8]!r}", file=sys.stderr)
            return 2
        m = mmap.mmap(fds[0], size, mmap.MAP_SHARED, mmap.PROT_READ)
        os.close(fds[0])  # the mapping keeps the frame alive
        views = planes(m, fourcc, width, height, count, strides, offsets)
        luma = float(views[0].mean()) if fourcc != b"YUYV" else float(views[0][:, 0::2].mean())
        del views  # numpy's views must go before the mapping is closed
        m.close()
        print(
            f"seq {sequence} {fourcc.decode()} {width}x{height} planes {count} size {size} "
            f"skipped {skipped} latency {(now - capture) / 1e6:.3f} ms luma {luma:.1f}",
            flush=True,
        )
        got += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
