//! Stride-1 "same" convolutions on the CPU as one matrix product per kernel tap. burn's CPU
//! backend (flex) builds an im2col matrix in tiles and then packs it again for its matrix
//! product, so every value is written twice over before any arithmetic. Here the input is
//! zero-padded once and each tap's product reads it in place: with the padded map's rows laid
//! end to end, the input under tap (ky, kx) for output pixel `q = y·Wp + x` sits at the fixed
//! offset `ky·d·Wp + kx·d`, so a tap is a plain strided matrix `[Cin, pixels]`. The products
//! also run over the padding columns between rows (dropped afterwards), which costs `Wp / W`
//! of the arithmetic. Taps that only ever read padding (the ASPP's largest rates on small maps)
//! are left out, and the padding shrinks to what the remaining taps reach.

use std::ops::Range;

use super::threads;

/// A stride-1, ungrouped convolution with a square odd kernel, equal dilation and the padding that
/// keeps the map's size (`dilation · (kernel - 1) / 2` on every side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapGeometry {
    pub batch: usize,
    pub input_channels: usize,
    pub height: usize,
    pub width: usize,
    pub output_channels: usize,
    pub kernel: usize,
    pub dilation: usize,
}

impl TapGeometry {
    /// How far the kernel reaches from its centre (the "same" padding).
    fn reach(&self) -> usize {
        self.dilation * (self.kernel - 1) / 2
    }

    /// The taps that read at least one input pixel, as (row shift, column shift, tap index).
    fn live_taps(&self) -> Vec<(isize, isize, usize)> {
        let reach = self.reach() as isize;
        let shift = |k: usize| (k * self.dilation) as isize - reach;
        (0..self.kernel * self.kernel)
            .map(|tap| (shift(tap / self.kernel), shift(tap % self.kernel), tap))
            .filter(|&(dy, dx, _)| dy.unsigned_abs() < self.height && dx.unsigned_abs() < self.width)
            .collect()
    }
}

/// Output values (channels x pixels) a band of rows should hold: its partial sums then stay in
/// the core's cache while every tap adds to them.
const BAND_VALUES: usize = 1 << 17;
/// The fewest pixels in a band: each tap's product packs the whole weight slice again.
const MIN_BAND_PIXELS: usize = 512;
/// The fewest output channels in a piece of work (a multiple of the SIMD width).
const MIN_BLOCK_CHANNELS: usize = 16;

/// A raw pointer that threads writing disjoint parts of one buffer can share.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: bands write disjoint pixel ranges of the output (see `convolve_band`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// What follows a convolution in the network, done to each band of output rows while it is in
/// the core's cache rather than in passes over the whole map: its bias, a residual added (a
/// block's shortcut), ReLU; in that order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `[Cout]`.
    pub bias: Option<&'a [f32]>,
    /// `[N, Cout, H, W]`, row-major, as the output.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// `x` (`[N, Cin, H, W]`, row-major) convolved with `weight` (`[Cout, Cin, k, k]`), then
/// `epilogue`: `[N, Cout, H, W]`, row-major.
pub fn convolve_by_taps(x: &[f32], weight: &[f32], g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    let TapGeometry { batch, input_channels: cin, height: h, width: w, output_channels: cout, kernel: k, .. } = g;
    assert_eq!(x.len(), batch * cin * h * w, "input size");
    assert_eq!(weight.len(), cout * cin * k * k, "weight size");
    assert!(epilogue.bias.is_none_or(|b| b.len() == cout), "bias size");
    assert!(epilogue.residual.is_none_or(|r| r.len() == batch * cout * h * w), "residual size");
    let plane = h * w;
    let mut taps = g.live_taps();
    // The centre column of taps first (its centre tap covers every pixel), then each side column.
    taps.sort_by_key(|&(dy, dx, _)| (dx != 0, dx, dy != 0, dy));
    // Bands small enough to stay in cache and, where the map allows, one per thread at least.
    let band_pixels = (BAND_VALUES / cout).min(plane.div_ceil(threads())).max(MIN_BAND_PIXELS);
    let band_rows = band_pixels.div_ceil(w).min(h);
    let bands: Vec<(usize, usize)> = (0..h).step_by(band_rows).map(|top| (top, (top + band_rows).min(h))).collect();
    // Maps too small for a band per thread are shared out by output channels as well.
    let blocks = (threads() / bands.len()).min(cout / MIN_BLOCK_CHANNELS).max(1);
    let block = cout.div_ceil(blocks).next_multiple_of(MIN_BLOCK_CHANNELS).min(cout);
    let work: Vec<((usize, usize), Range<usize>)> =
        bands.iter().flat_map(|&band| (0..cout).step_by(block).map(move |c| (band, c..(c + block).min(cout)))).collect();

    let mut out = vec![0f32; batch * cout * plane];
    for b in 0..batch {
        let image = &x[b * cin * plane..][..cin * plane];
        let out_image = SharedOut(out[b * cout * plane..].as_mut_ptr());
        let image_epilogue = Epilogue { residual: epilogue.residual.map(|r| &r[b * cout * plane..][..cout * plane]), ..epilogue };
        let piece = |((top, bottom), channels): &((usize, usize), Range<usize>)| {
            let split = work.len() == 1;
            let rows = *top..*bottom;
            // SAFETY: each piece writes only its own rows of its own output planes.
            unsafe { convolve_band(image, weight, out_image, &taps, g, rows, channels.clone(), split, &image_epilogue) }
        };
        #[cfg(feature = "threads")]
        {
            use rayon::prelude::*;
            work.par_iter().for_each(piece);
        }
        #[cfg(not(feature = "threads"))]
        work.iter().for_each(piece);
    }
    out
}

