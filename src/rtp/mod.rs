//! RTP (RFC 3550) packets, the H.264 payload format (RFC 6184) and RTCP.
pub mod h264;
pub mod header;
pub mod rtcp;

/// RTP clock rate of video payloads (RFC 6184 §8.2.1).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Dynamic payload type we announce for H.264.
pub const H264_PAYLOAD_TYPE: u8 = 96;
