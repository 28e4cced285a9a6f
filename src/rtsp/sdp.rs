//! SDP (RFC 8866) for one video stream: H.264 (RFC 6184 §8.2.1) or JPEG (RFC 2435, static
//! payload type 26, RFC 3551 §6).
//!
//! The H.264 description is written from the live SPS/PPS, so `profile-level-id` and
//! `sprop-parameter-sets` always match what is on the wire. The same writer makes the SDP of
//! push mode (`--sdp-out`), where `c=` names the destination and `m=` its port.
//!
//! With a [`FeedbackOffer`] the media is offered as `RTP/AVPF` (RFC 4585) with `a=rtcp-fb`: for
//! H.264 keyframe requests (PLI and FIR, RFC 5104), and with retransmission ([`RtxOffer`]) also
//! generic NACK and an RTX payload type (RFC 4588 §8.6: `rtx/90000`, `apt=`, `rtx-time=`) listed
//! after the media's own, so clients that take the first payload type (ffmpeg, retina) keep
//! decoding it. An offer without retransmission is keyframe requests only: GStreamer sends PLIs
//! only for a media whose SDP has `nack pli`, and sends no NACKs (nor waits for their answers)
//! without `nack`. live555 (VLC) refuses an
//! `m=` line whose profile is not exactly `RTP/AVP`, so the session core decides per client
//! whether to offer it (see `session.rs`).

use crate::media::h264::Sps;
use crate::rtp::Codec;
use crate::wbuf::{put_base64, Full, WBuf};

/// Control URL of the one media, relative to `Content-Base`.
pub const TRACK_CONTROL: &str = "trackID=0";

#[derive(Debug, Clone, Copy)]
pub struct SdpParams<'a> {
    /// `o=` session id and version.
    pub session_id: u64,
    pub session_version: u64,
    /// The address the client reached us on, for `o=`; IPv6 addresses contain ':'.
    pub origin_addr: &'a str,
    pub codec: Codec,
    pub payload_type: u8,
    /// Push mode: the destination address and RTP port for `c=` and `m=`. `None` for RTSP
    /// (`c=IN IP4 0.0.0.0`, `m=video 0`).
    pub destination: Option<(&'a str, u16)>,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    pub framerate: u32,
    /// Announced bandwidth in kbit/s (`b=AS`), 0 to omit.
    pub bandwidth_kbps: u32,
}

/// Feedback (and retransmission) offered with the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackOffer {
    /// Generic NACK answered by retransmission; `None`: keyframe requests (PLI/FIR) only.
    pub rtx: Option<RtxOffer>,
}

/// Retransmission offered: generic NACK and an RTX payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxOffer {
    /// Payload type of retransmissions.
    pub pt: u8,
    /// How long after sending a packet it may still be retransmitted (ms).
    pub time_ms: u32,
}

impl FeedbackOffer {
    /// What of `self` a `codec` stream can use: JPEG frames are all keyframes, so a JPEG stream
    /// without retransmission has nothing to offer (plain `RTP/AVP`).
    fn for_codec(self, codec: Codec) -> Option<FeedbackOffer> {
        (codec == Codec::H264 || self.rtx.is_some()).then_some(self)
    }
}

/// Writes the SDP (plain `RTP/AVP`); returns the number of bytes written.
pub fn write_sdp(p: &SdpParams<'_>, buf: &mut [u8]) -> Result<usize, Full> {
    write_sdp_offer(p, None, buf)
}

