//! Software scaler: a raw camera frame (NV12, YU12 or YUYV, any stride) to tightly packed I420
//! (YU12) at the same or a smaller size, for the software encoders.
//!
//! Downscaling is area averaging (a box filter): each output pixel is the mean of the source
//! area it covers, a source pixel it covers in part weighing its covered fraction. At 3:1 and 2:1
//! that is the plain mean of 3×3 / 2×2 pixels; at 3:2 source pixels a, b, c make (2a + b) / 3 and
//! (b + 2c) / 3, likewise down the rows. Every source pixel counts in full, so nothing aliases the
//! way nearest or bilinear sampling does. Ratios whose period is long (reduced `p:q` with
//! `p > 128`, e.g. 1080:718) use whole-pixel footprints `i*W/w .. (i+1)*W/w` instead. Equal size
//! is a plain conversion; YUYV's 4:2:2 chroma lines are averaged in pairs.
//!
//! Per frame the work is row by row: the source rows an output row covers are summed into a u16
//! row (a straight, vectorisable loop), then each output pixel sums its columns of that row and
//! is scaled by a per-row reciprocal. Exact integer ratios (1:1 to 4:1) and 3:2 take fixed-width
//! paths that LLVM vectorises; other ratios walk the precomputed column table. A [`Scaler`] holds the
//! column tables and the row buffer for one (input layout, output size) pair, so a frame
//! allocates nothing. It is fixed-capacity (about 64 KiB, see [`MAX_SCALE_WIDTH`]): worker threads
//! may want to `Box` it.

use core::fmt;

/// Widest and tallest input accepted, in pixels. Sizes the tables inside [`Scaler`].
pub const MAX_SCALE_WIDTH: usize = 4096;
pub const MAX_SCALE_HEIGHT: usize = 4096;
/// Largest number of source rows one output row may cover (255 × 256 fits the u16 row sums).
pub const MAX_ROWS_PER_OUTPUT_ROW: usize = 256;

/// Raw formats the scaler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Y plane, then one plane of interleaved U,V at half width and height; both with the luma
    /// stride.
    Nv12,
    /// I420: Y plane, then U and V planes at half width and height, each with half the stride.
    Yu12,
    /// Packed 4:2:2, `Y0 U Y1 V`, two bytes per pixel.
    Yuyv,
}

impl PixelFormat {
    /// `NV12`, `YU12` or `YUYV`; anything else is `None`.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelFormat> {
        match &fourcc {
            b"NV12" => Some(PixelFormat::Nv12),
            b"YU12" => Some(PixelFormat::Yu12),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yu12 => *b"YU12",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

/// Layout of the frames a [`Scaler`] reads (the fields of the encoders' `FrameLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per line of the first plane.
    pub stride: u32,
}

impl Input {
    /// Bytes a frame of this layout occupies (what `scale` requires of `src` at least), or
    /// `None` if that does not fit a `usize`.
    pub fn frame_bytes(&self) -> Option<usize> {
        let (s, h) = (self.stride as usize, self.height as usize);
        let luma = s.checked_mul(h)?;
        match self.format {
            PixelFormat::Nv12 => luma.checked_add(s.checked_mul(h / 2)?),
            PixelFormat::Yu12 => luma.checked_add((s / 2).checked_mul(h / 2)?.checked_mul(2)?),
            PixelFormat::Yuyv => Some(luma),
        }
    }
}

/// Why a scaler could not be built or a frame not scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleError {
    /// A width or height is zero or odd.
    OddOrZeroSize,
    /// The output is larger than the input in width or height.
    Upscale,
    /// The input is wider or taller than [`MAX_SCALE_WIDTH`] / [`MAX_SCALE_HEIGHT`].
    TooLarge,
    /// The stride is smaller than a line of pixels.
    StrideTooSmall,
    /// An output row would cover more than [`MAX_ROWS_PER_OUTPUT_ROW`] source rows.
    RatioTooLarge,
    /// The source buffer is shorter than the input layout's frame.
    ShortInput,
    /// The output buffer is not exactly `width * height * 3 / 2` bytes.
    OutputSize,
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScaleError::OddOrZeroSize => "width and height must be even and non-zero",
            ScaleError::Upscale => "the scaler only shrinks: output larger than input",
            ScaleError::TooLarge => "input larger than the scaler's 4096x4096",
            ScaleError::StrideTooSmall => "stride smaller than a line of pixels",
            ScaleError::RatioTooLarge => "an output row would cover more than 256 input rows",
            ScaleError::ShortInput => "source buffer shorter than one frame",
            ScaleError::OutputSize => "output buffer is not width*height*3/2 bytes",
        })
    }
}

