//! RTP (RFC 3550) packets, the H.264 payload format (RFC 6184) and RTCP.
pub mod feedback;
pub mod h264;
pub mod header;
pub mod jpeg;
pub mod rtcp;
pub mod rtx;

/// RTP clock rate of video payloads (RFC 6184 §8.2.1).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Dynamic payload type we announce for H.264.
pub const H264_PAYLOAD_TYPE: u8 = 96;
/// Dynamic payload type of retransmissions (RFC 4588 `rtx`), of either codec.
pub const RTX_PAYLOAD_TYPE: u8 = 97;

/// The video payload format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264, RFC 6184, dynamic payload type [`H264_PAYLOAD_TYPE`].
    H264,
    /// JPEG, RFC 2435, static payload type 26.
    Jpeg,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::H264 => H264_PAYLOAD_TYPE,
            Codec::Jpeg => jpeg::JPEG_PAYLOAD_TYPE,
        }
    }
}
