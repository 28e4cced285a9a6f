//! The loop's streams: each one a pipeline (camera → encoder) feeding its own hub, with its own
//! IDR control, stall supervision, HTTP's on-demand JPEG encoder, push destination and multicast
//! group.
//!
//! Invariants:
//! - A stream's pipeline failing, stalling or being rebuilt never touches another stream: each
//!   has its own backoff, and the RTSP sessions of every stream stay up meanwhile.
//! - An access unit is packetized once into its stream's ring and fanned out at once to that
//!   stream's readers only (session slots, push, multicast group, HTTP clients of its path).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::latency_ring::LatencyRing;
use super::{abr, http, multicast, ring_reader, side_jpeg, udp_tx, EventLoop, IdrLimiter};
use crate::config::{Config, PipelineConfig, StreamConfig};
use crate::hub::Hub;
use crate::limits;
use crate::rtp::Codec;
use crate::rtsp::sdp::{write_sdp, SdpParams};
use crate::source::{IdrControl, Pipeline, PollRequest, Sink};
use crate::sys;

/// Builds a new pipeline for stream `index` after the old one broke or stalled, given the
/// layout of its camera's frames when known (see [`crate::source::build_with`]).
pub type PipelineFactory<'c> =
    Box<dyn FnMut(usize, Option<crate::encode::worker::FrameLayout>) -> Result<Box<dyn Pipeline>, String> + 'c>;

pub(super) const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);
pub(super) const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Push mode: the ring sent to one fixed UDP destination (`rtp-dest`).
#[derive(Debug)]
pub(super) struct Push {
    pub(super) sock: UdpSocket,
    pub(super) dest: SocketAddr,
    pub(super) feed: ring_reader::RingReader,
    pub(super) tx: udp_tx::UdpTx,
}

/// One stream and everything that is its own.
pub(super) struct Stream<'c> {
    pub(super) cfg: &'c StreamConfig,
    pub(super) pipeline_cfg: PipelineConfig,
    pub(super) pipeline: Option<Box<dyn Pipeline>>,
    pub(super) pipe_reqs: Vec<PollRequest>,
    /// When the pipeline last delivered an access unit (or was (re)built).
    pub(super) last_unit: Instant,
    pub(super) restart_at: Option<Instant>,
    pub(super) restart_backoff: Duration,
    /// Fault injection: the current pipeline's output is discarded (looks stalled).
    pub(super) fault_stalled: bool,
    /// HTTP's JPEG encoder while the stream is H.264 and HTTP clients want frames.
    pub(super) side_jpeg: Option<side_jpeg::SideJpeg>,
    pub(super) side_reqs: Vec<PollRequest>,
    /// Whether HTTP's JPEG frames come from `side_jpeg` (the stream is H.264 and the source has
    /// raw frames).
    pub(super) jpeg_on_demand: bool,
    pub(super) side_retry_at: Option<Instant>,
    pub(super) hub: Hub,
    pub(super) idr: IdrLimiter,
    pub(super) push: Option<Push>,
    /// `sdp-out` not written yet (an H.264 stream needs its SPS/PPS first).
    pub(super) sdp_out: Option<PathBuf>,
    /// Our address towards the push destination, for the SDP's `o=`.
    pub(super) push_origin: String,
    /// The multicast group stream, when `multicast-group` is set.
    pub(super) group: Option<multicast::Group>,
    /// The stream's recorder (`record-dir`), fed every access unit; it never blocks the loop.
    pub(super) recorder: Option<crate::record::Recorder>,
    /// Rebuilds of the pipeline since start (stalls, failures, SIGHUP).
    pub(super) restarts: u64,
    /// `(when, access units, payload octets)` once a second, the last [`RATE_SAMPLES`]: the
    /// measured frame rate and bitrate of `/status`.
    pub(super) samples: VecDeque<(Instant, u64, u64)>,
    /// Server-added latency of the last access units (µs): from the unit ready in the loop to
    /// its last packet handed to the kernel for every client.
    pub(super) latency: LatencyRing,
    /// Capture to access unit ready in the loop (µs): the encoder, its queue and the handoff
    /// (for a camera's own H.264, the camera's latency).
    pub(super) encode_latency: LatencyRing,
    /// The slot the next access unit's fan-out starts at (rotates: fair send order).
    pub(super) fanout_start: usize,
    /// Adaptive bitrate (`abr=on`).
    pub(super) abr: Option<abr::StreamAbr>,
}

