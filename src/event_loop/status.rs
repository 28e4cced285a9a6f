//! `/status` (JSON) and `/metrics` (Prometheus text format 0.0.4), rendered by the loop when an
//! HTTP client asks (see `http::Report`), from the figures the loop keeps anyway: per camera,
//! per stream and per session. Nothing here runs unless someone asks.
//!
//! Rates (frame rate, bitrate) are measured over the last few seconds from once-a-second samples
//! of each hub's counters; server-added latency percentiles over each stream's last access units.

use std::fmt::Write as _;
use std::time::Instant;

use super::http::Report;
use super::streams::{Stream, LATENCY_RING};
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
        SourceSpec::File(p) => format!("file:{}", p.display()),
    }
}

/// p50 and p99 of a stream's recent server-added latency, in µs.
fn latency_percentiles(st: &Stream<'_>) -> (u32, u32) {
    let n = st.latency_next.min(LATENCY_RING);
    if n == 0 {
        return (0, 0);
    }
    let mut v = [0u32; LATENCY_RING];
    v[..n].copy_from_slice(&st.latency[..n]);
    let v = &mut v[..n];
    v.sort_unstable();
    let pick = |q: f64| v[((n - 1) as f64 * q).round() as usize];
    (pick(0.5), pick(0.99))
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
                None => out.push_str("null}"),
                Some(s) => write!(
                    out,
                    "{{\"written\":{},\"bytes\":{},\"dropped\":{},\"skipped\":{},\"deleted\":{},\"paused\":{},\"latest\":{}}}}}",
                    s.written,
                    s.bytes,
                    s.dropped,
                    s.skipped,
                    s.deleted,
                    s.paused,
                    s.latest.as_deref().map_or_else(|| "null".to_owned(), |l| Json(l).to_string())
                )?,
            }
        }
        out.push_str("],\"streams\":[");
        for (si, st) in self.streams.iter().enumerate() {
            let (fps, bps) = st.measured();
            let (p50, p99) = latency_percentiles(st);
            let cl = self.clients(si);
            let cfg = st.cfg;
            write!(
                out,
                "{}{{\"name\":{},\"path\":{},\"camera\":{},\"codec\":{},\"width\":{},\"height\":{},\"fps_configured\":{},\"bitrate_configured\":{},\"fps\":{:.2},\"bitrate\":{:.0},\"access_units\":{},\"idrs\":{},\"packets\":{},\"state\":{},\"restarts\":{},\"server_latency_us\":{{\"p50\":{p50},\"p99\":{p99}}},\"clients\":{{\"udp\":{},\"tcp\":{},\"multicast\":{},\"http_mjpeg\":{},\"webrtc\":{}}},\"webrtc\":{},\"publish\":{},\"recorder\":",
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
                "{}{{\"id\":{},\"stream\":{},\"peer\":{},\"transport\":{},\"state\":{},\"packets_sent\":{},\"bytes_sent\":{},\"packets_dropped\":{},\"rtcp\":{{\"reports\":{},\"fraction_lost\":{:.4},\"cumulative_lost\":{},\"jitter_s\":{:.6},\"highest_sequence\":{}}}}}",
                if k > 0 { "," } else { "" },
                Json(&r.id),
                Json(&self.streams[r.stream].cfg.path),
                Json(&r.peer),
                Json(r.transport),
                Json(r.state),
                r.packets,
                r.bytes,
                r.dropped,
                r.reports,
                r.fraction_lost,
                r.cumulative_lost,
                r.jitter_s,
                r.highest_sequence
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
            "stream_packets_total",
            "counter",
            "RTP packets packetized once into the stream's ring.",
            &|si| self.streams[si].hub.packets.to_string(),
        );
        family(
            out,
            "stream_server_latency_seconds",
            "gauge",
            "Server-added latency per access unit over the last ones, by quantile.",
        );
        for st in &self.streams {
            let (p50, p99) = latency_percentiles(st);
            for (q, v) in [("0.5", p50), ("0.99", p99)] {
                writeln!(
                    out,
                    "uavstream_stream_server_latency_seconds{{stream={},quantile=\"{q}\"}} {:.6}",
                    Label(&st.cfg.path),
                    f64::from(v) / 1e6
                )?;
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
