//! The RTSP `Transport` header (RFC 2326 §12.39): what a client asks for in SETUP and what we
//! answer.
//!
//! Quirks handled, by client:
//! - WinTAK sends `RTP/AVP/UDP;unicast;...` (the explicit lower-transport spelling); a server
//!   that refused it broke WinTAK (mediamtx #1790). We accept it and echo the same spelling.
//! - Some clients ask for odd interleaved channel ids (`interleaved=3-4`, mediamtx #1762): any
//!   pair is accepted.
//! - A single `client_port=N` means RTP on N and RTCP on N+1.
//! - A `destination=` parameter is ignored: RTP goes to the address the RTSP request came from,
//!   so the server cannot be turned into a traffic reflector.
//! - Multicast (`RTP/AVP;multicast`, what ffmpeg's `-rtsp_transport udp_multicast` and GStreamer's
//!   `rtspsrc protocols=udp-mcast` send) is served only when the operator configured a group. The
//!   server chooses group, port and TTL (RFC 2326 §12.39 lets it): a client's `destination=`,
//!   `port=` and `ttl=` are ignored and the reply says what it gets, so an RTSP client can neither
//!   point the camera at another group nor make it send further than the operator allowed.
//! - Alternatives are taken in the client's order: the first one we can serve wins. A multicast
//!   spec counts only when multicast is on, so with it off nothing changes for any client.
//! - The profile is `RTP/AVP` or `RTP/AVPF` (RFC 4585 §7.1: GStreamer's rtspsrc asks for
//!   `RTP/AVPF` when the SDP offers it); the reply echoes the client's spelling, profile and
//!   lower transport both.

use crate::wbuf::{Full, WBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    /// `RTP/AVP` (UDP implied).
    UdpImplicit,
    /// `RTP/AVP/UDP`.
    UdpExplicit,
    /// `RTP/AVP/TCP`.
    Tcp,
}

/// The RTP profile of a transport spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `RTP/AVP` (RFC 3551).
    #[default]
    Avp,
    /// `RTP/AVPF` (RFC 4585): the client may send early feedback (NACK, PLI).
    Avpf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSpec {
    pub lower: Lower,
    pub profile: Profile,
    pub multicast: bool,
    pub client_port: Option<(u16, u16)>,
    pub interleaved: Option<(u8, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Nothing in the header is RTP/AVP over UDP or TCP (answered with 461).
    Unsupported,
    /// A parameter we need could not be parsed (answered with 400).
    Malformed,
}

fn parse_range<T: core::str::FromStr + Copy>(v: &str) -> Option<(T, Option<T>)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, Some(b.trim().parse().ok()?))),
        None => Some((v.trim().parse().ok()?, None)),
    }
}

/// Parses one transport spec (`RTP/AVP;unicast;client_port=a-b`).
pub fn parse_spec(spec: &str) -> Result<TransportSpec, TransportError> {
    let mut params = spec.split(';').map(str::trim);
    let proto = params.next().unwrap_or("");
    let (profile, lower) = [Profile::Avpf, Profile::Avp]
        .into_iter()
        .flat_map(|p| [Lower::UdpImplicit, Lower::UdpExplicit, Lower::Tcp].map(|l| (p, l)))
        .find(|&(p, l)| {
            // `get`, not `split_at`: a multi-byte character may straddle the cut.
            let n = p.as_str().len();
            proto.get(..n).is_some_and(|h| h.eq_ignore_ascii_case(p.as_str()))
                && proto.get(n..).is_some_and(|t| t.eq_ignore_ascii_case(l.suffix()))
        })
        .ok_or(TransportError::Unsupported)?;
    let mut t = TransportSpec { lower, profile, multicast: false, client_port: None, interleaved: None };
    for p in params {
        let (k, v) = p.split_once('=').map_or((p, ""), |(k, v)| (k.trim(), v.trim().trim_matches('"')));
        if k.eq_ignore_ascii_case("multicast") {
            t.multicast = true;
        } else if k.eq_ignore_ascii_case("client_port") {
            let (a, b) = parse_range::<u16>(v).ok_or(TransportError::Malformed)?;
            let b = match b {
                Some(b) => b,
                None => a.checked_add(1).ok_or(TransportError::Malformed)?,
            };
            if a == 0 || b == 0 {
                return Err(TransportError::Malformed);
            }
            t.client_port = Some((a, b));
        } else if k.eq_ignore_ascii_case("interleaved") {
            let (a, b) = parse_range::<u8>(v).ok_or(TransportError::Malformed)?;
            let b = match b {
                Some(b) => b,
                None => a.checked_add(1).ok_or(TransportError::Malformed)?,
            };
            if a == b {
                return Err(TransportError::Malformed);
            }
            t.interleaved = Some((a, b));
        }
    }
    Ok(t)
}

