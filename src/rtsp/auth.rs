//! RTSP authentication: Basic (RFC 7617) and Digest (RFC 7616 with MD5, the only algorithm
//! RTSP clients implement; RFC 2069-style responses without `qop` are accepted too, as live555
//! based clients send them).
//!
//! Nonces are stateless: `TTTTTTTT` (issue time, seconds, hex) followed by 16 hex digits of
//! MD5(secret ‖ time). A nonce older than [`NONCE_LIFETIME_S`] is answered with `stale=TRUE` so
//! the client retries with a fresh one. Every secret comparison is constant-time.

use crate::wbuf::{decode_base64, Full, WBuf};

/// Seconds a Digest nonce stays valid.
pub const NONCE_LIFETIME_S: u64 = 600;
pub const REALM: &str = "uavstream";

/// One user; `path` limits the user to one stream path (`None`: every path).
#[derive(Debug, Clone, Copy)]
pub struct Credential<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub path: Option<&'a str>,
}

/// What the server checks requests against.
#[derive(Debug, Clone, Copy)]
pub struct Auth<'a> {
    pub users: &'a [Credential<'a>],
    /// Random per process: nonces from another run are not accepted.
    pub secret: [u8; 16],
}

/// The verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    Allowed {
        user: &'a str,
    },
    /// No or wrong credentials: 401 with a fresh challenge.
    Denied,
    /// A valid Digest response on an expired nonce: 401 with `stale=TRUE`.
    Stale,
}

/// Constant-time equality (time depends on the lengths only).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = H[usize::from(b >> 4)];
        out[2 * i + 1] = H[usize::from(b & 15)];
    }
}

