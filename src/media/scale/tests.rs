#[allow(unused_extern_crates)] // the no_std build of the library needs it for the tests
extern crate std;
use super::*;
use std::vec;
use std::vec::Vec;

/// A picture in 4:2:0 at full precision, written out in any input format.
struct Picture {
    w: usize,
    h: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Picture {
    fn new(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> u8) -> Picture {
        let plane = |p, pw: usize, ph: usize| (0..pw * ph).map(|i| f(p, i % pw, i / pw)).collect();
        Picture { w, h, y: plane(0, w, h), u: plane(1, w / 2, h / 2), v: plane(2, w / 2, h / 2) }
    }

    /// The frame in `format` with `pad` bytes of garbage after each line of the first plane.
    fn frame(&self, format: PixelFormat, pad: usize) -> (Input, Vec<u8>) {
        let (w, h) = (self.w, self.h);
        let stride = if format == PixelFormat::Yuyv { 2 * w + pad } else { w + pad };
        let input = Input { format, width: w as u32, height: h as u32, stride: stride as u32 };
        let mut f = vec![0xee; input.frame_bytes().unwrap()];
        match format {
            PixelFormat::Yuyv => {
                for r in 0..h {
                    for x in 0..w {
                        f[r * stride + 2 * x] = self.y[r * w + x];
                        let c = (r / 2) * (w / 2) + x / 2;
                        f[r * stride + 2 * x + 1] = if x % 2 == 0 { self.u[c] } else { self.v[c] };
                    }
                }
            }
            PixelFormat::Nv12 | PixelFormat::Yu12 => {
                for r in 0..h {
                    f[r * stride..][..w].copy_from_slice(&self.y[r * w..][..w]);
                }
                for r in 0..h / 2 {
                    for x in 0..w / 2 {
                        let c = r * (w / 2) + x;
                        if format == PixelFormat::Nv12 {
                            f[h * stride + r * stride + 2 * x] = self.u[c];
                            f[h * stride + r * stride + 2 * x + 1] = self.v[c];
                        } else {
                            f[h * stride + r * (stride / 2) + x] = self.u[c];
                            f[h * stride + (h / 2) * (stride / 2) + r * (stride / 2) + x] = self.v[c];
                        }
                    }
                }
            }
        }
        (input, f)
    }

    /// I420 by the definition: each output pixel the rounded weighted mean of its footprint.
    fn reference(&self, ow: usize, oh: usize) -> Vec<u8> {
        /// Weight of source pixel `x` in output `i`, in units of 1/dst pixel: the overlap of
        /// `[i·src, (i+1)·src)` and `[x·dst, (x+1)·dst)`, or whole pixels for integer ratios
        /// and long periods.
        fn weight(src: usize, dst: usize, i: usize, x: usize) -> u64 {
            let period = src / gcd(src, dst);
            if src % dst == 0 || period > MAX_FRACTIONAL_PERIOD {
                return u64::from((i * src / dst..(i + 1) * src / dst).contains(&x));
            }
            let (lo, hi) = ((i * src).max(x * dst), ((i + 1) * src).min((x + 1) * dst));
            hi.saturating_sub(lo) as u64
        }
        fn plane(p: &[u8], w: usize, h: usize, ow: usize, oh: usize, out: &mut Vec<u8>) {
            for j in 0..oh {
                for i in 0..ow {
                    let (mut sum, mut n) = (0u64, 0u64);
                    // Only pixels near the footprint can weigh anything.
                    let near = |i: usize, n: usize, on: usize| i * n / on..((i + 1) * n).div_ceil(on).min(n);
                    for y in near(j, h, oh) {
                        let wy = weight(h, oh, j, y);
                        for x in near(i, w, ow) {
                            let wx = weight(w, ow, i, x) * wy;
                            sum += wx * u64::from(p[y * w + x]);
                            n += wx;
                        }
                    }
                    out.push(((sum + n / 2) / n) as u8);
                }
            }
        }
        let mut out = Vec::new();
        plane(&self.y, self.w, self.h, ow, oh, &mut out);
        plane(&self.u, self.w / 2, self.h / 2, ow / 2, oh / 2, &mut out);
        plane(&self.v, self.w / 2, self.h / 2, ow / 2, oh / 2, &mut out);
        out
    }
}

const FORMATS: [PixelFormat; 3] = [PixelFormat::Nv12, PixelFormat::Yu12, PixelFormat::Yuyv];

fn scale(input: Input, src: &[u8], ow: usize, oh: usize, fill: u8) -> Vec<u8> {
    let mut scaler = Scaler::new(input, ow as u32, oh as u32).unwrap();
    let mut out = vec![fill; ow * oh * 3 / 2];
    scaler.scale(src, &mut out).unwrap();
    out
}

/// Noise that reaches 0 and 255, so sums and rounding get exercised at both ends.
fn noise(p: usize, x: usize, y: usize) -> u8 {
    let v = (x as u32).wrapping_mul(2_654_435_761) ^ (y as u32).wrapping_mul(40_503) ^ (p as u32 * 977);
    (v.wrapping_mul(2_246_822_519) >> 24) as u8
}

#[test]
fn flat_colours_stay_flat() {
    for (w, h, ow, oh) in
        [(192, 108, 64, 36), (192, 108, 128, 72), (100, 60, 34, 22), (64, 48, 64, 48), (600, 256, 2, 2)]
    {
        let pic = Picture::new(w, h, |p, _, _| [16, 128, 235][p]);
        for format in FORMATS {
            let (input, src) = pic.frame(format, 6);
            let out = scale(input, &src, ow, oh, 0xa5);
            let (y, uv) = out.split_at(ow * oh);
            let (u, v) = uv.split_at(ow * oh / 4);
            assert!(y.iter().all(|&b| b == 16), "{format:?} {w}x{h}->{ow}x{oh}");
            assert!(u.iter().all(|&b| b == 128), "{format:?} {w}x{h}->{ow}x{oh}");
            assert!(v.iter().all(|&b| b == 235), "{format:?} {w}x{h}->{ow}x{oh}");
        }
    }
}

#[test]
fn a_gradient_averages_over_each_footprint() {
    // Luma 0..12 across, 3:1: (0+1+2)/3 = 1, 4, 7, 10. Chroma 6 wide to 2: (0+1+2)/3, (3+4+5)/3.
    let pic = Picture::new(12, 6, |p, x, y| if p == 0 { x as u8 } else { (x + 10 * y) as u8 });
    for format in FORMATS {
        let (input, src) = pic.frame(format, 0);
        let out = scale(input, &src, 4, 2, 0xa5);
        assert_eq!(&out[..8], &[1, 4, 7, 10, 1, 4, 7, 10], "{format:?}");
        // U then V, 6x3 to 2x1: the mean of x + 10y over x in 0..3 and y in 0..3 is 1 + 10.
        assert_eq!(&out[8..], &[11, 14, 11, 14], "{format:?}");
    }
    // 3:2 by area: source pixels a, b, c become (2a + b) / 3 and (b + 2c) / 3.
    let pic = Picture::new(12, 4, |p, x, _| if p == 0 { 10 * x as u8 } else { 100 });
    for format in FORMATS {
        let (input, src) = pic.frame(format, 0);
        let out = scale(input, &src, 8, 2, 0xa5);
        assert_eq!(&out[..8], &[3, 17, 33, 47, 63, 77, 93, 107], "{format:?}");
    }
    // 7:5 (period 7 over 5 outputs), vertical weights too: a ramp 0, 5, 10 … down the rows.
    let pic = Picture::new(4, 14, |p, _, y| if p == 0 { 5 * y as u8 } else { 100 });
    let (input, src) = pic.frame(PixelFormat::Yu12, 0);
    let out = scale(input, &src, 4, 10, 0xa5);
    // Output row 0 covers rows [0, 1.4): (5·0 + 2·5) / 7 = 1.43; row 1 [1.4, 2.8): (3·5 + 4·10) / 7.
    let column: Vec<u8> = out[..40].iter().step_by(4).copied().collect();
    assert_eq!(column, [1, 8, 15, 22, 29, 36, 43, 50, 57, 64]);
}

#[test]
fn every_format_gives_the_reference_i420() {
    let sizes = [
        (1920, 1080, 640, 360),
        (192, 108, 64, 36),
        (192, 108, 128, 72),
        (128, 72, 64, 36),
        (64, 48, 64, 48),
        (160, 120, 40, 30),
        (100, 60, 34, 22),
        (98, 66, 96, 64),
        (64, 64, 16, 2),
        (20, 256, 2, 2),
        (4096, 16, 6, 2),
        (20, 262, 2, 4),
        (1920, 1080, 1280, 720),
    ];
    for (w, h, ow, oh) in sizes {
        let pic = Picture::new(w, h, noise);
        let want = pic.reference(ow, oh);
        for format in FORMATS {
            for pad in [0, 2, 7] {
                let (input, src) = pic.frame(format, pad);
                assert!(scale(input, &src, ow, oh, 0xa5) == want, "{format:?} {w}x{h}->{ow}x{oh} pad {pad}");
            }
        }
    }
}

#[test]
fn every_output_byte_is_written() {
    let pic = Picture::new(100, 60, |p, x, y| noise(p, x, y) % 100);
    for format in FORMATS {
        let (input, src) = pic.frame(format, 4);
        for (ow, oh) in [(100, 60), (50, 30), (34, 22)] {
            let out = scale(input, &src, ow, oh, 0xa5);
            assert!(!out.contains(&0xa5), "{format:?} {ow}x{oh}");
            assert_eq!(out, scale(input, &src, ow, oh, 0x5a), "{format:?} {ow}x{oh}");
        }
    }
}

#[test]
fn bad_sizes_are_errors() {
    let input = |format, width, height, stride| Input { format, width, height, stride };
    let nv12 = |w, h| input(PixelFormat::Nv12, w, h, w);
    assert_eq!(Scaler::new(nv12(0, 4), 0, 4).err(), Some(ScaleError::OddOrZeroSize));
    assert_eq!(Scaler::new(nv12(63, 48), 32, 24).err(), Some(ScaleError::OddOrZeroSize));
    assert_eq!(Scaler::new(nv12(64, 47), 32, 24).err(), Some(ScaleError::OddOrZeroSize));
    assert_eq!(Scaler::new(nv12(64, 48), 31, 24).err(), Some(ScaleError::OddOrZeroSize));
    assert_eq!(Scaler::new(nv12(64, 48), 32, 0).err(), Some(ScaleError::OddOrZeroSize));
    assert_eq!(Scaler::new(nv12(64, 48), 66, 24).err(), Some(ScaleError::Upscale));
    assert_eq!(Scaler::new(nv12(64, 48), 32, 50).err(), Some(ScaleError::Upscale));
    assert_eq!(Scaler::new(nv12(8192, 48), 32, 24).err(), Some(ScaleError::TooLarge));
    assert_eq!(Scaler::new(nv12(64, 8192), 32, 24).err(), Some(ScaleError::TooLarge));
    assert_eq!(Scaler::new(input(PixelFormat::Nv12, 64, 48, 62), 32, 24).err(), Some(ScaleError::StrideTooSmall));
    assert_eq!(Scaler::new(input(PixelFormat::Yuyv, 64, 48, 64), 32, 24).err(), Some(ScaleError::StrideTooSmall));
    assert_eq!(Scaler::new(nv12(64, 1040), 32, 4).err(), Some(ScaleError::RatioTooLarge));
    // YUYV's chroma rows halve on top of the scale.
    assert_eq!(Scaler::new(input(PixelFormat::Yuyv, 64, 520, 128), 32, 4).err(), Some(ScaleError::RatioTooLarge));
    assert!(Scaler::new(nv12(64, 520), 32, 4).is_ok());
    let huge = input(PixelFormat::Nv12, 4096, 4096, u32::MAX);
    assert!(matches!(Scaler::new(huge, 32, 24), Ok(_) | Err(ScaleError::TooLarge)));

    for format in FORMATS {
        let (input, src) = Picture::new(64, 48, noise).frame(format, 0);
        let mut s = Scaler::new(input, 32, 24).unwrap();
        let mut out = vec![0; 32 * 24 * 3 / 2];
        assert_eq!(s.scale(&src[..src.len() - 1], &mut out), Err(ScaleError::ShortInput));
        assert_eq!(s.scale(&[], &mut out), Err(ScaleError::ShortInput));
        assert_eq!(s.scale(&src, &mut out[1..]), Err(ScaleError::OutputSize));
        assert_eq!(s.scale(&src, &mut vec![0; out.len() + 1]), Err(ScaleError::OutputSize));
        let mut longer = src.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(s.scale(&longer, &mut out), Ok(()));
    }
}

#[test]
fn no_size_stride_or_buffer_panics() {
    let src = vec![7u8; 4096];
    for format in FORMATS {
        for (w, h, ow, oh) in (0..=10u32)
            .flat_map(|w| (0..=10).map(move |h| (w, h)))
            .flat_map(|(w, h)| (0..=10u32).flat_map(move |ow| (0..=10).map(move |oh| (w, h, ow, oh))))
        {
            let line = if format == PixelFormat::Yuyv { 2 * w } else { w };
            for stride in [line.saturating_sub(1), line, line + 1, line + 5] {
                let input = Input { format, width: w, height: h, stride };
                let Ok(mut s) = Scaler::new(input, ow, oh) else { continue };
                let bytes = input.frame_bytes().unwrap();
                let mut out = vec![0xa5; s.output_bytes()];
                for len in [0, bytes.saturating_sub(1), bytes] {
                    let r = s.scale(&src[..len], &mut out);
                    assert_eq!(r.is_ok(), len == bytes, "{input:?} -> {ow}x{oh}, {len} bytes");
                }
                assert!(out.iter().all(|&b| b == 7), "{input:?} -> {ow}x{oh}");
            }
        }
    }
}

#[test]
fn fourccs_round_trip() {
    for format in FORMATS {
        assert_eq!(PixelFormat::from_fourcc(format.fourcc()), Some(format));
    }
    assert_eq!(PixelFormat::from_fourcc(*b"MJPG"), None);
}
