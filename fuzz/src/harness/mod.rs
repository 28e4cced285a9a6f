//! The fuzz targets' bodies, one `pub fn NAME(data: &[u8])` per target in `fuzz_targets/`.
//!
//! Shared by the cargo-fuzz binaries and by the main crate's `tests/fuzz_regressions.rs` (which
//! includes this file with `#[path]`), so a crash kept in `fuzz/regressions/<target>/` replays
//! through exactly the code that found it. Only `std` and `uavstream` are used: structured inputs
//! are decoded by hand with [`Cursor`] rather than with the `arbitrary` crate.
//!
//! One file per family of inputs (`rtsp`, `session`, `rtcp`, `media`, `text`); shared decoding
//! helpers here.
//!
//! Every function panics (with a message naming the broken property) when the code under test
//! misbehaves, and returns quietly otherwise.

use std::fmt::Write as _;
use std::time::Duration;

use uavstream::cmdline;
use uavstream::limits;
use uavstream::media::fmp4::{self, read as mp4read, AvcTrack, InitError, SampleInfo};
use uavstream::media::h264::{annex_b, nal_unit_type, starts_access_unit, AuSpan, AuSplitter, Sps};
use uavstream::rtp::feedback::{self, nacked_seqs};
use uavstream::rtp::h264::{AccessUnit, Depacketizer, Packetizer};
use uavstream::rtp::header::{RtpHeader, HEADER_LEN};
use uavstream::rtp::rtcp::{self, parse_compound, ReportBlock, RtcpPacket, SenderReport};
use uavstream::rtp::rtx::{write_rtx_header, Retransmitter, RingPos, RtxPolicy, Verdict, RTX_HEADER_MAX};
use uavstream::rtsp::auth::{Auth, Credential};
use uavstream::rtsp::parse::{parse_input, uri_path, Input, ParseError, Request};
use uavstream::rtsp::sdp::{write_sdp, SdpParams};
use uavstream::rtsp::session::{
    write_error_response, ConnId, Delivery, Event, FeedbackPolicy, RequestCtx, Server, ServerConfig, Session,
    SessionState, StreamInfo, StreamRoute,
};
use uavstream::rtsp::transport::{self, Lower, MulticastGroup, TransportSpec};
use uavstream::time::Instant;
use uavstream::wbuf::{decode_base64, put_base64, Full, WBuf};

mod media;
mod rtcp_input;
mod rtsp;
mod session;
mod text;

pub use media::*;
pub use rtcp_input::*;
pub use rtsp::*;
pub use session::*;
pub use text::*;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz_targets/*.rs` and of the corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("rtsp_input", rtsp_input),
    ("rtsp_session", rtsp_session),
    ("rtcp", rtcp),
    ("h264", h264),
    ("rtp_h264_roundtrip", rtp_h264_roundtrip),
    ("cmdline", cmdline),
    ("base64", base64),
    ("http_request", http_request),
    ("rtp_jpeg_roundtrip", rtp_jpeg_roundtrip),
    ("fmp4_roundtrip", fmp4_roundtrip),
    ("rtcp_feedback", rtcp_feedback),
    ("rtsp_client", rtsp_client),
];

/// Reads structured values off the fuzz input; past the end every read gives zeros / empty.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        b.iter().fold(0u16, |v, &x| (v << 8) | u16::from(x))
    }

    pub fn u32(&mut self) -> u32 {
        let b = self.bytes(4);
        b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x))
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A byte string with a one-byte length prefix (0..=255 bytes).
    pub fn short(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A byte string with a two-byte length prefix.
    pub fn long(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
}

fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    let off = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    assert!(off <= outer.len() && inner.len() <= outer.len() - off, "slice does not borrow from its input");
    off
}

// ---------------------------------------------------------------------------------------------
// rtsp_input