/// The multicast group the server sends to, as configured by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastGroup {
    pub group: core::net::IpAddr,
    /// RTP port (even); RTCP is `port + 1`.
    pub port: u16,
    pub ttl: u8,
}

/// Picks the first spec of a comma-separated `Transport` header that we can serve:
/// unicast RTP/AVP over UDP (with client ports) or over TCP.
pub fn choose(header: &str) -> Result<TransportSpec, TransportError> {
    choose_with(header, false)
}

/// As [`choose`], and with `multicast` also `RTP/AVP;multicast` (UDP; the client's destination,
/// ports and TTL do not matter: the server's group is the answer).
pub fn choose_with(header: &str, multicast: bool) -> Result<TransportSpec, TransportError> {
    let mut first_err = TransportError::Unsupported;
    for spec in header.split(',') {
        match parse_spec(spec) {
            Ok(t) if t.multicast && multicast && t.lower != Lower::Tcp => {
                return Ok(TransportSpec { client_port: None, interleaved: None, ..t })
            }
            Ok(t) if t.multicast => {}
            Ok(t) if t.lower != Lower::Tcp && t.client_port.is_none() => first_err = TransportError::Malformed,
            Ok(t) => return Ok(t),
            Err(TransportError::Malformed) => first_err = TransportError::Malformed,
            Err(TransportError::Unsupported) => {}
        }
    }
    Err(first_err)
}

impl Lower {
    fn suffix(self) -> &'static str {
        match self {
            Lower::UdpImplicit => "",
            Lower::UdpExplicit => "/UDP",
            Lower::Tcp => "/TCP",
        }
    }
}

impl Profile {
    fn as_str(self) -> &'static str {
        match self {
            Profile::Avp => "RTP/AVP",
            Profile::Avpf => "RTP/AVPF",
        }
    }
}

/// Writes the reply `Transport` value for a UDP session.
pub fn write_udp_reply(
    w: &mut WBuf<'_>,
    lower: Lower,
    profile: Profile,
    client: (u16, u16),
    server: (u16, u16),
    ssrc: u32,
) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "{}{};unicast;client_port={}-{};server_port={}-{};ssrc={:08X};mode=\"PLAY\"",
        profile.as_str(),
        lower.suffix(),
        client.0,
        client.1,
        server.0,
        server.1,
        ssrc
    ))
}

/// Writes the reply `Transport` value for a multicast session: the server's group, ports and TTL.
/// (An IPv6 group is written bare, as ffmpeg and GStreamer parse `destination`.)
pub fn write_multicast_reply(w: &mut WBuf<'_>, lower: Lower, g: &MulticastGroup, ssrc: u32) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "RTP/AVP{};multicast;destination={};port={}-{};ttl={};ssrc={:08X};mode=\"PLAY\"",
        lower.suffix(),
        g.group,
        g.port,
        g.port.wrapping_add(1),
        g.ttl,
        ssrc
    ))
}