impl Auth<'_> {
    fn nonce_mac(&self, issued: u32) -> [u8; 16] {
        let mut m = Md5::new();
        m.update(&self.secret);
        m.update(&issued.to_be_bytes());
        m.finalize()
    }

    /// A nonce issued at `now_s`.
    pub fn nonce(&self, now_s: u64) -> [u8; 24] {
        let issued = now_s as u32;
        let mut out = [0u8; 24];
        hex_lower(&issued.to_be_bytes(), &mut out[..8]);
        hex_lower(&self.nonce_mac(issued)[..8], &mut out[8..]);
        out
    }

    /// `Some(expired)` for a nonce we issued, `None` for a forged one.
    fn check_nonce(&self, nonce: &str, now_s: u64) -> Option<bool> {
        if nonce.len() != 24 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let issued = u32::from_str_radix(&nonce[..8], 16).ok()?;
        let mut mac = [0u8; 16];
        hex_lower(&self.nonce_mac(issued)[..8], &mut mac);
        if !ct_eq(&mac, nonce[8..].to_ascii_lowercase_fixed().as_bytes()) {
            return None;
        }
        let age = (now_s as u32).wrapping_sub(issued);
        Some(u64::from(age) > NONCE_LIFETIME_S)
    }

    /// Checks the `Authorization` header of a `method` request for `path`.
    pub fn verify<'u>(&'u self, authorization: Option<&str>, method: &str, path: &str, now_s: u64) -> Verdict<'u> {
        let Some(h) = authorization else { return Verdict::Denied };
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let allowed_path =
            |c: &Credential<'_>| c.path.is_none_or(|p| p.trim_end_matches('/') == path.trim_end_matches('/'));
        if scheme.eq_ignore_ascii_case("Basic") {
            let mut buf = [0u8; 256];
            let Some(n) = decode_base64(rest.trim().as_bytes(), &mut buf) else { return Verdict::Denied };
            let Some(colon) = buf[..n].iter().position(|&b| b == b':') else { return Verdict::Denied };
            let (user, pass) = (&buf[..colon], &buf[colon + 1..n]);
            // Check every entry so the time does not tell which user exists.
            let mut found = None;
            for c in self.users {
                let ok = ct_eq(c.user.as_bytes(), user) & ct_eq(c.password.as_bytes(), pass);
                if ok && found.is_none() && allowed_path(c) {
                    found = Some(c.user);
                }
            }
            return found.map_or(Verdict::Denied, |user| Verdict::Allowed { user });
        }
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Verdict::Denied;
        }
        let p = DigestParams::parse(rest);
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (p.username, p.nonce, p.uri, p.response) else {
            return Verdict::Denied;
        };
        if p.realm != Some(REALM) || p.algorithm.is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Verdict::Denied;
        }
        let Some(expired) = self.check_nonce(nonce, now_s) else { return Verdict::Denied };
        let Some(c) = self.users.iter().find(|c| ct_eq(c.user.as_bytes(), user.as_bytes())) else {
            return Verdict::Denied;
        };
        let ha1 = md5_hex(&[c.user.as_bytes(), b":", REALM.as_bytes(), b":", c.password.as_bytes()]);
        let ha2 = md5_hex(&[method.as_bytes(), b":", uri.as_bytes()]);
        let expected = match p.qop {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (p.nc, p.cnonce) else { return Verdict::Denied };
                md5_hex(&[
                    &ha1,
                    b":",
                    nonce.as_bytes(),
                    b":",
                    nc.as_bytes(),
                    b":",
                    cnonce.as_bytes(),
                    b":",
                    b"auth",
                    b":",
                    &ha2,
                ])
            }
            Some(_) => return Verdict::Denied,
            None => md5_hex(&[&ha1, b":", nonce.as_bytes(), b":", &ha2]),
        };
        if !ct_eq(&expected, response.to_ascii_lowercase_fixed().as_bytes()) || !allowed_path(c) {
            return Verdict::Denied;
        }
        if expired {
            Verdict::Stale
        } else {
            Verdict::Allowed { user: c.user }
        }
    }

    /// Writes the `WWW-Authenticate` challenge headers (Digest, then Basic).
    pub fn write_challenge(&self, w: &mut WBuf<'_>, now_s: u64, stale: bool) -> Result<(), Full> {
        let nonce = self.nonce(now_s);
        w.put_fmt(format_args!("WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\""))?;
        w.put(&nonce)?;
        w.put(b"\", algorithm=MD5")?;
        if stale {
            w.put(b", stale=TRUE")?;
        }
        w.put(b"\r\n")?;
        w.put_fmt(format_args!("WWW-Authenticate: Basic realm=\"{REALM}\"\r\n"))
    }
}

/// Lower-cases up to 32 ASCII bytes into a fixed buffer (hex digests compare lower-case).
trait LowerFixed {
    fn to_ascii_lowercase_fixed(&self) -> heapless::String<32>;
}

impl LowerFixed for str {
    fn to_ascii_lowercase_fixed(&self) -> heapless::String<32> {
        let mut s = heapless::String::new();
        for c in self.chars() {
            if s.push(c.to_ascii_lowercase()).is_err() {
                return heapless::String::new();
            }
        }
        s
    }
}

pub(crate) fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    let mut m = Md5::new();
    for p in parts {
        m.update(p);
    }
    let mut out = [0u8; 32];
    hex_lower(&m.finalize(), &mut out);
    out
}

/// The parameters of a Digest `Authorization` header.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DigestParams<'a> {
    pub username: Option<&'a str>,
    pub realm: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub response: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub nc: Option<&'a str>,
    pub cnonce: Option<&'a str>,
}

