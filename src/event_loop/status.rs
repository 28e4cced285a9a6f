//! `/status` (JSON) and `/metrics` (Prometheus text format 0.0.4), rendered by the loop when an
//! HTTP client asks (see `http::Report`), from the figures the loop keeps anyway: per camera,
//! per stream and per session. Nothing here runs unless someone asks.
//!
//! Rates (frame rate, bitrate) are measured over the last few seconds from once-a-second samples
//! of each hub's counters; server-added latency percentiles over each stream's last access units.

use std::fmt::Write as _;
use std::time::Instant;

use super::abr;
use super::http::Report;
use super::streams::Stream;
use super::EventLoop;
use crate::config::SourceSpec;
use crate::record::snapshot::SnapshotStatus;
use crate::record::{RecorderState, RecorderStatus};
use crate::rtp::Codec;
use crate::rtsp::session::{Delivery, SessionState};

/// A JSON string literal.
struct Json<'a>(&'a str);

impl std::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A Prometheus label value (quotes included).
struct Label<'a>(&'a str);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::H264 => "h264",
        Codec::Jpeg => "mjpeg",
    }
}

fn source_name(s: &SourceSpec) -> String {
    match s {
        SourceSpec::TestPattern => "testpattern".into(),
        SourceSpec::V4l2 => "v4l2".into(),
        SourceSpec::Libcamera => "libcamera".into(),
        SourceSpec::File(p) => format!("file:{}", p.display()),
    }
}

/// Clients of one stream by transport.
#[derive(Debug, Default, Clone, Copy)]
struct Clients {
    udp: usize,
    tcp: usize,
    multicast: usize,
    http: usize,
    webrtc: usize,
}

/// One session as reported.
struct SessionRow {
    id: String,
    stream: usize,
    peer: String,
    transport: &'static str,
    state: &'static str,
    packets: u64,
    bytes: u64,
    dropped: u64,
    reports: u32,
    fraction_lost: f64,
    cumulative_lost: i32,
    jitter_s: f64,
    highest_sequence: u32,
    /// RTT from the last receiver report that named one of our sender reports, if any.
    rtt_s: Option<f64>,
    nacks: u32,
    plis: u32,
    firs: u32,
    rtx: crate::rtp::rtx::RtxCounters,
    avpf: bool,
}