/// Converts and scales frames of one input layout to one output size, reusing its tables.
#[derive(Clone)]
pub struct Scaler {
    input: Input,
    out_width: usize,
    out_height: usize,
    frame_bytes: usize,
    luma_rows: Axis,
    chroma_rows: Axis,
    luma_cols: Columns<MAX_SCALE_WIDTH>,
    chroma_cols: Columns<{ MAX_SCALE_WIDTH / 2 }>,
    /// Weighted sums of the source rows one output row covers; YUYV rows are 2 × width elements.
    row_sums: [u16; 2 * MAX_SCALE_WIDTH],
}

impl fmt::Debug for Scaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scaler")
            .field("input", &self.input)
            .field("out_width", &self.out_width)
            .field("out_height", &self.out_height)
            .finish_non_exhaustive()
    }
}

/// How one axis maps `src` pixels onto `dst` (`dst <= src`), and the footprint of each output.
///
/// With the reduced ratio `src:dst = p:q`, output `i` covers source `[i·p/q, (i+1)·p/q)`. Counted
/// in 1/q pixels that is `[i·p, (i+1)·p)`, so every source pixel it touches weighs its overlap:
/// `q` in the middle, less at the two ends, `p` in all ("fractional"; 3:2 gives 2+1 and 1+2).
/// When `p` is too large for the u16 row sums, or the ratio is an integer, footprints fall back
/// to whole pixels `i·src/dst .. (i+1)·src/dst`, each weighing 1.
#[derive(Debug, Clone, Copy)]
struct Axis {
    src: usize,
    dst: usize,
    p: usize,
    q: usize,
    fractional: bool,
}

/// Source pixels `start .. start + count`; the first weighs `first`, the last (when `count > 1`)
/// `last`, the others [`Axis::middle`].
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u16,
    count: u16,
    first: u16,
    last: u16,
}

/// Largest reduced source period `p` footprints are weighed fractionally for: weights sum to `p`
/// per output, times two lines for YUYV chroma, and 255 · 256 still fits the u16 row sums.
const MAX_FRACTIONAL_PERIOD: usize = 128;

impl Axis {
    fn new(src: usize, dst: usize) -> Axis {
        let g = gcd(src, dst);
        let (p, q) = (src / g, dst / g);
        Axis { src, dst, p, q, fractional: q > 1 && p <= MAX_FRACTIONAL_PERIOD }
    }

    fn span(&self, i: usize) -> Span {
        if self.fractional {
            let (a, b) = (i * self.p, (i + 1) * self.p);
            let (x0, x1) = (a / self.q, b.div_ceil(self.q));
            let first = ((x0 + 1) * self.q).min(b) - a;
            let last = b - (x1 - 1) * self.q;
            Span { start: x0 as u16, count: (x1 - x0) as u16, first: first as u16, last: last as u16 }
        } else {
            let (x0, x1) = (i * self.src / self.dst, (i + 1) * self.src / self.dst);
            Span { start: x0 as u16, count: (x1 - x0) as u16, first: 1, last: 1 }
        }
    }

    /// Weight of a source pixel inside a footprint, between the ends.
    fn middle(&self) -> u32 {
        if self.fractional {
            self.q as u32
        } else {
            1
        }
    }

    /// Total weight of a footprint: `p`, or its pixel count.
    fn total(&self, span: Span) -> u32 {
        if self.fractional {
            self.p as u32
        } else {
            u32::from(span.count)
        }
    }

    /// The smallest [`Axis::total`]; the others are at most one more.
    fn min_total(&self) -> u32 {
        if self.fractional {
            self.p as u32
        } else {
            (self.src / self.dst) as u32
        }
    }

