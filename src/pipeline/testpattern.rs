//! The built-in test pattern: scrolling colour bars, a bouncing box, a moving luma ramp and a
//! burned-in frame counter, in I420. Every frame differs everywhere that matters, so encoders
//! and decoders are exercised (motion, detail, flat areas) and a viewer can read latency and
//! dropped frames off the counter.
//!
//! A machine-readable **time code** along the bottom edge carries each frame's capture time, so
//! a client can measure capture → decoded-pixels latency ([`TestPattern::stamp`],
//! [`read_time_code`]): 40 square blocks, black for 0 and white for 1, most significant bit
//! first — 32 bits of CLOCK_MONOTONIC in units of 100 µs (wrapping every 4.97 days; take
//! differences modulo 2^32) and an 8-bit check. The blocks are at least 8 pixels (16 from 640
//! wide up), so they survive H.264 and JPEG at any sensible bitrate; a frame whose check fails
//! is one the reader skips, never a wrong figure.

/// BT.601 limited-range YUV of the classic bars: white, yellow, cyan, green, magenta, red,
/// blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

/// Seven-segment digits: bits a b c d e f g (a = top, clockwise, g = middle).
const DIGITS: [u8; 10] = [0x7e, 0x30, 0x6d, 0x79, 0x33, 0x5b, 0x5f, 0x70, 0x7f, 0x7b];

#[derive(Debug)]
pub struct TestPattern {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    row_y: Vec<u8>,
    row_u: Vec<u8>,
    row_v: Vec<u8>,
}

