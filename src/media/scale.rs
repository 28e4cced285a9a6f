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
mod tests;
