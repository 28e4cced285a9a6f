//! What the loop and its WebRTC sessions exchange, the same with or without the `webrtc`
//! feature (`webrtc.rs` on str0m, `webrtc_off.rs` when it is not built).

use std::net::SocketAddr;
use std::time::Instant;

/// One access unit as WebRTC sessions take it.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "webrtc"), allow(dead_code))]
pub(super) struct Unit<'a> {
    /// H.264 Annex B.
    pub(super) data: &'a [u8],
    pub(super) idr: bool,
    /// 90 kHz since the hub's epoch (see `Hub::media_time`).
    pub(super) media_time: u64,
    pub(super) capture: Instant,
    pub(super) sps: &'a [u8],
    pub(super) pps: &'a [u8],
}

/// Why an offer is refused: an HTTP status and a one-line reason.
pub(super) type Refusal = (u16, String);

/// One session as `/status` reports it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerStatus {
    pub(super) id: u64,
    pub(super) stream: usize,
    pub(super) peer: Option<SocketAddr>,
    pub(super) connected: bool,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) keyframe_requests: u64,
}