impl TestPattern {
    /// `width` and `height` must be even.
    pub fn new(width: usize, height: usize) -> Self {
        let (cw, ch) = (width / 2, height / 2);
        Self {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; cw * ch],
            v: vec![128; cw * ch],
            row_y: vec![0; width],
            row_u: vec![0; cw],
            row_v: vec![0; cw],
        }
    }

    /// Draws frame number `n`.
    pub fn render(&mut self, n: u64) {
        let (w, h) = (self.width, self.height);
        let cw = w / 2;
        let bars_h = (h * 3 / 4) & !1;
        // Scrolling bars: one row built once, copied to every row.
        let shift = (n as usize * 4) % w;
        for x in 0..w {
            let bar = ((x + shift) * 8 / w) % 8;
            self.row_y[x] = BARS[bar].0;
        }
        for x in 0..cw {
            let bar = ((2 * x + shift) * 8 / w) % 8;
            self.row_u[x] = BARS[bar].1;
            self.row_v[x] = BARS[bar].2;
        }
        for row in self.y.chunks_exact_mut(w).take(bars_h) {
            row.copy_from_slice(&self.row_y);
        }
        for (urow, vrow) in self.u.chunks_exact_mut(cw).zip(self.v.chunks_exact_mut(cw)).take(bars_h / 2) {
            urow.copy_from_slice(&self.row_u);
            vrow.copy_from_slice(&self.row_v);
        }
        // Moving luma ramp with fine detail below the bars; its lower half carries fresh sensor-
        // like noise every frame, so the encoder has real work and the bitrate target is reached.
        let noise_from = bars_h + (h - bars_h) / 2;
        let mut seed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for (yy, row) in self.y.chunks_exact_mut(w).enumerate().skip(bars_h) {
            for (x, px) in row.iter_mut().enumerate() {
                let ramp = ((x + n as usize * 2) % w) * 219 / w;
                let stripe = if (x / 2 + yy / 2) % 2 == 0 { 0 } else { 12 };
                let noise = if yy >= noise_from {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 31) as usize
                } else {
                    0
                };
                *px = (16 + ramp + stripe + noise).min(235) as u8;
            }
        }
        for row in self.u.chunks_exact_mut(cw).skip(bars_h / 2) {
            row.fill(128);
        }
        for row in self.v.chunks_exact_mut(cw).skip(bars_h / 2) {
            row.fill(128);
        }
        // Bouncing box.
        let bw = (w / 8).max(8) & !1;
        let bh = (h / 6).max(8) & !1;
        let bx = bounce(n as usize * 6, w - bw) & !1;
        let by = bounce(n as usize * 4, h - bh) & !1;
        self.fill_rect(bx, by, bw, bh, (235, 128, 128));
        self.fill_rect(bx + bw / 4, by + bh / 4, bw / 2, bh / 2, (81, 90, 240));
        // Frame counter, top left, on black.
        let digit_h = (h / 10).max(10) & !1;
        let digit_w = (digit_h / 2) & !1;
        let gap = (digit_w / 3).max(2) & !1;
        let digits = 6;
        let pad = gap;
        self.fill_rect(0, 0, pad * 2 + digits * (digit_w + gap), digit_h + 2 * pad, (16, 128, 128));
        let mut value = n;
        for i in (0..digits).rev() {
            let d = (value % 10) as usize;
            value /= 10;
            self.draw_digit(pad + i * (digit_w + gap), pad, digit_w, digit_h, d);
        }
    }

    /// Draws the time code `t` (see the module docs) along the bottom edge; frames narrower
    /// than 320 pixels get none.
    pub fn stamp(&mut self, t: u32) {
        let b = time_code_block(self.width);
        if b == 0 || self.height < b {
            return;
        }
        let bits = u64::from(t) << 8 | u64::from(time_code_check(t));
        let y0 = self.height - b;
        for i in 0..TIME_CODE_BITS {
            let one = bits >> (TIME_CODE_BITS - 1 - i) & 1 == 1;
            self.fill_rect(i * b, y0, b, b, if one { (235, 128, 128) } else { (16, 128, 128) });
        }
    }

    fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, (cy, cu, cv): (u8, u8, u8)) {
        let x1 = (x + w).min(self.width);
        let y1 = (y + h).min(self.height);
        if x >= x1 || y >= y1 {
            return;
        }
        for row in y..y1 {
            self.y[row * self.width + x..row * self.width + x1].fill(cy);
        }
        let cw = self.width / 2;
        for row in y / 2..y1.div_ceil(2).min(self.height / 2) {
            self.u[row * cw + x / 2..row * cw + x1.div_ceil(2).min(cw)].fill(cu);
            self.v[row * cw + x / 2..row * cw + x1.div_ceil(2).min(cw)].fill(cv);
        }
    }

    fn draw_digit(&mut self, x: usize, y: usize, w: usize, h: usize, d: usize) {
        let t = (w / 5).max(2);
        let half = h / 2;
        let seg = DIGITS[d % 10];
        let on = |bit: u8| seg & (1 << (6 - bit)) != 0;
        let white = (235, 128, 128);
        if on(0) {
            self.fill_rect(x, y, w, t, white);
        }
        if on(1) {
            self.fill_rect(x + w - t, y, t, half, white);
        }
        if on(2) {
            self.fill_rect(x + w - t, y + half, t, h - half, white);
        }
        if on(3) {
            self.fill_rect(x, y + h - t, w, t, white);
        }
        if on(4) {
            self.fill_rect(x, y + half, t, h - half, white);
        }
        if on(5) {
            self.fill_rect(x, y, t, half, white);
        }
        if on(6) {
            self.fill_rect(x, y + half - t / 2, w, t, white);
        }
    }
}

/// Bits of the time code: 32 of time, 8 of check.
const TIME_CODE_BITS: usize = 40;

/// Side of one time-code block for a frame `width` wide (0 when the frame is too narrow).
fn time_code_block(width: usize) -> usize {
    let b = (width / TIME_CODE_BITS) & !7;
    if b >= 16 {
        b & !15
    } else {
        b
    }
}

fn time_code_check(t: u32) -> u8 {
    t.to_be_bytes().iter().fold(0xa5, |acc, &b| acc.rotate_left(3) ^ b)
}

/// CLOCK_MONOTONIC now, in units of 100 µs, modulo 2^32.
pub fn monotonic_100us() -> u32 {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (t.tv_sec() as u64).wrapping_mul(10_000).wrapping_add(t.tv_nsec() as u64 / 100_000) as u32
}