/// Writes the reply `Transport` value for a TCP-interleaved session.
pub fn write_tcp_reply(w: &mut WBuf<'_>, profile: Profile, channels: (u8, u8), ssrc: u32) -> Result<(), Full> {
    w.put_fmt(format_args!(
        "{}/TCP;unicast;interleaved={}-{};ssrc={:08X};mode=\"PLAY\"",
        profile.as_str(),
        channels.0,
        channels.1,
        ssrc
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_transports() {
        // GStreamer rtspsrc
        assert_eq!(
            choose("RTP/AVP;unicast;client_port=45486-45487").unwrap(),
            TransportSpec {
                lower: Lower::UdpImplicit,
                profile: Profile::Avp,
                multicast: false,
                client_port: Some((45486, 45487)),
                interleaved: None
            }
        );
        // WinTAK
        assert_eq!(choose("RTP/AVP/UDP;unicast;client_port=50620-50621").unwrap().lower, Lower::UdpExplicit);
        // ffmpeg over TCP
        assert_eq!(choose("RTP/AVP/TCP;unicast;interleaved=0-1").unwrap().interleaved, Some((0, 1)));
        // odd channel pair (mediamtx #1762)
        assert_eq!(choose("RTP/AVP/TCP;unicast;interleaved=3-4").unwrap().interleaved, Some((3, 4)));
        // single port and single channel
        assert_eq!(choose("RTP/AVP;unicast;client_port=5000").unwrap().client_port, Some((5000, 5001)));
        assert_eq!(choose("RTP/AVP/TCP;interleaved=6").unwrap().interleaved, Some((6, 7)));
        // GStreamer offers several; multicast is skipped in favour of what we serve.
        let t = choose("RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1").unwrap();
        assert_eq!(t.lower, Lower::Tcp);
        // TCP without interleaved: the server picks.
        assert_eq!(choose("RTP/AVP/TCP;unicast").unwrap().interleaved, None);
    }

    #[test]
    fn refused_transports() {
        assert_eq!(choose("RAW/RAW/UDP;unicast"), Err(TransportError::Unsupported));
        assert_eq!(choose("RTP/AVP;multicast"), Err(TransportError::Unsupported));
        assert_eq!(choose("RTP/AVP;unicast"), Err(TransportError::Malformed));
        assert_eq!(choose("RTP/AVP;unicast;client_port=x-y"), Err(TransportError::Malformed));
        assert_eq!(choose("RTP/AVP;unicast;client_port=65535"), Err(TransportError::Malformed));
        assert_eq!(choose("RTP/AVP/TCP;interleaved=255"), Err(TransportError::Malformed));
        assert_eq!(choose(""), Err(TransportError::Unsupported));
    }

    #[test]
    fn multicast_only_when_on_and_in_the_clients_order() {
        let mc = |lower| TransportSpec {
            lower,
            profile: Profile::Avp,
            multicast: true,
            client_port: None,
            interleaved: None,
        };
        // ffmpeg -rtsp_transport udp_multicast
        assert_eq!(choose_with("RTP/AVP/UDP;multicast", true), Ok(mc(Lower::UdpExplicit)));
        assert_eq!(choose_with("RTP/AVP/UDP;multicast", false), Err(TransportError::Unsupported));
        // GStreamer rtspsrc protocols=udp-mcast
        assert_eq!(choose_with("RTP/AVP;multicast", true), Ok(mc(Lower::UdpImplicit)));
        // A client's own destination, ports and TTL are ignored (the reply carries ours).
        assert_eq!(
            choose_with("RTP/AVP;multicast;destination=239.1.1.1;port=6000-6001;ttl=16;client_port=7000-7001", true),
            Ok(mc(Lower::UdpImplicit))
        );
        // Several alternatives: the client's order decides; multicast counts only when on.
        let both = "RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1";
        assert_eq!(choose_with(both, true), Ok(mc(Lower::UdpImplicit)));
        assert_eq!(choose_with(both, false).unwrap().lower, Lower::Tcp);
        let unicast_first = "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP;multicast";
        assert_eq!(choose_with(unicast_first, true).unwrap().client_port, Some((5000, 5001)));
        // Multicast over TCP means nothing.
        assert_eq!(choose_with("RTP/AVP/TCP;multicast", true), Err(TransportError::Unsupported));
        // A malformed unicast spec before a multicast one does not hide it.
        assert_eq!(choose_with("RTP/AVP;unicast,RTP/AVP;multicast", true), Ok(mc(Lower::UdpImplicit)));
    }

    #[test]
    fn multicast_replies_parse_back() {
        let mut buf = [0u8; 200];
        let g4 = MulticastGroup { group: core::net::Ipv4Addr::new(239, 255, 42, 42).into(), port: 5004, ttl: 1 };
        let mut w = WBuf::new(&mut buf);
        write_multicast_reply(&mut w, Lower::UdpExplicit, &g4, 0xab).unwrap();
        let reply = core::str::from_utf8(w.written()).unwrap();
        assert_eq!(
            reply,
            "RTP/AVP/UDP;multicast;destination=239.255.42.42;port=5004-5005;ttl=1;ssrc=000000AB;mode=\"PLAY\""
        );
        assert!(choose_with(reply, true).unwrap().multicast);
        let g6 = MulticastGroup { group: "ff15::4242".parse().unwrap(), port: 65534, ttl: 255 };
        let mut w = WBuf::new(&mut buf);
        write_multicast_reply(&mut w, Lower::UdpImplicit, &g6, 1).unwrap();
        assert_eq!(
            core::str::from_utf8(w.written()).unwrap(),
            "RTP/AVP;multicast;destination=ff15::4242;port=65534-65535;ttl=255;ssrc=00000001;mode=\"PLAY\""
        );
        // Too small a buffer is Full, not a panic.
        let mut small = [0u8; 20];
        assert_eq!(write_multicast_reply(&mut WBuf::new(&mut small), Lower::UdpImplicit, &g6, 1), Err(Full));
    }

    #[test]
    fn replies() {
        let mut buf = [0u8; 160];
        let mut w = WBuf::new(&mut buf);
        write_udp_reply(&mut w, Lower::UdpExplicit, Profile::Avp, (1, 2), (3, 4), 0xab).unwrap();
        assert_eq!(w.written(), b"RTP/AVP/UDP;unicast;client_port=1-2;server_port=3-4;ssrc=000000AB;mode=\"PLAY\"");
    }

    #[test]
    fn avpf_is_accepted_in_every_spelling_and_echoed() {
        // GStreamer rtspsrc, offered RTP/AVPF in the SDP.
        let t = choose("RTP/AVPF;unicast;client_port=5000-5001").unwrap();
        assert_eq!((t.lower, t.profile), (Lower::UdpImplicit, Profile::Avpf));
        let t = choose("RTP/AVPF/UDP;unicast;client_port=5000-5001").unwrap();
        assert_eq!((t.lower, t.profile), (Lower::UdpExplicit, Profile::Avpf));
        let t = choose("rtp/avpf/tcp;interleaved=0-1").unwrap();
        assert_eq!((t.lower, t.profile), (Lower::Tcp, Profile::Avpf));
        assert_eq!(choose("RTP/AVPFX;unicast;client_port=5000"), Err(TransportError::Unsupported));
        assert_eq!(choose("RTP/AVP/UDPX;unicast;client_port=5000"), Err(TransportError::Unsupported));
        assert_eq!(choose("RTP/AV\u{e9}F;unicast;client_port=5000"), Err(TransportError::Unsupported));
        let mut buf = [0u8; 160];
        let mut w = WBuf::new(&mut buf);
        write_udp_reply(&mut w, Lower::UdpImplicit, Profile::Avpf, (1, 2), (3, 4), 0xab).unwrap();
        assert_eq!(w.written(), b"RTP/AVPF;unicast;client_port=1-2;server_port=3-4;ssrc=000000AB;mode=\"PLAY\"");
        let mut w = WBuf::new(&mut buf);
        write_tcp_reply(&mut w, Profile::Avpf, (0, 1), 1).unwrap();
        assert_eq!(w.written(), b"RTP/AVPF/TCP;unicast;interleaved=0-1;ssrc=00000001;mode=\"PLAY\"");
    }
}
