//! Caller-owned output buffers: a cursor over `&mut [u8]` that refuses to overflow.
//!
//! Every writer in the protocol cores writes through [`WBuf`]; running out of room is
//! [`Full`], never a panic or a reallocation.

use core::fmt;

/// The destination buffer had no room for the whole write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer full")
    }
}

/// A write cursor over a caller-owned byte slice.
#[derive(Debug)]
pub struct WBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> WBuf<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.len.checked_add(bytes.len()).ok_or(Full)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(Full)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    pub fn put_u8(&mut self, b: u8) -> Result<(), Full> {
        self.put(&[b])
    }

    pub fn put_u16(&mut self, v: u16) -> Result<(), Full> {
        self.put(&v.to_be_bytes())
    }

    pub fn put_u32(&mut self, v: u32) -> Result<(), Full> {
        self.put(&v.to_be_bytes())
    }

    /// Writes `args` formatted; on overflow the cursor is left where it was.
    pub fn put_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), Full> {
        let mark = self.len;
        if fmt::Write::write_fmt(self, args).is_err() {
            self.len = mark;
            return Err(Full);
        }
        Ok(())
    }

    /// Mutable access to bytes already written (to patch a length field).
    pub fn written_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Truncates back to `len` bytes (no-op when `len` is past the end).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
    }
}

impl fmt::Write for WBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Standard base64 (RFC 4648 §4, with padding), as `sprop-parameter-sets` needs.
pub fn put_base64(out: &mut WBuf<'_>, data: &[u8]) -> Result<(), Full> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let mut quad = [b'='; 4];
        for (i, q) in quad.iter_mut().enumerate().take(chunk.len() + 1) {
            *q = ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize];
        }
        out.put(&quad)?;
    }
    Ok(())
}

/// Decodes standard base64 into `out`, returning the decoded length.
pub fn decode_base64(input: &[u8], out: &mut [u8]) -> Option<usize> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let trimmed = match input {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        all => all,
    };
    let mut w = WBuf::new(out);
    for chunk in trimmed.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        w.put(&bytes[1..chunk.len()]).ok()?;
    }
    Some(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, enc) in cases {
            let mut buf = [0xa5u8; 16];
            let mut w = WBuf::new(&mut buf);
            put_base64(&mut w, raw).unwrap();
            assert_eq!(w.written(), enc.as_bytes());
            let mut dec = [0u8; 16];
            let n = decode_base64(enc.as_bytes(), &mut dec).unwrap();
            assert_eq!(&dec[..n], raw);
        }
    }

    #[test]
    fn overflow_is_full_and_leaves_cursor() {
        let mut buf = [0u8; 4];
        let mut w = WBuf::new(&mut buf);
        w.put(b"ab").unwrap();
        assert_eq!(w.put_fmt(format_args!("{}", 12345)), Err(Full));
        assert_eq!(w.written(), b"ab");
    }
}
