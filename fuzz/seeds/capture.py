#!/usr/bin/env python3
"""Records what real RTSP clients send, for the fuzz seed corpora. Loopback only.

    capture.py LISTEN_PORT SERVER_PORT OUT_DIR [RTCP_PORT_LO RTCP_PORT_HI]

Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to the uavstream daemon on
127.0.0.1:SERVER_PORT, writing the bytes each client sent (requests and interleaved RTCP, byte
for byte) to OUT_DIR/conn-N.bin. With a port range it also sniffs UDP datagrams sent to those
ports on `lo` (needs root: AF_PACKET) — the clients' RTCP receiver reports to the server's RTCP
ports — into OUT_DIR/udp-N.bin. Stops after 30 s or on Ctrl-C.
"""
import os
import socket
import struct
import sys
import threading
import time


def pump(src, dst, record):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            if record is not None:
                record.write(b)
                record.flush()
            dst.sendall(b)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listen_port, server_port, out_dir):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen()
    n = 0
    while True:
        c, _ = ls.accept()
        s = socket.create_connection(("127.0.0.1", server_port))
        f = open(os.path.join(out_dir, f"conn-{n}.bin"), "wb")
        n += 1
        threading.Thread(target=pump, args=(c, s, f), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, None), daemon=True).start()


def sniff_udp(lo, hi, out_dir):
    ETH_P_ALL = 3
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind(("lo", 0))
    n = 0
    while n < 8:
        frame, addr = s.recvfrom(65536)
        if addr[2] == socket.PACKET_OUTGOING:  # each loopback packet is seen twice
            continue
        ip = frame[14:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        dport = struct.unpack(">H", ip[ihl + 2 : ihl + 4])[0]
        if lo <= dport <= hi and dport % 2 == 1:
            with open(os.path.join(out_dir, f"udp-{n}.bin"), "wb") as f:
                f.write(ip[ihl + 8 :])
            n += 1


def main():
    listen_port, server_port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    threading.Thread(target=proxy, args=(listen_port, server_port, out_dir), daemon=True).start()
    if len(sys.argv) > 5:
        threading.Thread(target=sniff_udp, args=(int(sys.argv[4]), int(sys.argv[5]), out_dir), daemon=True).start()
    time.sleep(30)


if __name__ == "__main__":
    main()