/// The time code of an instant (CLOCK_MONOTONIC, which `Instant` is on Linux).
pub fn time_code_of(at: std::time::Instant) -> u32 {
    let now = std::time::Instant::now();
    let ago = now.saturating_duration_since(at).as_micros() / 100;
    monotonic_100us().wrapping_sub(ago as u32)
}

/// Reads the time code back from a decoded luma plane (`stride` bytes per row); `None` when the
/// frame is too small or the check fails.
pub fn read_time_code(y: &[u8], width: usize, height: usize, stride: usize) -> Option<u32> {
    let b = time_code_block(width);
    if b == 0 || height < b || stride < width || y.len() < stride * height {
        return None;
    }
    let y0 = height - b;
    let mut bits = 0u64;
    for i in 0..TIME_CODE_BITS {
        // The mean of the block's inner half: edges blur in a codec.
        let (x0, x1) = (i * b + b / 4, i * b + 3 * b / 4);
        let mut sum = 0u32;
        let mut n = 0u32;
        for row in y0 + b / 4..y0 + 3 * b / 4 {
            for &px in &y[row * stride + x0..row * stride + x1] {
                sum += u32::from(px);
                n += 1;
            }
        }
        bits = bits << 1 | u64::from(sum / n.max(1) >= 126);
    }
    let t = (bits >> 8) as u32;
    (time_code_check(t) == bits as u8).then_some(t)
}

/// Triangle wave over `0..=max`.
fn bounce(t: usize, max: usize) -> usize {
    if max == 0 {
        return 0;
    }
    let p = t % (2 * max);
    if p <= max {
        p
    } else {
        2 * max - p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_code_reads_back_and_a_damaged_one_is_refused() {
        for (w, h) in [(320, 240), (640, 360), (1280, 720), (1920, 1080), (1922, 1082)] {
            let mut p = TestPattern::new(w, h);
            for (n, t) in [(0, 0u32), (1, 1), (2, 0xdead_beef), (3, u32::MAX)] {
                p.render(n);
                p.stamp(t);
                assert_eq!(read_time_code(&p.y, w, h, w), Some(t), "{w}x{h}");
            }
            // Noise of ±40 (a codec's worst) does not change it.
            let mut noisy = p.y.clone();
            for (i, px) in noisy.iter_mut().enumerate() {
                *px = (i32::from(*px) + (i.wrapping_mul(7919) % 81) as i32 - 40).clamp(0, 255) as u8;
            }
            assert_eq!(read_time_code(&noisy, w, h, w), Some(u32::MAX), "{w}x{h}");
            // One block flipped: the check fails.
            let b = time_code_block(w);
            for row in h - b..h {
                noisy[row * w + 5 * b..row * w + 6 * b].fill(16);
            }
            assert_eq!(read_time_code(&noisy, w, h, w), None, "{w}x{h}");
        }
        let mut small = TestPattern::new(176, 144);
        small.render(0);
        small.stamp(7);
        assert_eq!(read_time_code(&small.y, 176, 144, 176), None);
    }

    #[test]
    fn frames_differ_and_stay_in_range() {
        for (w, h) in [(16, 16), (176, 144), (1280, 720), (1922, 1082)] {
            let mut p = TestPattern::new(w, h);
            p.render(0);
            let first = p.y.clone();
            p.render(1);
            assert_ne!(first, p.y, "{w}x{h}");
            p.render(999_999_999);
            assert!(p.y.iter().all(|&v| (16..=235).contains(&v)));
            assert_eq!(p.u.len(), w * h / 4);
        }
    }

    #[test]
    fn counter_digits_change_with_the_frame_number() {
        // Only the counter box (top left, 104x32 at 320x240) is compared: same bars behind.
        let boxed =
            |p: &TestPattern| -> Vec<u8> { (0..32).flat_map(|r| p.y[r * 320..r * 320 + 104].to_vec()).collect() };
        let mut p = TestPattern::new(320, 240);
        p.render(10);
        let ten = boxed(&p);
        p.render(11);
        assert_ne!(ten, boxed(&p));
        p.render(10);
        assert_eq!(ten, boxed(&p));
    }
}