impl EventLoop<'_> {
    /// Renders and answers every report HTTP clients wait for.
    pub(super) fn answer_reports(&mut self, now: Instant) {
        let Some(h) = self.http.as_ref() else { return };
        let wanted: heapless::Vec<Report, 8> = h.reports_wanted().take(8).collect();
        for report in wanted {
            let mut body = std::mem::take(&mut self.report_buf);
            body.clear();
            let status = match report {
                Report::Status => {
                    self.render_status(now, &mut body);
                    200
                }
                Report::Metrics => {
                    self.render_metrics(now, &mut body);
                    200
                }
                Report::Record { stream, start } => self.switch_recording(stream, start, &mut body),
                Report::WhepEnd { stream, id } => self.end_whep(stream, id, &mut body),
            };
            if let Some(h) = self.http.as_mut() {
                h.answer_reports(report, status, &body, now);
            }
            self.report_buf = body;
        }
    }

    /// `POST /PATH/record?start|stop`: switches the stream's recorder; answers its state.
    fn switch_recording(&mut self, si: usize, start: bool, out: &mut String) -> u16 {
        let Some(st) = self.streams.get(si) else { return 404 };
        let Some(r) = st.recorder.as_ref() else {
            let _ = writeln!(
                out,
                "{{\"path\":{},\"error\":\"recording is not configured for this stream (record-dir)\"}}",
                Json(&st.cfg.path)
            );
            return 409;
        };
        r.set_recording(start);
        log::info!("{}: recording {} (HTTP)", st.cfg.path, if start { "started" } else { "stopped" });
        let _ = writeln!(out, "{{\"path\":{},\"recording\":{start}}}", Json(&st.cfg.path));
        200
    }

    fn clients(&self, si: usize) -> Clients {
        let mut c = Clients {
            http: self.http.as_ref().map_or(0, |h| h.streaming(si)),
            webrtc: self.webrtc.as_ref().map_or(0, |w| w.sessions(si)),
            ..Clients::default()
        };
        for (i, sess) in self.server.sessions().iter().enumerate() {
            if sess.state != SessionState::Playing || self.slots[i].stream != si {
                continue;
            }
            match sess.delivery {
                Delivery::Udp { .. } => c.udp += 1,
                Delivery::Interleaved { .. } => c.tcp += 1,
                Delivery::Multicast { .. } => c.multicast += 1,
            }
        }
        c
    }

    fn sessions(&self) -> Vec<SessionRow> {
        let mut rows = Vec::new();
        for (i, sess) in self.server.sessions().iter().enumerate() {
            if sess.state == SessionState::Free {
                continue;
            }
            let s = &self.slots[i];
            let r = sess.reception;
            rows.push(SessionRow {
                id: format!("{:016X}", sess.id),
                stream: sess.stream,
                peer: s.peer.map_or_else(String::new, |p| p.to_string()),
                transport: match sess.delivery {
                    Delivery::Udp { .. } => "udp",
                    Delivery::Interleaved { .. } => "tcp",
                    Delivery::Multicast { .. } => "multicast",
                },
                state: if sess.state == SessionState::Playing { "playing" } else { "ready" },
                packets: s.reader.sent,
                bytes: s.reader.bytes,
                dropped: s.reader.dropped,
                reports: r.reports,
                fraction_lost: f64::from(r.fraction_lost) / 256.0,
                cumulative_lost: r.cumulative_lost,
                jitter_s: f64::from(r.jitter) / 90_000.0,
                highest_sequence: r.highest_sequence,
                rtt_s: r.rtt_us.map(|us| f64::from(us) / 1e6),
                nacks: r.nacks,
                plis: r.plis,
                firs: r.firs,
                rtx: s.rtx.as_ref().map(|x| x.counters).unwrap_or_default(),
                avpf: sess.profile == crate::rtsp::transport::Profile::Avpf,
            });
        }
        rows
    }

    /// The stream that stands for camera `c` (its first), until cameras are shared.
    fn camera_stream(&self, c: usize) -> Option<&Stream<'_>> {
        self.streams.iter().find(|st| st.cfg.camera == c)
    }

    fn render_status(&self, now: Instant, out: &mut String) {
        let _ = self.write_status(now, out);
    }

    fn write_status(&self, now: Instant, out: &mut String) -> std::fmt::Result {
        write!(out, "{{\"uptime_s\":{:.1},\"cameras\":[", now.saturating_duration_since(self.epoch).as_secs_f64())?;
        for (c, cam) in self.cfg.cameras.iter().enumerate() {
            let Some(st) = self.camera_stream(c) else { continue };
            let format = st.pipeline.as_ref().map_or_else(String::new, |p| p.describe());
            write!(
                out,
                "{}{{\"name\":{},\"source\":{},\"device\":{},\"format\":{},\"width\":{},\"height\":{},\"fps\":{:.2},\"state\":{},\"restarts\":{},\"snapshots\":",
                if c > 0 { "," } else { "" },
                Json(&cam.name),
                Json(&source_name(&cam.source)),
                Json(&cam.device),
                Json(&format),
                cam.width,
                cam.height,
                st.measured().0,
                Json(st.state(now)),
                st.restarts
            )?;
            match self.cameras[c].snapshots.as_ref().map(|s| s.status()) {
                None => out.push_str("null"),
                Some(s) => write!(
                    out,
                    "{{\"written\":{},\"bytes\":{},\"dropped\":{},\"skipped\":{},\"deleted\":{},\"paused\":{},\"latest\":{}}}",
                    s.written,
                    s.bytes,
                    s.dropped,
                    s.skipped,
                    s.deleted,
                    s.paused,
                    s.latest.as_deref().map_or_else(|| "null".to_owned(), |l| Json(l).to_string())
                )?,
            }
            out.push_str(",\"raw_socket\":");
            match &self.cameras[c].raw {
                None => out.push_str("null}"),
                Some(raw) => {
                    let r = raw.status();
                    let n = r.counters;
                    write!(
                        out,
                        "{{\"path\":{},\"consumers\":{},\"slots\":{},\"frames\":{},\"copied\":{},\"sent\":{},\"skipped\":{},\"refused\":{}}}}}",
                        Json(&raw.path().to_string_lossy()),
                        r.consumers,
                        r.capacity,
                        n.frames,
                        n.copied,
                        n.sent,
                        n.skipped,
                        n.refused
                    )?;
                }
            }
        }
        out.push_str("],\"streams\":[");
        for (si, st) in self.streams.iter().enumerate() {
            let (fps, bps) = st.measured();
            let (p50, p99) = st.latency.p50_p99();
            let (e50, e99) = st.encode_latency.p50_p99();
            let cl = self.clients(si);
            let cfg = st.cfg;
            write!(
                out,
                "{}{{\"name\":{},\"path\":{},\"camera\":{},\"codec\":{},\"width\":{},\"height\":{},\"fps_configured\":{},\"bitrate_configured\":{},\"fps\":{:.2},\"bitrate\":{:.0},\"access_units\":{},\"idrs\":{},\"keyframe_requests\":{},\"retransmitted\":{},\"packets\":{},\"state\":{},\"restarts\":{},\"server_latency_us\":{{\"p50\":{p50},\"p99\":{p99}}},\"encode_latency_us\":{{\"p50\":{e50},\"p99\":{e99}}},\"clients\":{{\"udp\":{},\"tcp\":{},\"multicast\":{},\"http_mjpeg\":{},\"webrtc\":{}}},\"webrtc\":{},\"publish\":{},\"abr\":",
                if si > 0 { "," } else { "" },
                Json(&cfg.name),
                Json(&cfg.path),
                Json(&self.cfg.cameras[cfg.camera].name),
                Json(codec_name(cfg.codec)),
                cfg.width,
                cfg.height,
                cfg.fps,
                cfg.bitrate,
                fps,
                bps,
                st.hub.units,
                st.hub.idrs,
                self.keyframe_requests[si],
                self.retransmitted(si),
                st.hub.packets,
                Json(st.state(now)),
                st.restarts,
                cl.udp,
                cl.tcp,
                cl.multicast,
                cl.http,
                cl.webrtc,
                self.webrtc.is_some() && cfg.codec == Codec::H264,
                self.publish_json(si)
            )?;
            self.write_abr_status(st, now, out)?;
            out.push_str(",\"recorder\":");
            match st.recorder.as_ref().map(|r| (r.is_recording_wanted(), r.status())) {
                None => out.push_str("null}"),
                Some((wanted, r)) => write!(
                    out,
                    "{{\"wanted\":{wanted},\"state\":{},\"segments\":{},\"fragments\":{},\"bytes\":{},\"dropped_units\":{},\"deleted_segments\":{},\"fsyncs\":{},\"fsync_max_us\":{},\"current\":{},\"last_error\":{}}}}}",
                    Json(r.state.as_str()),
                    r.segments,
                    r.fragments,
                    r.bytes,
                    r.dropped_units,
                    r.deleted_segments,
                    r.fsyncs,
                    r.fsync_max_us,
                    r.current.as_deref().map_or_else(|| "null".to_owned(), |c| Json(c).to_string()),
                    r.last_error.as_deref().map_or_else(|| "null".to_owned(), |c| Json(c).to_string()),
                )?,
            }
        }
        out.push_str("],\"sessions\":[");
        for (k, r) in self.sessions().iter().enumerate() {
            write!(
                out,
                "{}{{\"id\":{},\"stream\":{},\"peer\":{},\"transport\":{},\"profile\":{},\"state\":{},\"packets_sent\":{},\"bytes_sent\":{},\"packets_dropped\":{},\"rtcp\":{{\"reports\":{},\"fraction_lost\":{:.4},\"cumulative_lost\":{},\"jitter_s\":{:.6},\"highest_sequence\":{},\"rtt_s\":{},\"nacks\":{},\"plis\":{},\"firs\":{}}},\"retransmission\":{{\"nacked\":{},\"retransmitted\":{},\"too_old\":{},\"over_budget\":{},\"unknown\":{}}}}}",
                if k > 0 { "," } else { "" },
                Json(&r.id),
                Json(&self.streams[r.stream].cfg.path),
                Json(&r.peer),
                Json(r.transport),
                Json(if r.avpf { "RTP/AVPF" } else { "RTP/AVP" }),
                Json(r.state),
                r.packets,
                r.bytes,
                r.dropped,
                r.reports,
                r.fraction_lost,
                r.cumulative_lost,
                r.jitter_s,
                r.highest_sequence,
                r.rtt_s.map_or_else(|| "null".to_owned(), |v| format!("{v:.6}")),
                r.nacks,
                r.plis,
                r.firs,
                r.rtx.nacked,
                r.rtx.retransmitted,
                r.rtx.too_old,
                r.rtx.over_budget,
                r.rtx.unknown
            )?;
        }
        out.push_str("],\"webrtc\":");
        self.write_webrtc_status(out)?;
        out.push_str("}\n");
        Ok(())
    }

    /// Stream `si`'s publisher: `null`, or where it publishes, its state and counters.
    fn publish_json(&self, si: usize) -> String {
        let Some(p) = self.publishers.get(si).and_then(Option::as_ref) else { return "null".into() };
        let (sent, dropped) = p.counters();
        format!(
            "{{\"url\":{},\"state\":{},\"connects\":{},\"packets_sent\":{sent},\"packets_dropped\":{dropped},\"last_error\":{}}}",
            Json(&p.url().to_string()),
            Json(p.state_name()),
            p.connects,
            Json(&p.last_error)
        )
    }

    /// `null` when WebRTC is off, else its slots, totals and sessions.
    fn write_webrtc_status(&self, out: &mut String) -> std::fmt::Result {
        let Some(w) = &self.webrtc else {
            out.push_str("null");
            return Ok(());
        };
        write!(out, "{{\"slots\":{},\"created\":{},\"ended\":{},\"sessions\":[", w.slots(), w.created, w.ended)?;
        for (k, p) in w.status().enumerate() {
            write!(
                out,
                "{}{{\"id\":\"{:016x}\",\"stream\":{},\"peer\":{},\"connected\":{},\"frames_sent\":{},\"bytes_sent\":{},\"keyframe_requests\":{}}}",
                if k > 0 { "," } else { "" },
                p.id,
                Json(&self.streams[p.stream].cfg.path),
                Json(&p.peer.map_or_else(String::new, |a| a.to_string())),
                p.connected,
                p.frames,
                p.bytes,
                p.keyframe_requests
            )?;
        }
        out.push_str("]}");
        Ok(())
    }

    /// A stream's `abr` object: `null` when off.
    fn write_abr_status(&self, st: &Stream<'_>, now: Instant, out: &mut String) -> std::fmt::Result {
        let Some(a) = st.abr.as_ref() else {
            out.push_str("null");
            return Ok(());
        };
        let core_now = self.core_now(now);
        let (min, max) = a.ctl.bounds();
        let state = if a.drives { a.ctl.state(core_now).as_str() } else { "left alone (passthrough)" };
        let worst = a.ctl.worst(core_now).map_or(0.0, |w| f64::from(w.2) / 256.0);
        write!(
            out,
            "{{\"state\":{},\"target_bps\":{},\"min_bps\":{min},\"max_bps\":{max},\"receivers\":{},\"worst_fraction_lost\":{worst:.4},\"changes\":{},\"last_change\":{}}}",
            Json(state),
            a.ctl.target(),
            a.ctl.receivers(core_now),
            a.changes,
            a.last.as_deref().map_or_else(|| "null".to_owned(), |l| Json(l).to_string())
        )
    }

    fn render_metrics(&self, now: Instant, out: &mut String) {
        let _ = self.write_metrics(now, out);
    }

    fn write_metrics(&self, now: Instant, out: &mut String) -> std::fmt::Result {
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP uavstream_{name} {help}\n# TYPE uavstream_{name} {kind}");
        };
        family(out, "uptime_seconds", "gauge", "Seconds since the daemon started.");
        writeln!(out, "uavstream_uptime_seconds {:.1}", now.saturating_duration_since(self.epoch).as_secs_f64())?;

        let cams: Vec<(&str, &Stream<'_>)> = (0..self.cfg.cameras.len())
            .filter_map(|c| Some((self.cfg.cameras[c].name.as_str(), self.camera_stream(c)?)))
            .collect();
        family(out, "camera_up", "gauge", "1 while the camera delivers frames, 0 while it is stalled or rebuilt.");
        for (name, st) in &cams {
            writeln!(out, "uavstream_camera_up{{camera={}}} {}", Label(name), u8::from(st.state(now) == "streaming"))?;
        }
        family(out, "camera_fps", "gauge", "Measured frames per second of the camera.");
        for (name, st) in &cams {
            writeln!(out, "uavstream_camera_fps{{camera={}}} {:.3}", Label(name), st.measured().0)?;
        }
        family(out, "camera_restarts_total", "counter", "Rebuilds of the camera's source and encoder since start.");
        for (name, st) in &cams {
            writeln!(out, "uavstream_camera_restarts_total{{camera={}}} {}", Label(name), st.restarts)?;
        }

        let raws: Vec<(&str, crate::raw::RawStatus)> = (0..self.cfg.cameras.len())
            .filter_map(|c| Some((self.cfg.cameras[c].name.as_str(), self.cameras[c].raw.as_ref()?.status())))
            .collect();
        type RawValue = dyn Fn(&crate::raw::RawStatus) -> u64;
        let raw_families: [(&str, &str, &str, &RawValue); 4] = [
            ("raw_consumers", "gauge", "Processes connected to the camera's raw-frame socket.", &|r| {
                r.consumers as u64
            }),
            (
                "raw_frames_sent_total",
                "counter",
                "Raw frames handed to consumers (one per consumer and frame).",
                &|r| r.counters.sent,
            ),
            (
                "raw_frames_skipped_total",
                "counter",
                "Raw frames consumers were skipped for because they had not read the previous one (newest wins).",
                &|r| r.counters.skipped,
            ),
            (
                "raw_consumers_refused_total",
                "counter",
                "Consumers refused because every raw-clients slot was taken.",
                &|r| r.counters.refused,
            ),
        ];
        for (name, kind, help, value) in raw_families {
            if raws.is_empty() {
                break;
            }
            family(out, name, kind, help);
            for (cam, r) in &raws {
                writeln!(out, "uavstream_{name}{{camera={}}} {}", Label(cam), value(r))?;
            }
        }

        let per_stream = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> String| {
            family(out, name, kind, help);
            for (si, st) in self.streams.iter().enumerate() {
                let _ = writeln!(out, "uavstream_{name}{{stream={}}} {}", Label(&st.cfg.path), value(si));
            }
        };
        per_stream(out, "stream_fps", "gauge", "Measured access units per second.", &|si| {
            format!("{:.3}", self.streams[si].measured().0)
        });
        per_stream(out, "stream_bitrate_bps", "gauge", "Measured payload bit rate.", &|si| {
            format!("{:.0}", self.streams[si].measured().1)
        });
        per_stream(out, "stream_access_units_total", "counter", "Access units (frames) sent into the stream.", &|si| {
            self.streams[si].hub.units.to_string()
        });
        per_stream(out, "stream_idrs_total", "counter", "IDR pictures (every JPEG frame counts).", &|si| {
            self.streams[si].hub.idrs.to_string()
        });
        per_stream(
            out,
            "stream_keyframe_requests_total",
            "counter",
            "PLI and FIR packets received about the stream.",
            &|si| self.keyframe_requests[si].to_string(),
        );
        per_stream(
            out,
            "stream_retransmitted_packets_total",
            "counter",
            "Packets retransmitted (RTX) to the stream's sessions.",
            &|si| self.retransmitted(si).to_string(),
        );
        per_stream(
            out,
            "stream_packets_total",
            "counter",
            "RTP packets packetized once into the stream's ring.",
            &|si| self.streams[si].hub.packets.to_string(),
        );
        let quantiles = |out: &mut String, name: &str, help: &str, ring: &dyn Fn(&Stream<'_>) -> (u32, u32)| {
            family(out, name, "gauge", help);
            for st in &self.streams {
                let (p50, p99) = ring(st);
                for (q, v) in [("0.5", p50), ("0.99", p99)] {
                    let _ = writeln!(
                        out,
                        "uavstream_{name}{{stream={},quantile=\"{q}\"}} {:.6}",
                        Label(&st.cfg.path),
                        f64::from(v) / 1e6
                    );
                }
            }
        };
        quantiles(
            out,
            "stream_server_latency_seconds",
            "Server-added latency per access unit over the last ones, by quantile.",
            &|st| st.latency.p50_p99(),
        );
        quantiles(
            out,
            "stream_encode_latency_seconds",
            "Capture to access unit ready in the loop (encoder and its queue), over the last units, by quantile.",
            &|st| st.encode_latency.p50_p99(),
        );
        let abr_streams: Vec<&Stream<'_>> = self.streams.iter().filter(|st| st.abr.is_some()).collect();
        if !abr_streams.is_empty() {
            let core_now = self.core_now(now);
            family(out, "stream_abr_target_bps", "gauge", "Adaptive bitrate: the encoder's target now.");
            for st in &abr_streams {
                let t = st.abr.as_ref().map_or(0, |a| a.ctl.target());
                writeln!(out, "uavstream_stream_abr_target_bps{{stream={}}} {t}", Label(&st.cfg.path))?;
            }
            family(out, "stream_abr_changes_total", "counter", "Adaptive bitrate: changes of the target since start.");
            for st in &abr_streams {
                let n = st.abr.as_ref().map_or(0, |a| a.changes);
                writeln!(out, "uavstream_stream_abr_changes_total{{stream={}}} {n}", Label(&st.cfg.path))?;
            }
            family(out, "stream_abr_state", "gauge", "Adaptive bitrate: 1 for the controller's state now.");
            for st in &abr_streams {
                let Some(a) = st.abr.as_ref() else { continue };
                let now_state = a.drives.then(|| a.ctl.state(core_now));
                for s in abr::STATES {
                    writeln!(
                        out,
                        "uavstream_stream_abr_state{{stream={},state=\"{}\"}} {}",
                        Label(&st.cfg.path),
                        s.as_str(),
                        u8::from(now_state == Some(s))
                    )?;
                }
            }
        }
        family(out, "stream_clients", "gauge", "Clients playing the stream, by transport.");
        for (si, st) in self.streams.iter().enumerate() {
            let c = self.clients(si);
            for (t, n) in [("udp", c.udp), ("tcp", c.tcp), ("multicast", c.multicast), ("http", c.http)] {
                writeln!(out, "uavstream_stream_clients{{stream={},transport=\"{t}\"}} {n}", Label(&st.cfg.path))?;
            }
        }

        let rows = self.sessions();
        let per_session =
            |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&SessionRow) -> String| {
                family(out, name, kind, help);
                for r in &rows {
                    let _ = writeln!(
                        out,
                        "uavstream_{name}{{session=\"{}\",stream={},peer={},transport=\"{}\"}} {}",
                        r.id,
                        Label(&self.streams[r.stream].cfg.path),
                        Label(&r.peer),
                        r.transport,
                        value(r)
                    );
                }
            };
        per_session(out, "session_packets_sent_total", "counter", "RTP packets sent to the session.", &|r| {
            r.packets.to_string()
        });
        per_session(
            out,
            "session_bytes_sent_total",
            "counter",
            "RTP bytes (headers included) sent to the session.",
            &|r| r.bytes.to_string(),
        );
        per_session(
            out,
            "session_packets_dropped_total",
            "counter",
            "Packets the session skipped or the kernel refused.",
            &|r| r.dropped.to_string(),
        );
        per_session(out, "session_rtcp_reports_total", "counter", "RTCP receiver report blocks received.", &|r| {
            r.reports.to_string()
        });
        per_session(
            out,
            "session_rtcp_fraction_lost",
            "gauge",
            "Fraction lost in the last receiver report (0-1).",
            &|r| format!("{:.6}", r.fraction_lost),
        );
        per_session(
            out,
            "session_rtcp_cumulative_lost",
            "gauge",
            "Cumulative packets lost in the last receiver report.",
            &|r| r.cumulative_lost.to_string(),
        );
        per_session(
            out,
            "session_rtcp_jitter_seconds",
            "gauge",
            "Interarrival jitter in the last receiver report.",
            &|r| format!("{:.6}", r.jitter_s),
        );
        per_session(
            out,
            "session_rtcp_rtt_seconds",
            "gauge",
            "Round-trip time from the last receiver report naming one of our sender reports (NaN: none yet).",
            &|r| r.rtt_s.map_or_else(|| "NaN".to_owned(), |v| format!("{v:.6}")),
        );
        per_session(
            out,
            "session_rtcp_keyframe_requests_total",
            "counter",
            "PLI and FIR packets about the session's stream.",
            &|r| (u64::from(r.plis) + u64::from(r.firs)).to_string(),
        );
        per_session(
            out,
            "session_nacked_packets_total",
            "counter",
            "Sequence numbers the client reported lost (generic NACK).",
            &|r| r.rtx.nacked.to_string(),
        );
        per_session(
            out,
            "session_retransmitted_packets_total",
            "counter",
            "Packets retransmitted (RTX) to the session.",
            &|r| r.rtx.retransmitted.to_string(),
        );
        family(out, "session_nacks_ignored_total", "counter", "NACKed packets not retransmitted, by reason.");
        for r in &rows {
            for (reason, n) in
                [("too_old", r.rtx.too_old), ("over_budget", r.rtx.over_budget), ("unknown", r.rtx.unknown)]
            {
                writeln!(
                    out,
                    "uavstream_session_nacks_ignored_total{{session=\"{}\",stream={},peer={},transport=\"{}\",reason=\"{reason}\"}} {n}",
                    r.id,
                    Label(&self.streams[r.stream].cfg.path),
                    Label(&r.peer),
                    r.transport,
                )?;
            }
        }

        let snapshots: Vec<(&str, SnapshotStatus)> = self
            .cfg
            .cameras
            .iter()
            .zip(&self.cameras)
            .filter_map(|(cfg, rt)| Some((cfg.name.as_str(), rt.snapshots.as_ref()?.status())))
            .collect();
        let per_snapshotter =
            |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&SnapshotStatus) -> u64| {
                family(out, name, kind, help);
                for (camera, s) in &snapshots {
                    let _ = writeln!(out, "uavstream_{name}{{camera={}}} {}", Label(camera), value(s));
                }
            };
        per_snapshotter(out, "snapshots_written_total", "counter", "Snapshots written.", &|s| s.written);
        per_snapshotter(out, "snapshots_bytes_total", "counter", "Bytes of snapshots written.", &|s| s.bytes);
        per_snapshotter(
            out,
            "snapshots_dropped_total",
            "counter",
            "Snapshots dropped while the writer was busy (slow disk).",
            &|s| s.dropped,
        );
        per_snapshotter(
            out,
            "snapshots_skipped_total",
            "counter",
            "Snapshots skipped: disk full or a failed write.",
            &|s| s.skipped,
        );
        per_snapshotter(out, "snapshots_deleted_total", "counter", "Snapshots deleted by retention.", &|s| s.deleted);
        per_snapshotter(out, "snapshots_paused", "gauge", "1 while snapshots are paused (disk full).", &|s| {
            u64::from(s.paused)
        });

        let recorders: Vec<(&str, RecorderStatus)> =
            self.streams.iter().filter_map(|st| Some((st.cfg.path.as_str(), st.recorder.as_ref()?.status()))).collect();
        let per_recorder =
            |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&RecorderStatus) -> String| {
                family(out, name, kind, help);
                for (path, r) in &recorders {
                    let _ = writeln!(out, "uavstream_{name}{{stream={}}} {}", Label(path), value(r));
                }
            };
        per_recorder(out, "recorder_recording", "gauge", "1 while the stream is being recorded.", &|r| {
            u8::from(r.state == RecorderState::Recording).to_string()
        });
        per_recorder(out, "recorder_segments_total", "counter", "Recorded segments closed.", &|r| {
            r.segments.to_string()
        });
        per_recorder(out, "recorder_bytes_total", "counter", "Bytes written to recordings.", &|r| r.bytes.to_string());
        per_recorder(
            out,
            "recorder_dropped_units_total",
            "counter",
            "Access units the recorder dropped (slow disk).",
            &|r| r.dropped_units.to_string(),
        );
        per_recorder(out, "recorder_deleted_segments_total", "counter", "Segments deleted by retention.", &|r| {
            r.deleted_segments.to_string()
        });
        per_recorder(out, "recorder_fsync_max_seconds", "gauge", "Longest fsync so far.", &|r| {
            format!("{:.6}", r.fsync_max_us as f64 / 1e6)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Json, Label};

    #[test]
    fn json_strings_and_prometheus_labels_are_escaped() {
        assert_eq!(Json("a\"b\\c\nd\u{1}").to_string(), "\"a\\\"b\\\\c\\u000ad\\u0001\"");
        assert_eq!(Json("/live é").to_string(), "\"/live é\"");
        assert_eq!(Label("a\"b\\c\nd").to_string(), "\"a\\\"b\\\\c\\nd\"");
    }
}
