//! The viewer page at `/`: a tile per stream (WHEP `<video>`, MJPEG `<img>` fallback, live
//! figures), written into any `core::fmt::Write` sink so its length is known before its head.

/// One stream on the index page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry<'a> {
    /// The stream path, e.g. `/live`.
    pub path: &'a str,
    /// `Some(why)`: no JPEG frames (the page shows why instead of a picture).
    pub unavailable: Option<&'a str>,
    /// The stream is offered over WebRTC (WHEP): an H.264 stream while WebRTC is on.
    pub webrtc: bool,
}

/// Text with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and quoted attribute values.
struct Html<'a>(&'a str);

impl core::fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// The viewer page's script: WHEP players, MJPEG fallback, live figures (see the file).
pub const VIEWER_JS: &str = include_str!("viewer.js");

/// Writes the viewer page: per stream a tile with its live picture, its figures and its path
/// with links to its MJPEG and JPEG routes. An H.264 stream (`webrtc`) plays in a `<video>`
/// over WHEP and falls back to its MJPEG `<img>`; a JPEG stream is the `<img>` at once; a stream
/// without JPEG frames shows why. Generic over the sink so [`index_len`] can measure it before
/// the head is written.
pub fn write_index<'p, W: core::fmt::Write>(
    w: &mut W,
    streams: impl IntoIterator<Item = IndexEntry<'p>>,
) -> core::fmt::Result {
    w.write_str(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>uavstream</title>\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n\
         <style>body{margin:0;background:#000;color:#ccc;font:14px sans-serif}a{color:#8cf}\
         div{display:inline-block;vertical-align:top;max-width:100%}p{margin:4px 8px}\
         video,img{display:block;max-width:100%;background:#111}.figs{color:#8a8;font-size:12px}</style></head>\n\
         <body>\n",
    )?;
    for s in streams {
        let path = Html(s.path.trim_end_matches('/'));
        writeln!(
            w,
            "<div class=\"tile\" data-path=\"{path}\" data-webrtc=\"{}\" data-mjpeg=\"{}\">",
            u8::from(s.webrtc),
            u8::from(s.unavailable.is_none())
        )?;
        match (s.webrtc, s.unavailable) {
            (true, _) => {
                writeln!(w, "<video muted autoplay playsinline title=\"{path}\"></video>")?;
                writeln!(w, "<img alt=\"{path}\" style=\"display:none\">")?;
            }
            (false, None) => {
                writeln!(w, "<img src=\"{path}.mjpeg\" alt=\"{path}\" style=\"display:block;max-width:100%\">")?
            }
            (false, Some(why)) => writeln!(w, "<p>no JPEG frames: {}</p>", Html(why))?,
        }
        write!(
            w,
            "<p>{path} <a href=\"{path}.mjpeg\">MJPEG</a> <a href=\"{path}.jpg\">JPEG</a> <span class=\"state\"></span></p>\n\
             <p class=\"figs\"></p>\n</div>\n"
        )?;
    }
    w.write_str("<script>\n")?;
    w.write_str(VIEWER_JS)?;
    w.write_str("</script>\n</body></html>\n")
}

/// The length of the page [`write_index`] writes for `streams`.
pub fn index_len<'p>(streams: impl IntoIterator<Item = IndexEntry<'p>>) -> usize {
    struct Count(usize);
    impl core::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = write_index(&mut count, streams);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbuf::WBuf;

    #[test]
    fn the_index_lists_every_stream_and_shows_the_available_ones() {
        let streams = [
            IndexEntry { path: "/live", unavailable: None, webrtc: false },
            IndexEntry { path: "/low/", unavailable: None, webrtc: false },
            IndexEntry { path: "/h264", unavailable: Some("the stream is <H.264> & \"raw\""), webrtc: false },
            IndexEntry { path: "/rtc", unavailable: None, webrtc: true },
        ];
        let mut buf = [0xa5u8; 16384];
        let mut w = WBuf::new(&mut buf);
        write_index(&mut w, streams).unwrap();
        assert_eq!(w.len(), index_len(streams));
        let page = core::str::from_utf8(w.written()).unwrap();
        assert!(page.starts_with("<!doctype html>\n") && page.ends_with("</body></html>\n"), "{page}");
        let has = |args: core::fmt::Arguments<'_>| {
            let mut needle = heapless::String::<64>::new();
            core::fmt::Write::write_fmt(&mut needle, args).unwrap();
            page.contains(needle.as_str())
        };
        for path in ["/live", "/low"] {
            assert!(has(format_args!("<img src=\"{path}.mjpeg\"")), "{page}");
        }
        for path in ["/live", "/low", "/h264"] {
            assert!(
                has(format_args!("<p>{path} <a href=\"{path}.mjpeg\">MJPEG</a> <a href=\"{path}.jpg\">")),
                "{page}"
            );
        }
        assert!(!page.contains("<img src=\"/h264"), "{page}");
        assert!(page.contains("no JPEG frames: the stream is &lt;H.264&gt; &amp; &quot;raw&quot;</p>"), "{page}");
        // The WebRTC tile: a video the script fills over WHEP, its MJPEG fallback hidden.
        assert!(page.contains("<div class=\"tile\" data-path=\"/rtc\" data-webrtc=\"1\" data-mjpeg=\"1\">\n<video muted autoplay playsinline"), "{page}");
        assert!(page.contains("<div class=\"tile\" data-path=\"/h264\" data-webrtc=\"0\" data-mjpeg=\"0\">"), "{page}");
        assert!(
            !page.contains("<img src=\"/rtc") && page.contains("<script>\n") && page.contains("\"use strict\";"),
            "{page}"
        );
        assert_eq!(page.matches("<video").count(), 1, "{page}");
        let odd = [IndexEntry { path: "/a\"b'<", unavailable: None, webrtc: false }];
        let mut w = WBuf::new(&mut buf);
        write_index(&mut w, odd).unwrap();
        let page = core::str::from_utf8(w.written()).unwrap();
        assert!(page.contains("<img src=\"/a&quot;b&#39;&lt;.mjpeg\" alt=\"/a&quot;b&#39;&lt;\""), "{page}");
        assert!(write_index(&mut WBuf::new(&mut [0u8; 64]), streams).is_err());
    }
}