/// Output rows `rows` of planes `channels` of one image: every live tap's product over the
/// pixels of those rows it reaches. The centre column of taps adds straight into `out`; each
/// side column (taps shifted by the same `dx`) sums into a scratch band first, since its
/// products also run over the `|dx|` columns at each row's end whose input lies across the row
/// boundary: only its valid columns are then added. `split` lets the matrix product itself use
/// the threads (one piece only).
///
/// # Safety
/// `out` points at the image's `[Cout, H, W]` output, and no other thread writes these rows of
/// these planes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn convolve_band(
    image: &[f32],
    weight: &[f32],
    out: SharedOut,
    taps: &[(isize, isize, usize)],
    g: TapGeometry,
    rows: Range<usize>,
    channels: Range<usize>,
    split: bool,
    epilogue: &Epilogue,
) {
    let TapGeometry { input_channels: cin, height: h, width: w, kernel: k, .. } = g;
    let (plane, top, bottom, count) = (h * w, rows.start, rows.end, channels.len());
    let band = (bottom - top) * w;
    // This band's rows of output plane c.
    let band_of = |c: usize| {
        // SAFETY: rows top..bottom of plane c, which only this piece touches (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(out.0.add(c * plane + top * w), band) }
    };
    if let Some(residual) = epilogue.residual {
        for c in channels.clone() {
            band_of(c).copy_from_slice(&residual[c * plane + top * w..][..band]);
        }
    }
    let mut side = Vec::new();
    for column in taps.chunk_by(|a, b| a.1 == b.1) {
        let dx = column[0].1;
        let (x_lo, x_hi) = ((-dx).max(0) as usize, (w as isize - dx).min(w as isize) as usize);
        // The products' destination: pixel q of plane `channels.start + i` at
        // `target + i · row_stride + q - origin`.
        let (target, row_stride, origin) = if dx == 0 {
            // SAFETY: plane channels.start of the image's output.
            (unsafe { out.0.add(channels.start * plane) }, plane, 0)
        } else {
            side.clear();
            side.resize(count * band, 0f32);
            (side.as_mut_ptr(), band, top * w)
        };
        for &(dy, _, tap) in column {
            let (y_lo, y_hi) = ((-dy).max(0) as usize, (h as isize - dy).min(h as isize) as usize);
            let (y_lo, y_hi) = (y_lo.max(top), y_hi.min(bottom));
            if y_lo >= y_hi {
                continue;
            }
            let first = y_lo * w + x_lo;
            let pixels = (y_hi - 1) * w + x_hi - first;
            let read = (first as isize + dy * w as isize + dx) as usize;
            // The centre tap writes, unless onto the residual; every other tap adds.
            let accumulate = !(dx == 0 && dy == 0) || epilogue.residual.is_some();
            let parallelism = if split { parallelism(count * pixels * cin) } else { gemm::Parallelism::None };
            // SAFETY: dst: `count` rows, pixels first..first + pixels of this band; lhs:
            // weight[co][ci][tap] for co in `channels`; rhs: cin planes, pixels read..read +
            // pixels, inside the plane since rows y_lo..y_hi shifted by dy and columns x_lo..x_hi
            // shifted by dx stay inside the map (between them, pixels read across a row end:
            // wrong outputs that only side columns produce, and drop below).
            unsafe {
                gemm::gemm(
                    count,
                    pixels,
                    cin,
                    target.add(first - origin),
                    1,
                    row_stride as isize,
                    accumulate,
                    weight.as_ptr().add(channels.start * cin * k * k + tap),
                    (k * k) as isize,
                    (cin * k * k) as isize,
                    image.as_ptr().add(read),
                    1,
                    plane as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        if dx != 0 {
            for (i, c) in channels.clone().enumerate() {
                for (out_row, side_row) in band_of(c).chunks_exact_mut(w).zip(side[i * band..][..band].chunks_exact(w)) {
                    for (o, s) in out_row[x_lo..x_hi].iter_mut().zip(&side_row[x_lo..x_hi]) {
                        *o += s;
                    }
                }
            }
        }
    }
    if epilogue.bias.is_some() || epilogue.relu {
        for c in channels {
            let bias = epilogue.bias.map_or(0.0, |b| b[c]);
            if epilogue.relu {
                band_of(c).iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
            } else {
                band_of(c).iter_mut().for_each(|v| *v += bias);
            }
        }
    }
}

/// Matrix products at least this large (multiply-adds) are split across threads.
#[cfg(feature = "threads")]
const PARALLEL_WORK: usize = 1 << 21;

fn parallelism(work: usize) -> gemm::Parallelism {
    #[cfg(feature = "threads")]
    if work >= PARALLEL_WORK {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = work;
    gemm::Parallelism::None
}
