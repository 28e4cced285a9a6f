//! The loop's side of WebRTC viewers: WHEP offers and DELETEs from HTTP connections to the
//! WebRTC sessions (see `webrtc`), their sockets and timers, and their IDR requests to the
//! streams' `IdrLimiter`s. Built with or without the `webrtc` feature (without it there is never
//! a `WebRtc`, and the page plays MJPEG).

use std::net::IpAddr;
use std::time::Instant;

use super::http::WhepAnswer;
use super::webrtc::WebRtc;
use super::EventLoop;
use crate::config::Config;
use crate::rtp::Codec;
use crate::sys;

/// The ICE host candidate addresses: `webrtc-interfaces` (names resolved to their addresses),
/// or every IPv4 address of every up interface.
pub(super) fn candidate_addresses(wanted: &[String]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let ifaces: Vec<(String, IpAddr)> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter(|i| i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
                .filter_map(|i| {
                    let a = i.address?;
                    let ip: IpAddr = if let Some(v4) = a.as_sockaddr_in() {
                        v4.ip().into()
                    } else {
                        a.as_sockaddr_in6()?.ip().into()
                    };
                    Some((i.interface_name, ip))
                })
                .collect()
        })
        .unwrap_or_default();
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => true,
        // Link-local IPv6 needs a scope id that a candidate cannot carry.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    };
    if wanted.is_empty() {
        out.extend(ifaces.iter().filter(|(_, ip)| ip.is_ipv4()).map(|(_, ip)| *ip));
    }
    for w in wanted {
        match w.parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => {
                let before = out.len();
                out.extend(ifaces.iter().filter(|(n, ip)| n == w && usable(ip)).map(|(_, ip)| *ip));
                if out.len() == before {
                    log::warn!("webrtc-interfaces: {w} has no usable address now; no candidate on it");
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Opens WebRTC when it is configured (and HTTP is on: WHEP rides on it).
pub(super) fn open(cfg: &Config, http_on: bool) -> Option<WebRtc> {
    if cfg.webrtc_port == 0 || !http_on {
        return None;
    }
    let addrs = candidate_addresses(&cfg.webrtc_interfaces);
    match WebRtc::new(&addrs, cfg.webrtc_port, cfg.max_webrtc_sessions, cfg.streams.len(), cfg.dscp) {
        Ok(w) => {
            let list: Vec<String> = w.candidates().map(|a| a.to_string()).collect();
            log::info!(
                "webrtc: WHEP at http://HOST:{}/PATH/whep, ICE host candidates {}, {} session slots",
                cfg.http_port,
                list.join(" "),
                cfg.max_webrtc_sessions
            );
            Some(w)
        }
        Err(e) => {
            log::error!("webrtc-port {}: {e}; WebRTC is off (RTSP and HTTP are not affected)", cfg.webrtc_port);
            None
        }
    }
}

/// Browsers are offered constrained baseline (42e01f); a stream whose SPS says otherwise (a
/// passthrough camera's High profile) may not decode in them. Said, not refused.
fn warn_unless_constrained_baseline(path: &str, sps: &[u8]) {
    let Ok(s) = crate::media::h264::Sps::parse(sps) else { return };
    // constraint_set1 makes baseline, main and high streams decodable as constrained baseline.
    if s.constraint_flags & 0x40 == 0 {
        log::warn!(
            "webrtc {path}: the stream is H.264 profile_idc {} constraint flags {:#04x}, not constrained baseline; browsers may not decode it (use the software encoder, or set the camera to baseline)",
            s.profile_idc,
            s.constraint_flags
        );
    }
}

impl EventLoop<'_> {
    /// Answers every complete WHEP offer waiting on an HTTP connection.
    pub(super) fn answer_whep(&mut self, now: Instant) {
        let Some(h) = self.http.as_ref() else { return };
        let offers: heapless::Vec<(usize, usize), 8> = h.whep_offers().take(8).collect();
        for (conn, stream) in offers {
            let Some(h) = self.http.as_mut() else { return };
            let (offer, _) = h.whep_offer(conn);
            log::trace!("webrtc: offer for stream {stream}:\n{}", String::from_utf8_lossy(offer));
            let result = match (self.webrtc.as_mut(), self.streams.get(stream)) {
                (Some(w), Some(st)) if st.hub.codec() == Codec::H264 => {
                    warn_unless_constrained_baseline(&st.cfg.path, st.hub.parameter_sets().0);
                    w.offer(stream, offer, sys::random_u64(), now)
                }
                _ => Err((404, "this stream is not offered over WebRTC".to_owned())),
            };
            let answer = match &result {
                Ok((id, sdp)) => WhepAnswer::Created { id: *id, sdp },
                Err((status, why)) => WhepAnswer::Refused { status: *status, why },
            };
            h.answer_whep(conn, answer, now);
        }
    }

    /// `DELETE /PATH/whep/ID`: `200` when the session existed.
    pub(super) fn end_whep(&mut self, stream: usize, id: u64, out: &mut String) -> u16 {
        match self.webrtc.as_mut().map(|w| w.end(stream, id)) {
            Some(true) => {
                out.push_str("session ended\n");
                200
            }
            _ => {
                out.push_str("no such WebRTC session\n");
                404
            }
        }
    }

    pub(super) fn on_webrtc_socket(&mut self, i: usize, now: Instant) {
        if let Some(w) = self.webrtc.as_mut() {
            w.on_socket(i, now);
        }
        self.webrtc_idr_requests(now);
    }

    pub(super) fn webrtc_timers(&mut self, now: Instant) {
        if let Some(w) = self.webrtc.as_mut().filter(|w| w.deadline().is_some_and(|d| now >= d)) {
            w.on_timers(now);
        }
        self.webrtc_idr_requests(now);
    }

    /// Sessions that connected or sent PLI/FIR ask their stream for an IDR (rate-limited).
    fn webrtc_idr_requests(&mut self, now: Instant) {
        let Some(w) = self.webrtc.as_mut() else { return };
        let wanted: heapless::Vec<usize, { crate::limits::MAX_STREAMS }> = w.take_idr_requests().collect();
        for si in wanted {
            if let Some(st) = self.streams.get_mut(si) {
                st.request_idr(now);
            }
        }
    }
}
