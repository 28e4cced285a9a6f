// The viewer page's script (served inline by the daemon; no CDN, no build step).
// Each tile with data-webrtc="1" plays its stream over WHEP: POST an SDP offer to PATH/whep,
// apply the answer, DELETE the session's Location when the page goes away. If WebRTC is
// unavailable or fails, a tile with data-mjpeg="1" falls back to PATH.mjpeg. Every second the
// tile's figures come from /status (server side) and getStats() (this browser); the same figures
// are kept in the tile's data-* attributes for scripts and tests.
"use strict";
const tiles = Array.from(document.querySelectorAll(".tile"));

function show(t, text) {
  t.querySelector(".state").textContent = text;
}

function fallback(t, why) {
  t.dataset.state = "fallback";
  const v = t.querySelector("video");
  if (v) v.style.display = "none";
  const img = t.querySelector("img");
  if (t.dataset.mjpeg === "1" && img) {
    img.src = t.dataset.path + ".mjpeg";
    img.style.display = "block";
    show(t, "MJPEG (" + why + ")");
  } else {
    show(t, why);
  }
}

async function whep(t) {
  if (!window.RTCPeerConnection) return fallback(t, "no WebRTC in this browser");
  const v = t.querySelector("video");
  const pc = new RTCPeerConnection();
  t.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (e) => {
    // Latency first: ask the receiver for the smallest jitter buffer it allows.
    if ("jitterBufferTarget" in e.receiver) e.receiver.jitterBufferTarget = 0;
    if ("playoutDelayHint" in e.receiver) e.receiver.playoutDelayHint = 0;
    v.srcObject = new MediaStream([e.track]);
  };
  pc.onconnectionstatechange = () => {
    t.dataset.state = pc.connectionState;
    if (pc.connectionState === "failed") fallback(t, "WebRTC failed");
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  t.t0 = performance.now();
  const r = await fetch(t.dataset.path + "/whep", {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (r.status !== 201) {
    pc.close();
    return fallback(t, "WHEP " + r.status + ": " + (await r.text()).trim());
  }
  t.location = r.headers.get("Location");
  t.dataset.location = t.location;
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  show(t, "WebRTC: connecting");
  if (v.requestVideoFrameCallback) {
    v.requestVideoFrameCallback(() => {
      t.dataset.firstFrameMs = Math.round(performance.now() - t.t0);
    });
  }
}

async function browserFigures(t) {
  if (!t.pc) return "";
  const stats = await t.pc.getStats();
  let s = null;
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") s = r;
  });
  if (!s) return "";
  const d = t.dataset;
  const prev = Number(d.framesDecoded || 0);
  d.framesDecoded = s.framesDecoded || 0;
  d.framesReceived = s.framesReceived || 0;
  d.keyFramesDecoded = s.keyFramesDecoded || 0;
  d.framesDropped = s.framesDropped || 0;
  d.packetsLost = s.packetsLost || 0;
  d.nackCount = s.nackCount || 0;
  d.pliCount = s.pliCount || 0;
  d.decoder = s.decoderImplementation || "";
  const jb = s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : 0;
  d.jitterBufferMs = Math.round(jb);
  return (
    `WebRTC ${s.frameWidth || 0}x${s.frameHeight || 0}, ${d.framesDecoded - prev} frames/s decoded, ` +
    `jitter buffer ${d.jitterBufferMs} ms, lost ${d.packetsLost}` +
    (d.firstFrameMs ? `, first frame ${d.firstFrameMs} ms after the offer` : "")
  );
}

async function tick() {
  let status = null;
  try {
    status = await (await fetch("/status", { cache: "no-store" })).json();
  } catch (e) {}
  for (const t of tiles) {
    let text = "";
    const st = status && status.streams.find((s) => s.path === t.dataset.path);
    if (st) {
      const c = st.clients;
      const clients = c.udp + c.tcp + c.multicast + c.http_mjpeg + (c.webrtc || 0);
      text =
        `${st.codec} ${st.width}x${st.height} ${st.fps.toFixed(1)} fps ${(st.bitrate / 1e6).toFixed(2)} Mbit/s, ` +
        `${clients} clients (WebRTC ${c.webrtc || 0}), server-added latency p50 ${st.server_latency_us.p50} µs`;
    }
    const b = await browserFigures(t).catch(() => "");
    t.querySelector(".figs").textContent = text + (b ? " | " + b : "");
    if (b) show(t, "WebRTC: " + (t.pc ? t.pc.connectionState : ""));
  }
}

for (const t of tiles) {
  if (t.dataset.webrtc === "1") whep(t).catch((e) => fallback(t, String(e)));
}
addEventListener("pagehide", () => {
  for (const t of tiles) {
    if (t.location) fetch(t.location, { method: "DELETE", keepalive: true });
    if (t.pc) t.pc.close();
  }
});
tick();
setInterval(tick, 1000);