/// Writes the SDP, offering `feedback` when given; returns the number of bytes written.
pub fn write_sdp_offer(p: &SdpParams<'_>, feedback: Option<&FeedbackOffer>, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = WBuf::new(buf);
    let family = |a: &str| if a.contains(':') { "IP6" } else { "IP4" };
    let ip = family(p.origin_addr);
    let (conn_ip, conn_addr, port) = match p.destination {
        Some((addr, port)) => (family(addr), addr, port),
        None => (ip, if ip == "IP6" { "::" } else { "0.0.0.0" }, 0),
    };
    w.put_fmt(format_args!(
        "v=0\r\no=- {} {} IN {} {}\r\ns=uavstream\r\nc=IN {} {}\r\nt=0 0\r\n\
         a=tool:uavstream\r\na=type:broadcast\r\na=control:*\r\na=range:npt=now-\r\n",
        p.session_id, p.session_version, ip, p.origin_addr, conn_ip, conn_addr,
    ))?;
    let feedback = feedback.and_then(|f| f.for_codec(p.codec));
    match feedback.map(|f| f.rtx) {
        None => w.put_fmt(format_args!("m=video {port} RTP/AVP {}\r\n", p.payload_type))?,
        Some(None) => w.put_fmt(format_args!("m=video {port} RTP/AVPF {}\r\n", p.payload_type))?,
        Some(Some(rtx)) => w.put_fmt(format_args!("m=video {port} RTP/AVPF {} {}\r\n", p.payload_type, rtx.pt))?,
    }
    if p.bandwidth_kbps > 0 {
        w.put_fmt(format_args!("b=AS:{}\r\n", p.bandwidth_kbps))?;
    }
    if p.codec == Codec::Jpeg {
        w.put_fmt(format_args!("a=rtpmap:{} JPEG/90000\r\n", p.payload_type))?;
        put_feedback(&mut w, p, feedback.as_ref())?;
        if p.framerate > 0 {
            w.put_fmt(format_args!("a=framerate:{}\r\n", p.framerate))?;
        }
        w.put_fmt(format_args!("a=control:{TRACK_CONTROL}\r\n"))?;
        return Ok(w.len());
    }
    w.put_fmt(format_args!("a=rtpmap:{} H264/90000\r\n", p.payload_type))?;
    w.put_fmt(format_args!("a=fmtp:{} packetization-mode=1", p.payload_type))?;
    if let Ok(sps) = Sps::parse(p.sps) {
        let [a, b, c] = sps.profile_level_id();
        w.put_fmt(format_args!(";profile-level-id={a:02X}{b:02X}{c:02X}"))?;
    }
    if !p.sps.is_empty() && !p.pps.is_empty() {
        w.put(b";sprop-parameter-sets=")?;
        put_base64(&mut w, p.sps)?;
        w.put(b",")?;
        put_base64(&mut w, p.pps)?;
    }
    w.put(b"\r\n")?;
    put_feedback(&mut w, p, feedback.as_ref())?;
    if p.framerate > 0 {
        w.put_fmt(format_args!("a=framerate:{}\r\n", p.framerate))?;
    }
    w.put_fmt(format_args!("a=control:{TRACK_CONTROL}\r\n"))?;
    Ok(w.len())
}

