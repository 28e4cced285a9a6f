//! Packed 24-bit RGB camera frames as I420, for pipelines without a YUV output. libcamera's
//! `vimc` handler (the virtual media controller driver's camera) offers only `RGB888` and
//! `BGR888`; the encoders read YUV. The conversion is the one copy the frame gets anyway
//! (camera buffer → shared frame), so it costs arithmetic, not another pass over memory.
//!
//! BT.601 limited range in integers (as libyuv's `RGB24ToI420`), chroma averaged over each 2x2
//! block. Pure and always built, so it is unit-tested without libcamera.

/// Byte order of one packed 24-bit pixel in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rgb24 {
    /// libcamera `BGR888` (DRM `BG24`, V4L2 `RGB3`): bytes R, G, B.
    Rgb,
    /// libcamera `RGB888` (DRM `RG24`, V4L2 `BGR3`): bytes B, G, R.
    Bgr,
}

impl Rgb24 {
    /// The order of a libcamera (DRM) fourcc, `None` for anything that is not packed RGB.
    pub fn of_fourcc(fourcc: [u8; 4]) -> Option<Rgb24> {
        match &fourcc {
            b"BG24" => Some(Rgb24::Rgb),
            b"RG24" => Some(Rgb24::Bgr),
            _ => None,
        }
    }

    fn rgb(self, p: &[u8]) -> (i32, i32, i32) {
        let (a, g, c) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
        match self {
            Rgb24::Rgb => (a, g, c),
            Rgb24::Bgr => (c, g, a),
        }
    }
}

fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

fn chroma(r: i32, g: i32, b: i32) -> (u8, u8) {
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

/// Appends the I420 frame (stride = `width`, even `width` and `height`) of the packed RGB frame
/// `src` (`stride` bytes a line) to `out`. Missing source bytes (a short buffer) read as black.
pub fn rgb24_to_i420(src: &[u8], order: Rgb24, width: usize, height: usize, stride: usize, out: &mut Vec<u8>) {
    let (cw, ch) = (width / 2, height / 2);
    let base = out.len();
    out.resize(base + width * height + 2 * cw * ch, 0);
    let (y_plane, uv) = out[base..].split_at_mut(width * height);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    let black = [0u8; 3];
    let px = |x: usize, y: usize| -> (i32, i32, i32) {
        let at = y * stride + x * 3;
        order.rgb(src.get(at..at + 3).unwrap_or(&black))
    };
    for y in 0..height {
        for x in 0..width {
            let (r, g, b) = px(x, y);
            y_plane[y * width + x] = luma(r, g, b);
        }
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (pr, pg, pb) = px(2 * cx + dx, 2 * cy + dy);
                (r, g, b) = (r + pr, g + pg, b + pb);
            }
            let (u, v) = chroma((r + 2) / 4, (g + 2) / 4, (b + 2) / 4);
            u_plane[cy * cw + cx] = u;
            v_plane[cy * cw + cx] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(order: Rgb24, w: usize, h: usize, stride: usize, rgb: [u8; 3]) -> Vec<u8> {
        let mut f = vec![0xa5; stride * h];
        let p = match order {
            Rgb24::Rgb => rgb,
            Rgb24::Bgr => [rgb[2], rgb[1], rgb[0]],
        };
        for y in 0..h {
            for x in 0..w {
                f[y * stride + 3 * x..y * stride + 3 * x + 3].copy_from_slice(&p);
            }
        }
        f
    }

    fn convert(order: Rgb24, rgb: [u8; 3]) -> Vec<u8> {
        let mut out = vec![7];
        rgb24_to_i420(&frame(order, 4, 2, 16, rgb), order, 4, 2, 16, &mut out);
        assert_eq!(out.len(), 1 + 8 + 2 + 2);
        assert_eq!(out[0], 7, "appends");
        out.remove(0);
        out
    }

    #[test]
    fn primaries_land_on_bt601_limited_range() {
        for order in [Rgb24::Rgb, Rgb24::Bgr] {
            assert_eq!(convert(order, [0, 0, 0]), [16, 16, 16, 16, 16, 16, 16, 16, 128, 128, 128, 128]);
            assert_eq!(convert(order, [255, 255, 255]), [235, 235, 235, 235, 235, 235, 235, 235, 128, 128, 128, 128]);
            let red = convert(order, [255, 0, 0]);
            assert_eq!((red[0], red[8], red[10]), (82, 90, 240));
            let blue = convert(order, [0, 0, 255]);
            assert_eq!((blue[0], blue[8], blue[10]), (41, 240, 110));
        }
    }

    #[test]
    fn chroma_averages_each_2x2_block_and_skips_stride_padding() {
        // Left 2x2 block black, right block white: chroma neutral, luma per pixel.
        let mut src = vec![0xa5; 16 * 2];
        for y in 0..2 {
            src[y * 16..y * 16 + 6].fill(0);
            src[y * 16 + 6..y * 16 + 12].fill(255);
        }
        let mut out = Vec::new();
        rgb24_to_i420(&src, Rgb24::Rgb, 4, 2, 16, &mut out);
        assert_eq!(&out[..8], &[16, 16, 235, 235, 16, 16, 235, 235]);
        assert_eq!(&out[8..], &[128, 128, 128, 128]);
    }

    #[test]
    fn a_short_buffer_reads_as_black() {
        let mut out = Vec::new();
        rgb24_to_i420(&[255; 12], Rgb24::Rgb, 4, 2, 12, &mut out);
        assert_eq!(&out[..8], &[235, 235, 235, 235, 16, 16, 16, 16]);
    }

    #[test]
    fn fourccs() {
        assert_eq!(Rgb24::of_fourcc(*b"BG24"), Some(Rgb24::Rgb));
        assert_eq!(Rgb24::of_fourcc(*b"RG24"), Some(Rgb24::Bgr));
        assert_eq!(Rgb24::of_fourcc(*b"NV12"), None);
    }
}
