//! Every capacity and size in one place. Each "full" has a policy, noted next to the const.

/// Largest RTSP request head + body we buffer per connection. Policy: a request that does not
/// fit gets `413`/`431` and the connection is closed.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Headers per request kept by the parser. Policy: more is `431 Request Header Fields Too Large`.
pub const MAX_HEADERS: usize = 32;
/// Largest RTSP response we write. Responses are built into a buffer of this size.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024;
/// Largest request body accepted (SET_PARAMETER/GET_PARAMETER). Policy: `413`.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Largest interleaved frame a client may send us (RTCP receiver reports). Policy: close.
pub const MAX_INTERLEAVED_IN: usize = 2048;

/// Default and upper bound of `--max-clients` (RTSP sessions). Policy when full: `503`. Each
/// slot holds two UDP sockets: the start refuses a `max-clients` the open-file limit cannot
/// hold (see [`fds_needed`]).
pub const DEFAULT_MAX_CLIENTS: usize = 16;
pub const MAX_CLIENTS_LIMIT: usize = 8192;

/// Most threads `fanout-threads` may ask for (the loop included).
pub const MAX_FANOUT_THREADS: usize = 16;

/// File descriptors the daemon may hold at once: two per session slot, one per RTSP and HTTP
/// connection, and a margin for listeners, encoders, cameras, recorders and the like.
pub fn fds_needed(max_clients: usize, max_pending_connections: usize, max_http_clients: usize) -> usize {
    2 * max_clients + (max_clients + max_pending_connections) + max_http_clients + 128
}
/// TCP connections per session slot (a client may open a second connection briefly).
/// Policy when every connection slot is taken: accept and close at once.
pub const CONNECTIONS_PER_CLIENT: usize = 2;
/// Connection slots beyond the per-client share, so a full server can still answer 503.
pub const SPARE_CONNECTIONS: usize = 4;

/// Default RTSP session timeout (seconds), announced in the `Session` header.
pub const DEFAULT_SESSION_TIMEOUT_S: u32 = 60;

/// Largest SPS/PPS we keep for the SDP. Larger ones are not announced (still sent in-band).
pub const MAX_PARAM_SET_BYTES: usize = 256;
/// Largest SDP we write.
pub const MAX_SDP_BYTES: usize = 2048;

/// Largest RTP packet (bytes, header included). Sized for jumbo-less Ethernet.
pub const MAX_RTP_PACKET: usize = 1500;
/// Default link MTU; RTP packets are at most `mtu - IPV6_UDP_OVERHEAD` so they fit IPv4 and IPv6.
pub const DEFAULT_MTU: usize = 1500;
pub const IPV6_UDP_OVERHEAD: usize = 48;
/// Smallest MTU accepted by configuration (IPv6 minimum link MTU).
pub const MIN_MTU: usize = 576;

/// RTP packets kept in the shared ring. A TCP client more than this many packets behind skips
/// to the next IDR (policy: drop, never queue). 2048 × ~1.4 KiB ≈ 3 MiB at most, touched lazily.
pub const RING_PACKETS: usize = 2048;

/// Largest access unit the pipeline carries. Policy: a bigger one is dropped with a warning and
/// the encoder is asked for an IDR.
pub const MAX_ACCESS_UNIT: usize = 4 * 1024 * 1024;
/// Encoded access units waiting between the encoder thread and the loop. Policy when full: the
/// encoder drops the unit and the next frame is forced to be an IDR.
pub const ENCODED_QUEUE: usize = 4;

/// Forced IDRs (joiners, PLI) per stream: a burst may have this many at once, then this many
/// per second; never two closer than two frame intervals (see `event_loop::idr`). Policy when
/// spent: the request waits for the budget; a joiner starts at the next IDR either way.
pub const FORCED_IDR_BURST: u64 = 3;
pub const FORCED_IDR_RATE: u64 = 4;