/// `a=rtcp-fb` and the RTX payload type. Every JPEG frame is a keyframe: no PLI/FIR for it.
fn put_feedback(w: &mut WBuf<'_>, p: &SdpParams<'_>, feedback: Option<&FeedbackOffer>) -> Result<(), Full> {
    let Some(f) = feedback else { return Ok(()) };
    let pt = p.payload_type;
    if f.rtx.is_some() {
        w.put_fmt(format_args!("a=rtcp-fb:{pt} nack\r\n"))?;
    }
    if p.codec == Codec::H264 {
        w.put_fmt(format_args!("a=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n"))?;
    }
    let Some(rtx) = f.rtx else { return Ok(()) };
    w.put_fmt(format_args!(
        "a=rtpmap:{rtx_pt} rtx/90000\r\na=fmtp:{rtx_pt} apt={pt};rtx-time={}\r\n",
        rtx.time_ms,
        rtx_pt = rtx.pt
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_carries_live_parameter_sets() {
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00,
            0x0f, 0x23, 0xc6, 0x0c, 0xa8,
        ];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let p = SdpParams {
            session_id: 42,
            session_version: 1,
            origin_addr: "127.0.0.1",
            codec: Codec::H264,
            payload_type: 96,
            destination: None,
            sps: &sps,
            pps: &pps,
            framerate: 30,
            bandwidth_kbps: 2000,
        };
        let mut buf = [0xa5u8; 1024];
        let n = write_sdp(&p, &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(sdp.starts_with("v=0\r\no=- 42 1 IN IP4 127.0.0.1\r\n"), "{sdp}");
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(sdp.contains(
            "a=fmtp:96 packetization-mode=1;profile-level-id=42C01F;sprop-parameter-sets=Z0LAH9oBQBbsBEAAAAMAQAAADyPGDKg=,aM48gA==\r\n"
        ), "{sdp}");
        assert!(sdp.ends_with("a=control:trackID=0\r\n"));
        assert!(write_sdp(&p, &mut [0u8; 64]).is_err());
    }

    /// An H.264 stream at 30 fps whose parameter sets are not known yet.
    fn h264_without_sets() -> SdpParams<'static> {
        SdpParams {
            session_id: 42,
            session_version: 1,
            origin_addr: "127.0.0.1",
            codec: Codec::H264,
            payload_type: 96,
            destination: None,
            sps: &[],
            pps: &[],
            framerate: 30,
            bandwidth_kbps: 0,
        }
    }

    #[test]
    fn feedback_offer_is_avpf_with_rtcp_fb_and_rtx_after_the_media_payload_type() {
        let p = h264_without_sets();
        let offer = FeedbackOffer { rtx: Some(RtxOffer { pt: 97, time_ms: 574 }) };
        let mut buf = [0xa5u8; 1024];
        let n = write_sdp_offer(&p, Some(&offer), &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            sdp.contains(
                "m=video 0 RTP/AVPF 96 97\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
                 a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n\
                 a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96;rtx-time=574\r\na=framerate:30\r\n"
            ),
            "{sdp}"
        );
        let jpeg = SdpParams { codec: Codec::Jpeg, payload_type: 26, ..p };
        let n = write_sdp_offer(&jpeg, Some(&offer), &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(sdp.contains("m=video 0 RTP/AVPF 26 97\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtcp-fb:26 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=26;"), "{sdp}");
        assert!(!sdp.contains("pli"), "{sdp}");
        // Without an offer: exactly today's SDP.
        let n = write_sdp_offer(&p, None, &mut buf).unwrap();
        assert!(core::str::from_utf8(&buf[..n]).unwrap().contains("m=video 0 RTP/AVP 96\r\n"));
    }

    #[test]
    fn keyframe_requests_only_offer_pli_and_fir_without_nack_or_rtx() {
        let p = h264_without_sets();
        let offer = FeedbackOffer { rtx: None };
        let mut buf = [0xa5u8; 1024];
        let n = write_sdp_offer(&p, Some(&offer), &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            sdp.contains(
                "m=video 0 RTP/AVPF 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
                 a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na=framerate:30\r\n"
            ),
            "{sdp}"
        );
        assert!(!sdp.contains("a=rtcp-fb:96 nack\r\n") && !sdp.contains("rtx"), "{sdp}");
        // JPEG: nothing to ask for, so plain RTP/AVP.
        let jpeg = SdpParams { codec: Codec::Jpeg, payload_type: 26, ..p };
        let n = write_sdp_offer(&jpeg, Some(&offer), &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(sdp.contains("m=video 0 RTP/AVP 26\r\n") && !sdp.contains("rtcp-fb"), "{sdp}");
    }

    #[test]
    fn jpeg_sdp_uses_static_payload_type_26_and_push_mode_names_the_destination() {
        let p = SdpParams {
            session_id: 7,
            session_version: 1,
            origin_addr: "10.0.0.2",
            codec: Codec::Jpeg,
            payload_type: 26,
            destination: Some(("10.0.0.9", 5004)),
            sps: &[],
            pps: &[],
            framerate: 30,
            bandwidth_kbps: 0,
        };
        let mut buf = [0xa5u8; 1024];
        let n = write_sdp(&p, &mut buf).unwrap();
        let sdp = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(sdp.contains("c=IN IP4 10.0.0.9\r\n"), "{sdp}");
        assert!(sdp.contains("m=video 5004 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\na=framerate:30\r\n"), "{sdp}");
        assert!(!sdp.contains("fmtp") && sdp.ends_with("a=control:trackID=0\r\n"), "{sdp}");
        let v6 = SdpParams { destination: Some(("fd00::9", 5004)), ..p };
        let n = write_sdp(&v6, &mut buf).unwrap();
        assert!(core::str::from_utf8(&buf[..n]).unwrap().contains("c=IN IP6 fd00::9\r\n"));
    }
}