impl<'a> DigestParams<'a> {
    /// Parses `k=v, k="quoted, with commas", ...`; unknown keys are skipped, malformed tails
    /// end the parse.
    pub fn parse(mut s: &'a str) -> DigestParams<'a> {
        let mut p = DigestParams::default();
        loop {
            s = s.trim_start_matches([' ', '\t', ',']);
            let Some(eq) = s.find('=') else { break };
            let key = s[..eq].trim();
            s = s[eq + 1..].trim_start();
            let value;
            if let Some(rest) = s.strip_prefix('"') {
                let Some(end) = rest.find('"') else { break };
                value = &rest[..end];
                s = &rest[end + 1..];
            } else {
                let end = s.find(',').unwrap_or(s.len());
                value = s[..end].trim();
                s = &s[end..];
            }
            let slot = match key.to_ascii_lowercase_fixed().as_str() {
                "username" => &mut p.username,
                "realm" => &mut p.realm,
                "nonce" => &mut p.nonce,
                "uri" => &mut p.uri,
                "response" => &mut p.response,
                "algorithm" => &mut p.algorithm,
                "qop" => &mut p.qop,
                "nc" => &mut p.nc,
                "cnonce" => &mut p.cnonce,
                _ => continue,
            };
            *slot = Some(value);
        }
        p
    }
}

/// MD5 (RFC 1321). Only for Digest authentication, which mandates it.
#[derive(Debug, Clone)]
pub struct Md5 {
    state: [u32; 4],
    buf: [u8; 64],
    buf_len: usize,
    total: u64,
}

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15,
    21,
];

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501, 0x698098d8,
    0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87,
    0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039,
    0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391,
];

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 { state: [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476], buf: [0; 64], buf_len: 0, total: 0 }
    }

    fn block(state: &mut [u32; 4], block: &[u8; 64]) {
        let mut m = [0u32; 16];
        for (i, w) in m.iter_mut().enumerate() {
            *w = u32::from_le_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
        }
        let [mut a, mut b, mut c, mut d] = *state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len == 64 {
                let block = self.buf;
                Self::block(&mut self.state, &block);
                self.buf_len = 0;
            }
        }
    }

    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.buf_len != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_le_bytes());
        let mut out = [0u8; 16];
        for (i, w) in self.state.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> heapless::String<32> {
        let mut out = [0u8; 32];
        hex_lower(&d, &mut out);
        heapless::String::try_from(core::str::from_utf8(&out).unwrap()).unwrap()
    }

    #[test]
    fn md5_rfc1321_vectors() {
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            let mut m = Md5::new();
            // Fed in two uneven parts to exercise buffering.
            let (a, b) = input.as_bytes().split_at(input.len() / 3);
            m.update(a);
            m.update(b);
            assert_eq!(hex(m.finalize()).as_str(), want, "{input:?}");
        }
    }

    const USERS: &[Credential<'static>] = &[
        Credential { user: "pilot", password: "s3cret", path: None },
        Credential { user: "viewer", password: "look", path: Some("/live") },
        Credential { user: "other", password: "x", path: Some("/cam2") },
    ];

    fn auth() -> Auth<'static> {
        Auth { users: USERS, secret: [7; 16] }
    }

    #[test]
    fn basic_accepts_right_and_refuses_wrong() {
        let a = auth();
        // "pilot:s3cret", "pilot:wrong", "viewer:look", "other:x"
        assert_eq!(
            a.verify(Some("Basic cGlsb3Q6czNjcmV0"), "DESCRIBE", "/live", 0),
            Verdict::Allowed { user: "pilot" }
        );
        assert_eq!(a.verify(Some("Basic cGlsb3Q6d3Jvbmc="), "DESCRIBE", "/live", 0), Verdict::Denied);
        assert_eq!(a.verify(Some("Basic dmlld2VyOmxvb2s="), "PLAY", "/live", 0), Verdict::Allowed { user: "viewer" });
        assert_eq!(a.verify(Some("Basic b3RoZXI6eA=="), "PLAY", "/live", 0), Verdict::Denied, "path-restricted");
        assert_eq!(a.verify(None, "PLAY", "/live", 0), Verdict::Denied);
        assert_eq!(a.verify(Some("Basic !!!"), "PLAY", "/live", 0), Verdict::Denied);
        assert_eq!(a.verify(Some("Bearer abc"), "PLAY", "/live", 0), Verdict::Denied);
    }

    /// Computes a client's Digest header the way ffmpeg does (qop=auth) or live555 (no qop).
    fn client_header(user: &str, pass: &str, nonce: &str, method: &str, uri: &str, qop: bool) -> heapless::String<512> {
        let ha1 = md5_hex(&[user.as_bytes(), b":", REALM.as_bytes(), b":", pass.as_bytes()]);
        let ha2 = md5_hex(&[method.as_bytes(), b":", uri.as_bytes()]);
        let mut s = heapless::String::new();
        if qop {
            let r = md5_hex(&[&ha1, b":", nonce.as_bytes(), b":00000001:0a4f113b:auth:", &ha2]);
            core::fmt::write(&mut s, format_args!("Digest username=\"{user}\", realm=\"uavstream\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=\"MD5\", qop=auth, nc=00000001, cnonce=\"0a4f113b\"", core::str::from_utf8(&r).unwrap())).unwrap();
        } else {
            let r = md5_hex(&[&ha1, b":", nonce.as_bytes(), b":", &ha2]);
            core::fmt::write(&mut s, format_args!("Digest username=\"{user}\", realm=\"uavstream\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\"", core::str::from_utf8(&r).unwrap())).unwrap();
        }
        s
    }

    #[test]
    fn digest_with_and_without_qop_and_nonce_expiry() {
        let a = auth();
        let nonce = a.nonce(1000);
        let nonce = core::str::from_utf8(&nonce).unwrap();
        let uri = "rtsp://127.0.0.1:8554/live";
        for qop in [true, false] {
            let h = client_header("pilot", "s3cret", nonce, "DESCRIBE", uri, qop);
            assert_eq!(a.verify(Some(&h), "DESCRIBE", "/live", 1000 + 5), Verdict::Allowed { user: "pilot" });
            assert_eq!(a.verify(Some(&h), "DESCRIBE", "/live", 1000 + NONCE_LIFETIME_S + 1), Verdict::Stale);
            let bad = client_header("pilot", "wrong", nonce, "DESCRIBE", uri, qop);
            assert_eq!(a.verify(Some(&bad), "DESCRIBE", "/live", 1000), Verdict::Denied);
            // A response for another method does not verify.
            assert_eq!(a.verify(Some(&h), "PLAY", "/live", 1000), Verdict::Denied);
        }
        // A nonce we did not issue.
        let forged = client_header("pilot", "s3cret", "00000000aaaaaaaaaaaaaaaa", "DESCRIBE", uri, false);
        assert_eq!(a.verify(Some(&forged), "DESCRIBE", "/live", 0), Verdict::Denied);
        // Another process's nonce (different secret) does not verify either.
        let b = Auth { users: USERS, secret: [8; 16] };
        let h = client_header("pilot", "s3cret", nonce, "DESCRIBE", uri, false);
        assert_eq!(b.verify(Some(&h), "DESCRIBE", "/live", 1000), Verdict::Denied);
    }

    #[test]
    fn digest_params_parse_quoted_commas_and_garbage() {
        let p =
            DigestParams::parse("username=\"a,b\", realm=\"r\",nonce=n1 , uri=\"rtsp://h/x\", response=\"abc\", junk");
        assert_eq!(p.username, Some("a,b"));
        assert_eq!(p.nonce, Some("n1"));
        assert_eq!(p.uri, Some("rtsp://h/x"));
        assert_eq!(DigestParams::parse("username=\"unterminated"), DigestParams::default());
    }

    #[test]
    fn challenge_headers() {
        let a = auth();
        let mut buf = [0u8; 256];
        let mut w = WBuf::new(&mut buf);
        a.write_challenge(&mut w, 0x10, true).unwrap();
        let s = core::str::from_utf8(w.written()).unwrap();
        assert!(s.starts_with("WWW-Authenticate: Digest realm=\"uavstream\", nonce=\"00000010"), "{s}");
        assert!(s.contains(", algorithm=MD5, stale=TRUE\r\nWWW-Authenticate: Basic realm=\"uavstream\"\r\n"), "{s}");
    }
}