/// Retransmissions (NACK → RTX) per session: at most this share of the stream's bitrate, at
/// least [`RTX_MIN_RATE_BYTES`] per second, in bursts of a tenth of a second's budget or at least
/// [`RTX_BURST_BYTES`]. Policy when spent: the NACKed packet is not sent (counted as over budget).
pub const RTX_BUDGET_PERCENT: u32 = 25;
pub const RTX_MIN_RATE_BYTES: u32 = 16 * 1024;
pub const RTX_BURST_BYTES: u32 = 16 * 1500;
/// Sequence numbers one RTCP compound may have retransmitted (a 1500-byte compound of NACKs can
/// name thousands). Policy: the rest are ignored.
pub const MAX_NACKED_PER_RTCP: usize = 512;

/// RTCP sender report interval (milliseconds).
pub const RTCP_SR_INTERVAL_MS: u64 = 1000;
/// Largest RTCP compound packet we build or accept.
pub const MAX_RTCP_PACKET: usize = 1500;

/// Largest accepted frame dimension (both axes) and rate.
pub const MAX_DIMENSION: u32 = 4096;
pub const MAX_FPS: u32 = 240;

/// Cameras and streams one daemon serves (`cameraN.*`, `streamN.*` keys). Policy: a higher
/// index is an unknown key (warned about, like any other).
pub const MAX_CAMERAS: usize = 4;
pub const MAX_STREAMS: usize = 8;

/// Connections that hold no session (probing, or a slow/hostile client). Policy when a new
/// connection would exceed it: the oldest such connection is closed (a slowloris cannot lock
/// out a real client). Configurable: `max-pending-connections`.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 16;
/// Seconds a connection without a session may stay without sending a complete request.
/// Policy: closed. Configurable: `idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 30;
/// Seconds a started request may take to complete (slowloris). Policy: `408` and close.
/// Configurable: `request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT_S: u32 = 10;
/// Requests per second per connection (sustained; bursts up to [`REQUEST_BURST`]). Policy when
/// exceeded: `503` and close. Configurable: `max-request-rate`.
pub const DEFAULT_MAX_REQUEST_RATE: u32 = 20;
pub const REQUEST_BURST: u32 = 40;
/// Seconds a TCP client may take no bytes while it has output waiting. Policy: disconnected
/// (before that, it skips to the next IDR whenever it falls out of the ring). Configurable:
/// `client-stall-timeout`.
pub const DEFAULT_CLIENT_STALL_TIMEOUT_S: u32 = 5;
/// Server-added latency samples kept between two stats lines. Policy when full: the oldest
/// are overwritten.
pub const LATENCY_SAMPLES: usize = 4096;
/// Kernel send buffer of each RTSP TCP connection (bytes). Latency first: an auto-tuned buffer
/// of several MiB is a hidden queue of seconds of video in front of a slow client; a fixed
/// buffer makes such a client fall behind visibly, skip to the next IDR, and stay current.
/// 256 KiB holds ~250 ms at 8 Mbit/s, enough for the bandwidth-delay product of a radio link.
pub const TCP_SEND_BUFFER: usize = 256 * 1024;

/// Recorder (`record-dir`): access units queued between the loop and the writer thread (~3 s at
/// 30 fps). Policy when full: the unit is dropped, and so is every unit up to the next IDR.
pub const RECORD_QUEUE_UNITS: usize = 96;
/// Samples per fMP4 fragment (a fragment also ends at each IDR and after `record-fragment`).
/// Policy when reached: the fragment is written and a new one starts.
pub const RECORD_MAX_FRAGMENT_SAMPLES: usize = 256;
/// Sample bytes per fMP4 fragment. Policy when reached: the fragment is written; a single unit
/// larger than this is not recorded and the recorder waits for the next IDR.
pub const RECORD_MAX_FRAGMENT_BYTES: usize = 16 * 1024 * 1024;

/// Consumer slots of a camera's raw-frame socket (`raw-clients`): default and upper bound.
/// Policy when every slot is taken: a new consumer is accepted and closed at once (it reads
/// end-of-file before any frame), with a log line.
pub const DEFAULT_RAW_CLIENTS: usize = 4;
pub const MAX_RAW_CLIENTS: usize = 32;