/// Seconds of history behind a measured rate (+1 sample).
pub(super) const RATE_SAMPLES: usize = 6;

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("path", &self.cfg.path).finish_non_exhaustive()
    }
}

/// The push-mode socket: unbound port, non-blocking, DSCP set.
/// Returns it with our address towards `dest` (for the SDP's `o=`).
fn push_socket(dest: SocketAddr, dscp: u8) -> io::Result<(UdpSocket, IpAddr)> {
    let any: IpAddr = if dest.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    let sock = UdpSocket::bind((any, 0))?;
    sock.set_nonblocking(true)?;
    super::set_dscp(&sock, dest.is_ipv6(), dscp)?;
    // The address the kernel would send from, found with a throwaway connected socket.
    let probe = UdpSocket::bind((any, 0))?;
    let origin = probe.connect(dest).and_then(|_| probe.local_addr()).map_or(any, |a| a.ip());
    Ok((sock, origin))
}

impl<'c> Stream<'c> {
    /// Sets up stream `index` of `cfg` around its first pipeline: hub, push socket, multicast
    /// group.
    pub(super) fn new(
        cfg: &'c Config,
        index: usize,
        pipeline: Box<dyn Pipeline>,
        epoch: Instant,
        kernel_gso: bool,
    ) -> io::Result<Stream<'c>> {
        let st = &cfg.streams[index];
        let pipeline_cfg = cfg.pipeline(index);
        let bitrate_kbps = if st.codec == Codec::H264 { st.bitrate / 1000 } else { 0 };
        let mut hub = Hub::new(st.codec, cfg.max_rtp_packet(), epoch, sys::random_u64(), st.fps, bitrate_kbps);
        if let Some((sps, pps)) = pipeline.parameter_sets().filter(|_| st.codec == Codec::H264) {
            hub.prime(&sps, &pps);
        }
        let (push, push_origin) = match st.rtp_dest {
            None => (None, String::new()),
            Some(dest) => {
                let (sock, origin) = push_socket(dest, st.dscp)
                    .map_err(|e| io::Error::new(e.kind(), format!("{} rtp-dest {dest}: {e}", st.name)))?;
                log::info!(
                    "{}: push mode: RTP ({:?}) to {dest}, RTCP to port {}{}",
                    st.path,
                    st.codec,
                    dest.port().wrapping_add(1),
                    if st.dscp > 0 {
                        format!(", DSCP {} (TOS 0x{:02x})", st.dscp, st.dscp << 2)
                    } else {
                        String::new()
                    }
                );
                let feed = ring_reader::RingReader::starting_at(0);
                (Some(Push { sock, dest, feed, tx: udp_tx::UdpTx::new(kernel_gso) }), origin.to_string())
            }
        };
        let group = match &st.multicast {
            None => None,
            Some(m) => {
                let g = multicast::Group::open(m, st.dscp, kernel_gso)
                    .map_err(|e| io::Error::new(e.kind(), format!("{} multicast-group {}: {e}", st.name, m.group)))?;
                log::info!(
                    "{}: multicast: RTP/AVP;multicast sessions get {} (RTCP port {}), TTL {}{}",
                    st.path,
                    g.rtp_dest(),
                    m.port.wrapping_add(1),
                    m.ttl,
                    m.interface.as_ref().map_or(String::new(), |(name, _)| format!(", via {name}"))
                );
                Some(g)
            }
        };
        let recorder = match &st.record {
            None => None,
            Some(settings) => {
                let r = crate::record::Recorder::start(settings.clone(), true).map_err(|e| {
                    io::Error::new(e.kind(), format!("{} record-dir {}: {e}", st.name, settings.dir.display()))
                })?;
                log::info!(
                    "{}: recording to {} ({} s segments, fragments of at most {} s, fsync per {})",
                    st.path,
                    settings.dir.display(),
                    settings.segment.as_secs_f64(),
                    settings.fragment.as_secs_f64(),
                    settings.fsync.as_str()
                );
                Some(r)
            }
        };
        let abr = st.abr.map(|s| abr::StreamAbr::new(s, st.bitrate, cfg.max_clients, epoch));
        let mut stream = Stream {
            cfg: st,
            recorder,
            pipeline_cfg,
            pipeline: Some(pipeline),
            pipe_reqs: Vec::with_capacity(8),
            last_unit: epoch,
            restart_at: None,
            restart_backoff: RESTART_BACKOFF_MIN,
            fault_stalled: false,
            side_jpeg: None,
            side_reqs: Vec::new(),
            // Set by the loop once every stream of the camera exists (see `cameras`).
            jpeg_on_demand: false,
            side_retry_at: None,
            hub,
            idr: IdrLimiter::new(st.fps),
            push,
            sdp_out: st.sdp_out.clone(),
            push_origin,
            group,
            restarts: 0,
            samples: VecDeque::with_capacity(RATE_SAMPLES),
            latency: LatencyRing::default(),
            encode_latency: LatencyRing::default(),
            fanout_start: 0,
            abr,
        };
        stream.attach_abr();
        Ok(stream)
    }

    /// Tells a (new) pipeline the ABR target, when the stream has ABR.
    fn attach_abr(&mut self) {
        if let (Some(a), Some(p)) = (self.abr.as_mut(), self.pipeline.as_mut()) {
            a.attach(&self.cfg.path, p.as_mut());
        }
    }

    /// The earliest time this stream needs the loop's attention.
    pub(super) fn deadline(&self, stall_timeout: Duration) -> Option<Instant> {
        let mut d = self.idr.deadline();
        if let Some(p) = &self.pipeline {
            let stall = self.last_unit + stall_timeout;
            d = Some(d.map_or(stall, |x| x.min(stall)));
            if let Some(t) = p.next_deadline() {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        }
        if let Some(t) = self.restart_at {
            d = Some(d.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = self.abr.as_ref().and_then(|a| a.deadline()).filter(|_| self.pipeline.is_some()) {
            d = Some(d.map_or(t, |x| x.min(t)));
        }
        d
    }

    /// Takes the once-a-second sample behind the measured rates.
    pub(super) fn sample(&mut self, now: Instant) {
        if self.samples.len() == RATE_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, self.hub.units, self.hub.octets));
    }

    /// Measured access units per second and payload bit/s over the sampled window.
    pub(super) fn measured(&self) -> (f64, f64) {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let s = b.0.duration_since(a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / s, (b.2 - a.2) as f64 * 8.0 / s)
            }
            _ => (0.0, 0.0),
        }
    }

    /// `streaming`, `stalled` (no unit for a second or more) or `restarting` (no pipeline).
    pub(super) fn state(&self, now: Instant) -> &'static str {
        match &self.pipeline {
            None => "restarting",
            Some(_) if now.saturating_duration_since(self.last_unit) >= Duration::from_secs(1) => "stalled",
            Some(_) => "streaming",
        }
    }

    /// Asks a live encoder for an IDR for a joining client, rate-limited.
    pub(super) fn request_idr(&mut self, now: Instant) {
        let Some(p) = self.pipeline.as_mut() else { return };
        if p.idr_control() == IdrControl::OnRequest && self.idr.request(now) {
            p.request_idr();
        }
    }

    fn drop_pipeline(&mut self, now: Instant) {
        self.pipeline = None;
        self.fault_stalled = false;
        self.restart_at = Some(now + self.restart_backoff);
        self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF_MAX);
    }

    /// Sends the push destination everything from its position to the ring head.
    fn pump_push(&mut self) {
        if let Some(p) = self.push.as_mut() {
            p.feed.pump_udp(&self.hub.ring, &p.sock, &p.dest, &mut p.tx);
        }
    }

    /// Writes `sdp-out` once the stream can be described (at once for JPEG; after the SPS/PPS
    /// for H.264). Failing to write it is logged, not fatal: the stream is still pushed.
    pub(super) fn write_sdp_out(&mut self, now: Instant) {
        let (Some(path), Some(push)) = (self.sdp_out.as_ref(), self.push.as_ref()) else { return };
        let Some(stream) = self.hub.stream_info(now) else { return };
        let dest_ip = push.dest.ip().to_canonical().to_string();
        let mut sdp = [0u8; limits::MAX_SDP_BYTES];
        let params = SdpParams {
            session_id: u64::from(stream.ssrc),
            session_version: 1,
            origin_addr: &self.push_origin,
            codec: stream.codec,
            payload_type: stream.codec.payload_type(),
            destination: Some((&dest_ip, push.dest.port())),
            sps: stream.sps,
            pps: stream.pps,
            framerate: self.cfg.fps,
            bandwidth_kbps: stream.bitrate_kbps,
        };
        match write_sdp(&params, &mut sdp) {
            Ok(n) => match std::fs::write(path, &sdp[..n]) {
                Ok(()) => log::info!("{}: push mode: SDP written to {}", self.cfg.path, path.display()),
                Err(e) => log::error!("{} sdp-out {}: {e}", self.cfg.name, path.display()),
            },
            Err(_) => log::error!("{} sdp-out: SDP larger than {} bytes", self.cfg.name, limits::MAX_SDP_BYTES),
        }
        self.sdp_out = None;
    }
}