    /// Largest number of source pixels one output covers.
    fn max_count(&self) -> usize {
        if self.fractional {
            self.p.div_ceil(self.q) + 1
        } else {
            self.src.div_ceil(self.dst)
        }
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[derive(Clone)]
struct Columns<const N: usize> {
    axis: Axis,
    spans: [Span; N],
}

impl<const N: usize> Columns<N> {
    fn new(axis: Axis) -> Columns<N> {
        let mut spans = [Span::default(); N];
        for (i, s) in spans.iter_mut().enumerate().take(axis.dst) {
            *s = axis.span(i);
        }
        Columns { axis, spans }
    }

    fn view(&self) -> Cols<'_> {
        Cols { axis: self.axis, spans: &self.spans[..self.axis.dst] }
    }
}

/// A plane's column table as the column pass reads it.
#[derive(Clone, Copy)]
struct Cols<'a> {
    axis: Axis,
    spans: &'a [Span],
}

/// One source plane as the scaler walks it. `row_len` counts bytes of a row that are read; a
/// plane row is `group` source lines (2 for YUYV chroma: 4:2:2 lines pair up into 4:2:0 rows).
#[derive(Clone, Copy)]
struct PlaneIn {
    base: usize,
    stride: usize,
    row_len: usize,
    rows: Axis,
    group: usize,
}

