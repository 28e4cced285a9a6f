#!/usr/bin/python3
"""gst-rtsp-server in RECORD mode (Debian: python3-gi, gir1.2-gst-rtsp-server-1.0): accepts
one publisher at rtsp://127.0.0.1:PORT/up, decodes its H.264 with avdec_h264 and prints
"decoded N" once N frames came out of the decoder; exits 0 then, 1 after TIMEOUT seconds.

usage: gst_record_server.py PORT FRAMES TIMEOUT
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, frames, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
Gst.init(None)
loop = GLib.MainLoop()
decoded = 0
status = 1


def on_handoff(*_args):
    global decoded, status
    decoded += 1
    if decoded == frames:
        print(f"decoded {decoded}", flush=True)
        status = 0
        GLib.idle_add(loop.quit)


def on_configure(_factory, media):
    sink = media.get_element().get_by_name("sink")
    sink.connect("handoff", on_handoff)


server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
factory.set_launch(
    "( rtph264depay name=depay0 ! h264parse ! avdec_h264 output-corrupt=false"
    " ! fakesink name=sink signal-handoffs=true sync=false )"
)
factory.connect("media-configure", on_configure)
server.get_mount_points().add_factory("/up", factory)
server.attach(None)
print("listening", flush=True)
GLib.timeout_add_seconds(timeout, loop.quit)
loop.run()
print(f"decoded {decoded} of {frames}", flush=True)
sys.exit(status)