impl EventLoop<'_> {
    pub(super) fn on_pipeline(&mut self, stream: usize, index: usize, revents: i16, now: Instant) {
        self.drive_pipeline(stream, now, |p, sink| p.on_ready(index, revents, now, sink));
    }

    /// Runs one call of stream `si`'s pipeline, packetizes what it produced, and fans it out. A
    /// failing pipeline is dropped and rebuilt later; sessions stay.
    pub(super) fn drive_pipeline(
        &mut self,
        si: usize,
        now: Instant,
        call: impl FnOnce(&mut dyn Pipeline, &mut Sink<'_>) -> io::Result<()>,
    ) {
        let st = &mut self.streams[si];
        let Some(pipeline) = st.pipeline.as_mut() else { return };
        let mut any = false;
        let mut idr = false;
        let stalled = st.fault_stalled;
        let jpeg_stream = st.hub.codec() == Codec::Jpeg;
        // An MJPEG camera's snapshots are its capturing stream's own JPEGs.
        let snapshots = self.cameras[st.cfg.camera]
            .snapshots
            .as_mut()
            .filter(|_| jpeg_stream && !st.pipeline_cfg.fed && pipeline.raw_layout().is_none())
            .map(|s| &mut s.writer);
        let result = {
            let mut snapshots = snapshots;
            let hub = &mut st.hub;
            let encode_latency = &mut st.encode_latency;
            let recorder = &mut st.recorder;
            let http = &mut self.http;
            let webrtc = &mut self.webrtc;
            let mut sink = |data: &[u8], capture: Instant| {
                if stalled {
                    return;
                }
                if let Some(h) = http.as_mut().filter(|_| jpeg_stream) {
                    h.store_frame(si, data, now);
                }
                if let Some(w) = snapshots.as_mut() {
                    if w.due(capture) {
                        w.push(data);
                    }
                }
                let p = hub.push(data, capture);
                if let Some(r) = recorder.as_mut().filter(|_| p.count > 0) {
                    r.push(data, capture, p.idr);
                }
                if p.count > 0 {
                    let us = now.saturating_duration_since(capture).as_micros().min(u128::from(u32::MAX)) as u32;
                    encode_latency.push(us);
                }
                if let Some(w) = webrtc.as_mut().filter(|_| p.count > 0 && !jpeg_stream) {
                    let (sps, pps) = hub.parameter_sets();
                    let media_time = hub.media_time(capture);
                    let unit = super::webrtc::Unit { data, idr: p.idr, media_time, capture, sps, pps };
                    w.push_unit(si, &unit, now);
                }
                any |= p.count > 0;
                idr |= p.idr;
            };
            call(pipeline.as_mut(), &mut sink)
        };
        if any {
            st.last_unit = now;
            st.restart_backoff = RESTART_BACKOFF_MIN;
            if idr {
                // A natural IDR serves everyone waiting: no deferred request needed.
                st.idr.deferred = false;
            }
            st.pump_push();
            if let Some(g) = st.group.as_mut() {
                g.pump(&st.hub.ring);
            }
            if st.sdp_out.is_some() {
                st.write_sdp_out(now);
            }
            // Fair order: each access unit starts the fan-out one slot further on, so no client
            // is always the last to get its packets.
            let n = self.slots.len();
            let first = self.streams[si].fanout_start % n.max(1);
            self.streams[si].fanout_start = self.streams[si].fanout_start.wrapping_add(1);
            self.fan_out(si, first, now);
            if let Some(h) = self.http.as_mut() {
                h.pump_stream(si, now);
            }
            self.advance_publish(si, now);
            // Server-added latency: from the unit being available (poll returned) to its last
            // packet handed to the kernel for every client.
            let us = Instant::now().saturating_duration_since(now).as_micros().min(u128::from(u32::MAX)) as u32;
            if self.latency_us.len() == self.latency_us.capacity() {
                self.latency_us.clear();
            }
            self.latency_us.push(us);
            self.streams[si].latency.push(us);
        }
        if let Err(e) = result {
            let st = &mut self.streams[si];
            log::error!(
                "{}: pipeline failed: {e}; rebuilding in {:?} (sessions stay up)",
                st.cfg.path,
                st.restart_backoff
            );
            st.drop_pipeline(now);
        }
    }

    /// SIGHUP: every stream's source and encoder are rebuilt, sessions stay.
    pub(super) fn rebuild_all(&mut self, now: Instant) {
        for st in &mut self.streams {
            st.drop_pipeline(now);
            st.restart_at = Some(now);
        }
    }

    /// Stall detection and rebuilding of stream `si`, from `on_timers`.
    pub(super) fn supervise_pipeline(&mut self, si: usize, now: Instant) {
        if self.streams[si].idr.poll(now) {
            if let Some(p) = self.streams[si].pipeline.as_mut().filter(|p| p.idr_control() == IdrControl::OnRequest) {
                p.request_idr();
            }
        }
        if self.streams[si].pipeline.as_ref().and_then(|p| p.next_deadline()).is_some_and(|t| now >= t) {
            self.drive_pipeline(si, now, |p, sink| p.on_timer(now, sink));
        }
        let stall_timeout = self.stall_timeout;
        // A fed stream whose camera delivers nothing is not stalled itself: its camera is
        // rebuilt, and it waits (from now on, so it is not rebuilt the moment frames return).
        let camera_down =
            self.streams[si].pipeline_cfg.fed && !self.camera_delivering(self.streams[si].cfg.camera, now);
        let st = &mut self.streams[si];
        if camera_down {
            st.last_unit = now;
        }
        if st.pipeline.is_some() && now.saturating_duration_since(st.last_unit) >= stall_timeout {
            log::warn!(
                "{}: no access unit for {:.1} s: restarting source and encoder (sessions stay up)",
                st.cfg.path,
                now.saturating_duration_since(st.last_unit).as_secs_f64()
            );
            st.drop_pipeline(now);
            // A stall is not an error of the new pipeline: try at once.
            st.restart_at = Some(now);
        }
        if st.restart_at.is_none_or(|t| now < t) {
            return;
        }
        st.restart_at = None;
        let camera_layout = self.camera_layout(self.streams[si].cfg.camera);
        match (self.factory)(si, camera_layout) {
            Ok(p) => {
                let st = &mut self.streams[si];
                log::info!("{}: source restarted: {}", st.cfg.path, p.describe());
                if let Some((sps, pps)) = p.parameter_sets() {
                    st.hub.prime(&sps, &pps);
                }
                st.pipeline = Some(p);
                st.attach_abr();
                st.last_unit = now;
                st.restarts += 1;
                if let Some(g) = st.group.as_mut() {
                    g.restart_at_keyframe();
                }
                self.on_pipeline_replaced(si, now);
                // Clients in mid-GOP need the new stream's first IDR.
                for s in self.slots.iter_mut().filter(|s| s.stream == si) {
                    s.reader.waiting_keyframe = true;
                }
            }
            Err(e) => {
                let st = &mut self.streams[si];
                log::warn!("{}: source restart failed: {e}; next try in {:?}", st.cfg.path, st.restart_backoff);
                st.drop_pipeline(now);
            }
        }
    }

    /// A new pipeline of stream `si`: its camera's feeds are handed out again (its own tap, or
    /// the camera's taps when it captures), and HTTP learns whether JPEG frames can be had.
    fn on_pipeline_replaced(&mut self, si: usize, now: Instant) {
        let camera = self.streams[si].cfg.camera;
        self.feed_camera(camera);
        for sj in 0..self.streams.len() {
            if self.streams[sj].cfg.camera != camera {
                continue;
            }
            let supply = self.jpeg_supply(sj);
            let on_demand = matches!(supply, http::JpegSupply::OnDemand);
            let st = &mut self.streams[sj];
            if on_demand != st.jpeg_on_demand {
                st.jpeg_on_demand = on_demand;
                if let Some(h) = self.http.as_mut() {
                    h.set_supply(sj, supply, now);
                }
                if !on_demand {
                    self.stop_side_jpeg(sj, "the rebuilt camera gives no raw frames");
                }
            }
        }
    }

    /// Starts HTTP's JPEG encoder of stream `si` when clients want frames and stops it when none
    /// has for a while.
    pub(super) fn supervise_side_jpeg(&mut self, si: usize, now: Instant) {
        let camera_layout = self.camera_layout(self.streams[si].cfg.camera);
        let st = &mut self.streams[si];
        let wanted = st.jpeg_on_demand && self.http.as_ref().is_some_and(|h| h.wants_frames(si, now));
        match (&st.side_jpeg, wanted) {
            (None, true) if st.side_retry_at.is_none_or(|t| now >= t) => {
                match side_jpeg::SideJpeg::start(&st.pipeline_cfg, camera_layout) {
                    Ok(side) => {
                        st.side_jpeg = Some(side);
                        st.side_retry_at = None;
                        let camera = st.cfg.camera;
                        self.feed_camera(camera);
                    }
                    Err(e) => {
                        log::warn!(
                            "http {}: cannot start the JPEG encoder: {e}; next try in {:?}",
                            st.cfg.path,
                            side_jpeg::RETRY
                        );
                        st.side_retry_at = Some(now + side_jpeg::RETRY);
                    }
                }
            }
            (Some(_), false) => self.stop_side_jpeg(si, "no HTTP client wants frames"),
            _ => {}
        }
    }

    fn stop_side_jpeg(&mut self, si: usize, why: &str) {
        let st = &mut self.streams[si];
        if let Some(side) = st.side_jpeg.take() {
            let camera = st.cfg.camera;
            self.feed_camera(camera);
            // Joins the worker thread: the log line means it is gone.
            drop(side);
            log::info!("http: JPEG encoder stopped: {why}");
        }
    }

    /// JPEG frames from HTTP's encoder go to HTTP only.
    pub(super) fn on_side_jpeg(&mut self, si: usize, index: usize, revents: i16, now: Instant) {
        let Some(side) = self.streams[si].side_jpeg.as_mut() else { return };
        let http = &mut self.http;
        let result = side.pipeline.on_ready(index, revents, now, &mut |jpeg: &[u8], _capture| {
            if let Some(h) = http.as_mut() {
                h.store_frame(si, jpeg, now);
            }
        });
        if let Some(h) = self.http.as_mut() {
            h.pump_stream(si, now);
        }
        if let Err(e) = result {
            log::warn!("http: JPEG encoder failed: {e}; next try in {:?}", side_jpeg::RETRY);
            self.stop_side_jpeg(si, "failed");
            self.streams[si].side_retry_at = Some(now + side_jpeg::RETRY);
        }
    }
}