/// A source row for the column pass: the bytes themselves when an output row covers one source
/// row, else the sums of the rows it covers.
enum Row<'a> {
    Bytes(&'a [u8]),
    Sums(&'a [u16]),
}

impl Scaler {
    /// A scaler from `input` to I420 of `out_width` x `out_height`.
    pub fn new(input: Input, out_width: u32, out_height: u32) -> Result<Scaler, ScaleError> {
        let (w, h, ow, oh) = (input.width as usize, input.height as usize, out_width as usize, out_height as usize);
        if [w, h, ow, oh].iter().any(|&v| v == 0 || v % 2 == 1) {
            return Err(ScaleError::OddOrZeroSize);
        }
        if ow > w || oh > h {
            return Err(ScaleError::Upscale);
        }
        if w > MAX_SCALE_WIDTH || h > MAX_SCALE_HEIGHT {
            return Err(ScaleError::TooLarge);
        }
        let line = match input.format {
            PixelFormat::Nv12 | PixelFormat::Yu12 => w,
            PixelFormat::Yuyv => 2 * w,
        };
        if (input.stride as usize) < line {
            return Err(ScaleError::StrideTooSmall);
        }
        // Chroma rows of 4:2:0 inputs halve on both sides; YUYV sums two lines per chroma row.
        let (luma_rows, chroma_rows) = (Axis::new(h, oh), Axis::new(h / 2, oh / 2));
        let lines_per_chroma_row = if input.format == PixelFormat::Yuyv { 2 } else { 1 };
        if luma_rows.max_count() > MAX_ROWS_PER_OUTPUT_ROW
            || chroma_rows.max_count() * lines_per_chroma_row > MAX_ROWS_PER_OUTPUT_ROW
        {
            return Err(ScaleError::RatioTooLarge);
        }
        let frame_bytes = input.frame_bytes().ok_or(ScaleError::TooLarge)?;
        Ok(Scaler {
            input,
            out_width: ow,
            out_height: oh,
            frame_bytes,
            luma_rows,
            chroma_rows,
            luma_cols: Columns::new(Axis::new(w, ow)),
            chroma_cols: Columns::new(Axis::new(w / 2, ow / 2)),
            row_sums: [0; 2 * MAX_SCALE_WIDTH],
        })
    }

    pub fn input(&self) -> Input {
        self.input
    }

    /// Output width and height.
    pub fn output_size(&self) -> (u32, u32) {
        (self.out_width as u32, self.out_height as u32)
    }

    /// Bytes of one output frame: `width * height * 3 / 2`.
    pub fn output_bytes(&self) -> usize {
        self.out_width * self.out_height * 3 / 2
    }

    /// Writes `src` (one frame of the input layout; longer is fine) as I420 into `dst`, which
    /// must be exactly [`Scaler::output_bytes`] long.
    pub fn scale(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(), ScaleError> {
        if src.len() < self.frame_bytes {
            return Err(ScaleError::ShortInput);
        }
        if dst.len() != self.output_bytes() {
            return Err(ScaleError::OutputSize);
        }
        let (ow, oh) = (self.out_width, self.out_height);
        let (y_out, chroma_out) = dst.split_at_mut(ow * oh);
        let (u_out, v_out) = chroma_out.split_at_mut(ow * oh / 4);
        let (w, h, stride) = (self.input.width as usize, self.input.height as usize, self.input.stride as usize);
        let (lc, cc, sums) = (self.luma_cols.view(), self.chroma_cols.view(), &mut self.row_sums);
        let (lr, cr) = (self.luma_rows, self.chroma_rows);
        let cw = ow / 2;
        match self.input.format {
            PixelFormat::Nv12 => {
                let luma = PlaneIn { base: 0, stride, row_len: w, rows: lr, group: 1 };
                for_each_output_row(src, luma, sums, |j, row, rows| {
                    columns::<1, 0>(&row, &lc, rows, &mut y_out[j * ow..][..ow]);
                });
                let uv = PlaneIn { base: stride * h, stride, row_len: w, rows: cr, group: 1 };
                for_each_output_row(src, uv, sums, |j, row, rows| {
                    let (u, v) = (&mut u_out[j * cw..][..cw], &mut v_out[j * cw..][..cw]);
                    match row {
                        Row::Bytes(r) if cc.axis.src == cc.axis.dst => split_uv(r, u, v),
                        _ => {
                            columns::<2, 0>(&row, &cc, rows, u);
                            columns::<2, 1>(&row, &cc, rows, v);
                        }
                    }
                });
            }
            PixelFormat::Yu12 => {
                let luma = PlaneIn { base: 0, stride, row_len: w, rows: lr, group: 1 };
                for_each_output_row(src, luma, sums, |j, row, rows| {
                    columns::<1, 0>(&row, &lc, rows, &mut y_out[j * ow..][..ow]);
                });
                let (cs, crows) = (stride / 2, h / 2);
                for (base, out) in [(stride * h, &mut *u_out), (stride * h + cs * crows, &mut *v_out)] {
                    let plane = PlaneIn { base, stride: cs, row_len: w / 2, rows: cr, group: 1 };
                    for_each_output_row(src, plane, sums, |j, row, rows| {
                        columns::<1, 0>(&row, &cc, rows, &mut out[j * cw..][..cw]);
                    });
                }
            }
            PixelFormat::Yuyv => {
                // Luma and chroma cover different source rows (4:2:2 to 4:2:0), so two passes.
                let packed = PlaneIn { base: 0, stride, row_len: 2 * w, rows: lr, group: 1 };
                for_each_output_row(src, packed, sums, |j, row, rows| {
                    columns::<2, 0>(&row, &lc, rows, &mut y_out[j * ow..][..ow]);
                });
                let pairs = PlaneIn { rows: cr, group: 2, ..packed };
                for_each_output_row(src, pairs, sums, |j, row, rows| {
                    columns::<4, 1>(&row, &cc, rows, &mut u_out[j * cw..][..cw]);
                    columns::<4, 3>(&row, &cc, rows, &mut v_out[j * cw..][..cw]);
                });
            }
        }
        Ok(())
    }
}

/// Calls `f(output_row, row, weight)` for each output row of `plane`, `weight` being the total
/// weight of the source rows summed into `row`.
fn for_each_output_row<F>(src: &[u8], plane: PlaneIn, sums: &mut [u16], mut f: F)
where
    F: FnMut(usize, Row<'_>, u32),
{
    let line = |y: usize| &src[plane.base + y * plane.stride..][..plane.row_len];
    let sums = &mut sums[..plane.row_len];
    let (axis, g) = (plane.rows, plane.group);
    let middle = axis.middle() as u16;
    for j in 0..axis.dst {
        let span = axis.span(j);
        let (y0, n) = (usize::from(span.start), usize::from(span.count));
        if n == 1 && g == 1 {
            f(j, Row::Bytes(line(y0)), u32::from(span.first));
            continue;
        }
        for k in 0..n * g {
            let weight = match k / g {
                0 => span.first,
                r if r == n - 1 => span.last,
                _ => middle,
            };
            let l = line(y0 * g + k);
            if k == 0 {
                for (s, &a) in sums.iter_mut().zip(l) {
                    *s = weight * u16::from(a);
                }
            } else if weight == 1 {
                for (s, &a) in sums.iter_mut().zip(l) {
                    *s += u16::from(a);
                }
            } else {
                for (s, &a) in sums.iter_mut().zip(l) {
                    *s += weight * u16::from(a);
                }
            }
        }
        f(j, Row::Sums(sums), axis.total(span) * g as u32);
    }
}

/// The column pass of one output row: element `x * STEP + OFFSET` of `row` is source pixel `x`.
fn columns<const STEP: usize, const OFFSET: usize>(row: &Row<'_>, cols: &Cols<'_>, weight: u32, out: &mut [u8]) {
    match row {
        Row::Bytes(r) if STEP == 1 && weight == 1 && cols.axis.src == cols.axis.dst => {
            out.copy_from_slice(&r[..out.len()]);
        }
        Row::Bytes(r) => columns_of(r, cols, weight, out, STEP, OFFSET),
        Row::Sums(r) => columns_of(r, cols, weight, out, STEP, OFFSET),
    }
}

#[inline(always)]
fn columns_of<T: Copy + Into<u32>>(
    row: &[T],
    cols: &Cols<'_>,
    weight: u32,
    out: &mut [u8],
    step: usize,
    offset: usize,
) {
    let axis = cols.axis;
    // The fixed-ratio paths are exact while a footprint weighs at most FIXED_MAX_AREA.
    let fixed_ratio = if axis.q == 1 { axis.p } else { 0 };
    if fixed_ratio == 1 && weight == 1 {
        match (step, offset) {
            (1, 0) => return pick::<T, 1, 0>(row, out),
            (2, 0) => return pick::<T, 2, 0>(row, out),
            (2, 1) => return pick::<T, 2, 1>(row, out),
            (4, 1) => return pick::<T, 4, 1>(row, out),
            (4, 3) => return pick::<T, 4, 3>(row, out),
            _ => {}
        }
    }
    if fixed_ratio != 0 && fixed_ratio as u32 * weight <= FIXED_MAX_AREA {
        let m = reciprocal_fixed(fixed_ratio as u32 * weight);
        match (fixed_ratio, step, offset) {
            (1, 1, 0) => return fixed::<T, 1, 1, 0>(row, m, out),
            (1, 2, 0) => return fixed::<T, 1, 2, 0>(row, m, out),
            (1, 2, 1) => return fixed::<T, 1, 2, 1>(row, m, out),
            (1, 4, 1) => return fixed::<T, 1, 4, 1>(row, m, out),
            (1, 4, 3) => return fixed::<T, 1, 4, 3>(row, m, out),
            (2, 1, 0) => return fixed::<T, 2, 1, 0>(row, m, out),
            (2, 2, 0) => return fixed::<T, 2, 2, 0>(row, m, out),
            (2, 2, 1) => return fixed::<T, 2, 2, 1>(row, m, out),
            (2, 4, 1) => return fixed::<T, 2, 4, 1>(row, m, out),
            (2, 4, 3) => return fixed::<T, 2, 4, 3>(row, m, out),
            (3, 1, 0) => return fixed::<T, 3, 1, 0>(row, m, out),
            (3, 2, 0) => return fixed::<T, 3, 2, 0>(row, m, out),
            (3, 2, 1) => return fixed::<T, 3, 2, 1>(row, m, out),
            (3, 4, 1) => return fixed::<T, 3, 4, 1>(row, m, out),
            (3, 4, 3) => return fixed::<T, 3, 4, 3>(row, m, out),
            (4, 1, 0) => return fixed::<T, 4, 1, 0>(row, m, out),
            (4, 2, 0) => return fixed::<T, 4, 2, 0>(row, m, out),
            (4, 2, 1) => return fixed::<T, 4, 2, 1>(row, m, out),
            (4, 4, 1) => return fixed::<T, 4, 4, 1>(row, m, out),
            (4, 4, 3) => return fixed::<T, 4, 4, 3>(row, m, out),
            _ => {}
        }
    }
    if axis.fractional && (axis.p, axis.q) == (3, 2) && 3 * weight <= FIXED_MAX_AREA {
        let m = reciprocal_fixed(3 * weight);
        match (step, offset) {
            (1, 0) => return three_halves::<T, 1, 0>(row, m, out),
            (2, 0) => return three_halves::<T, 2, 0>(row, m, out),
            (2, 1) => return three_halves::<T, 2, 1>(row, m, out),
            (4, 1) => return three_halves::<T, 4, 1>(row, m, out),
            (4, 3) => return three_halves::<T, 4, 3>(row, m, out),
            _ => {}
        }
    }
    let min_total = axis.min_total();
    let narrow = reciprocal_general(min_total * weight);
    let wide = reciprocal_general((min_total + 1) * weight);
    let middle = axis.middle();
    for (o, span) in out.iter_mut().zip(cols.spans) {
        let (x0, n) = (usize::from(span.start), usize::from(span.count));
        let px = |x: usize| -> u32 { row[x * step + offset].into() };
        let mut sum = u32::from(span.first) * px(x0);
        if n > 1 {
            let inner: u32 = (x0 + 1..x0 + n - 1).map(px).sum();
            sum += middle * inner + u32::from(span.last) * px(x0 + n - 1);
        }
        let m = if axis.total(*span) == min_total { narrow } else { wide };
        *o = ((u64::from(sum) * m + (1 << (GENERAL_SHIFT - 1))) >> GENERAL_SHIFT) as u8;
    }
}

/// NV12 chroma at 1:1: de-interleaves `U V U V …` in one pass.
fn split_uv(row: &[u8], u: &mut [u8], v: &mut [u8]) {
    for ((u, v), uv) in u.iter_mut().zip(v.iter_mut()).zip(row.chunks_exact(2)) {
        (*u, *v) = (uv[0], uv[1]);
    }
}

/// 1:1 on a single source row: a copy of every `STEP`th element.
#[inline(always)]
fn pick<T: Copy + Into<u32>, const STEP: usize, const OFFSET: usize>(row: &[T], out: &mut [u8]) {
    for (o, c) in out.iter_mut().zip(row.chunks_exact(STEP)) {
        *o = c[OFFSET].into() as u8;
    }
}

/// Exact integer ratio `K`: every output pixel sums `K` consecutive source pixels.
#[inline(always)]
fn fixed<T: Copy + Into<u32>, const K: usize, const STEP: usize, const OFFSET: usize>(
    row: &[T],
    m: u32,
    out: &mut [u8],
) {
    for (o, c) in out.iter_mut().zip(row.chunks_exact(K * STEP)) {
        let mut sum = 0u32;
        for k in 0..K {
            sum += c[k * STEP + OFFSET].into();
        }
        *o = ((sum * m + (1 << (FIXED_SHIFT - 1))) >> FIXED_SHIFT) as u8;
    }
}

/// 3:2 by area: source pixels a, b, c make two outputs weighing 2a + b and b + 2c.
#[inline(always)]
fn three_halves<T: Copy + Into<u32>, const STEP: usize, const OFFSET: usize>(row: &[T], m: u32, out: &mut [u8]) {
    let round = |sum: u32| ((sum * m + (1 << (FIXED_SHIFT - 1))) >> FIXED_SHIFT) as u8;
    for (o, c) in out.chunks_exact_mut(2).zip(row.chunks_exact(3 * STEP)) {
        let (a, b, c): (u32, u32, u32) = (c[OFFSET].into(), c[STEP + OFFSET].into(), c[2 * STEP + OFFSET].into());
        o[0] = round(2 * a + b);
        o[1] = round(b + 2 * c);
    }
}

// Rounding division by the footprint's total weight `n` as a multiply and shift:
// `(sum * ceil(2^S / n) + 2^(S-1)) >> S` equals `(sum + n/2) / n` (halves round up) for every
// sum ≤ 255·n while n² < 2^S / 510: the multiplier overshoots 1/n by less than the distance of
// sum/n + 1/2 to the next integer.
const FIXED_SHIFT: u32 = 22;
/// Largest total weight of the u32 fixed-ratio paths: 90² < 2^22 / 510.
const FIXED_MAX_AREA: u32 = 90;
/// The general path's u64 arithmetic is exact up to total weights of 46,431 and within one level
/// beyond (sum · m < 255 · 2^40 + 255 · n never overflows).
const GENERAL_SHIFT: u32 = 40;

fn reciprocal_fixed(n: u32) -> u32 {
    (1u32 << FIXED_SHIFT).div_ceil(n)
}

fn reciprocal_general(n: u32) -> u64 {
    (1u64 << GENERAL_SHIFT).div_ceil(u64::from(n))
}

#[cfg(test)]
mod tests {
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
}
