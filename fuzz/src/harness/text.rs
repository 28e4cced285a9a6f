//! Text inputs: the kernel command line, base64, HTTP request heads.

use super::*;

pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `cmdline::args` never panics, returns slices of its input, splits only on whitespace outside
/// double quotes, stops at `--`; tokens re-joined canonically tokenize to the same list.
pub fn cmdline(data: &[u8]) {
    let args: Vec<cmdline::Arg<'_>> = cmdline::args(data).collect();
    assert!(args.len() <= data.len() / 2 + 1, "more arguments than possible");
    for a in &args {
        let p = offset_in(data, a.param);
        assert!(!(a.param == b"--" && a.value.is_none()), "`--` not treated as the end");
        // The argument starts after whitespace (or at the start), possibly with its opening quote.
        let start = if p > 0 && data[p - 1] == b'"' { p - 1 } else { p };
        assert!(start == 0 || is_space(data[start - 1]), "argument does not start after whitespace");
        let mut spans = vec![(p, a.param.len())];
        if let Some(v) = a.value {
            spans.push((offset_in(data, v), v.len()));
        }
        for (off, len) in spans {
            for i in off..off + len {
                if is_space(data[i]) {
                    let quotes = data[start..i].iter().filter(|&&b| b == b'"').count();
                    assert!(quotes % 2 == 1, "unquoted whitespace at {i} in {:?}", String::from_utf8_lossy(data));
                }
            }
        }
        if let Some(k) = cmdline::uavstream_key(a.param) {
            assert!(a.param.ends_with(k) && !k.is_empty());
        }
        assert!(cmdline::param_eq(a.param, a.param));
    }

    // Canonical re-join of the arguments without quotes or `=` oddities: `k`, `k=v`, `k="v w"`.
    let simple: Vec<(&[u8], Option<&[u8]>)> = args
        .iter()
        .filter(|a| {
            !a.param.is_empty()
                && !a.param.iter().any(|&b| b == b'"' || b == b'=' || is_space(b))
                && a.value.is_none_or(|v| !v.contains(&b'"'))
        })
        .map(|a| (a.param, a.value))
        .collect();
    let mut line = Vec::new();
    for (k, v) in &simple {
        line.extend_from_slice(k);
        if let Some(v) = v {
            line.push(b'=');
            let quote = v.iter().any(|&b| is_space(b));
            if quote {
                line.push(b'"');
            }
            line.extend_from_slice(v);
            if quote {
                line.push(b'"');
            }
        }
        line.push(b' ');
    }
    let again: Vec<(&[u8], Option<&[u8]>)> = cmdline::args(&line).map(|a| (a.param, a.value)).collect();
    assert_eq!(again, simple, "re-joined line {:?}", String::from_utf8_lossy(&line));
}

// ---------------------------------------------------------------------------------------------
// base64 (and the SDP that carries it)

/// `put_base64` → `decode_base64` is the identity; `decode_base64` of anything never panics;
/// the SDP written for an SPS/PPS taken from the input carries them back out.
pub fn base64(data: &[u8]) {
    let enc_len = data.len().div_ceil(3) * 4;
    let mut enc = vec![0xa5u8; enc_len];
    let mut w = WBuf::new(&mut enc);
    put_base64(&mut w, data).expect("exact-size buffer");
    assert_eq!(w.len(), enc_len);
    assert!(enc.iter().all(|&b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    if enc_len > 0 {
        let mut short = vec![0u8; enc_len - 1];
        assert_eq!(put_base64(&mut WBuf::new(&mut short), data), Err(Full));
    }
    let mut dec = vec![0u8; data.len()];
    assert_eq!(decode_base64(&enc, &mut dec), Some(data.len()));
    assert_eq!(dec, data);
    if !data.is_empty() {
        let mut short = vec![0u8; data.len() - 1];
        assert_eq!(decode_base64(&enc, &mut short), None, "decoded into too small a buffer");
    }
    let mut any = vec![0u8; data.len()];
    if let Some(n) = decode_base64(data, &mut any) {
        assert!(n <= data.len() * 3 / 4 + 1);
    }

    let split = data.len() / 2;
    let (sps, pps) = data.split_at(split);
    let (sps, pps) =
        (&sps[..sps.len().min(limits::MAX_PARAM_SET_BYTES)], &pps[..pps.len().min(limits::MAX_PARAM_SET_BYTES)]);
    let origin = if data.first().is_some_and(|b| b & 1 == 1) { "fe80::1" } else { "192.168.1.10" };
    let p = SdpParams {
        session_id: u64::from(data.len() as u32),
        session_version: 1,
        origin_addr: origin,
        codec: uavstream::rtp::Codec::H264,
        payload_type: 96,
        destination: None,
        sps,
        pps,
        framerate: 30,
        bandwidth_kbps: 2000,
    };
    let mut buf = vec![0xa5u8; limits::MAX_SDP_BYTES];
    let n = write_sdp(&p, &mut buf).expect("SDP with parameter sets within limits fits MAX_SDP_BYTES");
    let sdp = std::str::from_utf8(&buf[..n]).expect("SDP is UTF-8");
    assert!(sdp.lines().all(|l| !l.is_empty()) && sdp.ends_with("\r\n"));
    assert_eq!(sdp.contains("profile-level-id="), Sps::parse(sps).is_ok());
    if !sps.is_empty() && !pps.is_empty() {
        let sets =
            sdp.split("sprop-parameter-sets=").nth(1).expect("sprop-parameter-sets").split("\r\n").next().unwrap();
        let (a, b) = sets.split_once(',').expect("two parameter sets");
        for (b64, want) in [(a, sps), (b, pps)] {
            let mut out = vec![0u8; want.len()];
            assert_eq!(decode_base64(b64.as_bytes(), &mut out), Some(want.len()));
            assert_eq!(out, want);
        }
    } else {
        assert!(!sdp.contains("sprop-parameter-sets"));
    }
}

/// HTTP request heads (MJPEG/snapshot listener): parsing never panics, a complete request is
/// complete at every longer prefix with the same length, and every prefix of it is incomplete;
/// routing and the response writers never panic.
pub fn http_request(data: &[u8]) {
    use uavstream::http::{self, Parsed};
    let result = http::parse_request(data);
    if let Ok(Parsed::Complete { request, consumed }) = result {
        assert!(consumed <= data.len() && consumed <= http::MAX_HEAD_BYTES, "consumed {consumed}");
        assert!(request.path.starts_with('/'), "path {:?}", request.path);
        for cut in 0..consumed {
            assert!(
                !matches!(http::parse_request(&data[..cut]), Ok(Parsed::Complete { .. })),
                "a {cut}-byte prefix of a {consumed}-byte head is already complete"
            );
        }
        let _ = http::route(&request, ["/live", "/low"]);
        let _ = request.persistence();
    }
    if let Err(e) = result {
        let mut buf = [0u8; 512];
        http::write_error(&mut WBuf::new(&mut buf), e.status(), http::Persistence::Close)
            .expect("an error response fits 512 bytes");
    }
}
