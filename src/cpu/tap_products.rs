//! Stride-1 "same" convolutions on the CPU as one matrix product per kernel tap. burn's CPU
//! backend (flex) builds an im2col matrix in tiles and then packs it again for its matrix
//! product, so every value is written twice over before any arithmetic. Here each tap's product
//! reads the input in place: with the map's rows laid end to end, the input under the tap
//! shifted by (dy, dx) for output pixel `q = y·W + x` sits at `q + dy·W + dx`, so a tap is a
//! plain strided matrix `[Cin, pixels]` over the rows it reaches. Taps shifted sideways also
//! read across row ends there; their products go to a scratch band of which only the valid
//! columns are added. Taps that only ever read padding (the ASPP's largest rates on small maps)
//! are left out.
//!
//! Narrow layers (few input channels) make shallow products whose partial sums go through
//! memory once per tap: there a band of rows first gathers every tap's shifted input into one
//! matrix in cache (im2col, one band at a time) for a single product as deep as `taps · Cin`
//! ([`TapStrategy::Gathered`]). The trunk's two strided convolutions are gathered too, every
//! `stride`-th pixel (flex's convolution ran them at 6-60 GFLOP/s).
//!
//! The weights come as checkpoints store them (`[Cout, Cin, k, k]`) or, as inference on flex
//! keeps the wide layers' ([`super::ohwi_weights`]), `[Cout, k, k, Cin]`: one tap's product then
//! reads runs of `Cin` weights, a ninth of them, rather than one value in nine of every cache line
//! (the released model's widest layers from memory nine times a call: 128x256 on 2 threads of a
//! Zen 5, 400 -> 372 ms a frame).

use std::ops::Range;

use super::{SharedOut, threads};

/// An ungrouped convolution with a square odd kernel, equal dilation and stride, and the padding
/// that keeps the map's size at stride 1 (`dilation · (kernel - 1) / 2` on every side): every
/// convolution of the network (the trunk's two strided ones at stride 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapGeometry {
    pub batch: usize,
    pub input_channels: usize,
    pub height: usize,
    pub width: usize,
    pub output_channels: usize,
    pub kernel: usize,
    pub dilation: usize,
    pub stride: usize,
}

impl TapGeometry {
    /// Output rows: those of the input at stride 1, every `stride`-th of them otherwise.
    pub fn output_height(&self) -> usize {
        (self.height.max(1) - 1) / self.stride + 1
    }

    pub fn output_width(&self) -> usize {
        (self.width.max(1) - 1) / self.stride + 1
    }

    /// How far the kernel reaches from its centre (the "same" padding).
    fn reach(&self) -> usize {
        self.dilation * (self.kernel - 1) / 2
    }

    /// The taps that read at least one input pixel, as (row shift, column shift, tap index).
    pub(super) fn live_taps(&self) -> Vec<(isize, isize, usize)> {
        let reach = self.reach() as isize;
        let shift = |k: usize| (k * self.dilation) as isize - reach;
        (0..self.kernel * self.kernel)
            .map(|tap| (shift(tap / self.kernel), shift(tap % self.kernel), tap))
            .filter(|&(dy, dx, _)| dy.unsigned_abs() < self.height && dx.unsigned_abs() < self.width)
            .collect()
    }
}

/// The order a convolution's weights are stored in, each output channel's `Cin · k²` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightOrder {
    /// `[Cout, Cin, k, k]`, as checkpoints and burn store them.
    Oihw,
    /// `[Cout, k, k, Cin]`: every tap's weights of an output channel one run of `Cin`.
    Ohwi,
}

impl WeightOrder {
    /// Where weight (`co`, `ci`, `tap`) lies, for `cin` input channels and `taps` taps.
    pub fn offset(self, [cin, taps]: [usize; 2], co: usize, ci: usize, tap: usize) -> usize {
        let (channel_stride, tap_stride) = self.strides([cin, taps]);
        co * cin * taps + ci * channel_stride + tap * tap_stride
    }

    /// The order our convolutions read a `kernel x kernel` layer of `input_channels` fastest in:
    /// [`Self::Ohwi`] where they take one tap at a time (one product per tap, Winograd's
    /// transform), [`Self::Oihw`] where they gather a band's taps ([`TapStrategy::Gathered`]:
    /// each input plane's rows read once for all its taps) and for 1x1 kernels (the same either
    /// way).
    pub fn preferred(input_channels: usize, kernel: usize) -> Self {
        if kernel > 1 && input_channels >= TapStrategy::GATHER_BELOW_CHANNELS { Self::Ohwi } else { Self::Oihw }
    }

    /// Steps between neighbouring input channels and between neighbouring taps.
    fn strides(self, [cin, taps]: [usize; 2]) -> (usize, usize) {
        match self {
            Self::Oihw => (taps, 1),
            Self::Ohwi => (1, cin),
        }
    }
}

/// A convolution's weights and the order they are stored in.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    pub values: &'a [f32],
    pub order: WeightOrder,
}

impl<'a> Weights<'a> {
    /// `[Cout, Cin, k, k]`, as checkpoints store them.
    pub fn oihw(values: &'a [f32]) -> Self {
        Self { values, order: WeightOrder::Oihw }
    }

    /// Weight (`co`, `ci`, `tap`) of a convolution of geometry `g`.
    pub(super) fn at(&self, g: &TapGeometry, co: usize, ci: usize, tap: usize) -> f32 {
        self.values[self.order.offset([g.input_channels, g.kernel * g.kernel], co, ci, tap)]
    }
}

/// How a convolution's products are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapStrategy {
    /// One product per live tap, `Cin` deep, each adding into the band's output.
    PerTap,
    /// Each band's taps gathered into one matrix first: one product `taps · Cin` deep.
    Gathered,
    /// No matrix product: register tiles of output channels x pixel vectors summed over every
    /// input channel and tap of zero-bordered copies of the input ([`super::direct_convolution`]).
    Direct,
    /// 3x3 kernels: Winograd's F(2x2, 3x3), 16 products over 2x2 tiles of outputs where the taps
    /// make 9 over every pixel ([`super::winograd`]); other kernels per tap.
    Winograd,
}

impl TapStrategy {
    /// Gathered below this many input channels, where a product per tap is too shallow to keep
    /// the matrix product's registers busy (measured at width 1/8, 2 threads: 16 input channels
    /// 1.58 -> 1.35 ms, 32 1.33 -> 1.07, 38 5.92 -> 5.34; 64 about even, 128 slower).
    const GATHER_BELOW_CHANNELS: usize = 64;

    pub fn for_geometry(g: &TapGeometry) -> Self {
        if super::winograd::gains_on(g) {
            Self::Winograd
        } else if super::direct_convolution::gains_on(g) {
            Self::Direct
        } else if g.kernel > 1 && g.input_channels < Self::GATHER_BELOW_CHANNELS {
            Self::Gathered
        } else {
            Self::PerTap
        }
    }
}

/// Output values (channels x pixels) a band of rows should hold: its partial sums then stay in
/// the core's cache while every tap adds to them.
pub(super) const BAND_VALUES: usize = 1 << 17;
/// The fewest pixels in a band: each tap's product packs the whole weight slice again.
pub(super) const MIN_BAND_PIXELS: usize = 512;
/// The fewest pixels in a band of gathered taps, whose one product packs its weights once: a
/// small map shared out by rows rather than by blocks of output channels, each of which would
/// gather the same taps again (32->32 on 16x32, two threads: 1.5x one thread's speed -> 1.9x).
const MIN_GATHERED_BAND_PIXELS: usize = 64;
/// Values of a band's gathered matrix (`taps · Cin` x pixels): it stays in the core's cache
/// between being written and being read by the product.
const GATHERED_VALUES: usize = 1 << 17;
/// The fewest output channels in a piece of work (a multiple of the SIMD width).
const MIN_BLOCK_CHANNELS: usize = 16;

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

/// `x` (`[N, Cin, H, W]`, row-major) convolved with `weight` (`Cout` output channels of `Cin`
/// input channels under `k x k` taps), then `epilogue`: `[N, Cout, H, W]`, row-major.
pub fn convolve_by_taps(x: &[f32], weight: Weights, g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    convolve_by_taps_as(TapStrategy::for_geometry(&g), x, weight, g, epilogue)
}

/// [`convolve_by_taps`] with the products laid out as `strategy` says.
pub fn convolve_by_taps_as(strategy: TapStrategy, x: &[f32], weight: Weights, g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    let TapGeometry { batch, input_channels: cin, height: h, width: w, output_channels: cout, kernel: k, dilation, stride } = g;
    // The centre tap, which writes every output value first, exists only for these.
    assert!(k % 2 == 1 && dilation >= 1 && stride >= 1, "an odd kernel, a dilation and a stride of at least 1");
    assert_eq!(x.len(), batch * cin * h * w, "input size");
    let strategy = match strategy {
        // A strided layer's tap is no plain strided matrix over the input: its taps are gathered.
        _ if stride > 1 => TapStrategy::Gathered,
        TapStrategy::Direct => return super::direct_convolution::convolve_direct(x, weight, g, epilogue),
        TapStrategy::Winograd if k == 3 && cin > 0 => return super::winograd::convolve_winograd(x, weight, g, epilogue),
        TapStrategy::Winograd => TapStrategy::PerTap,
        strategy => strategy,
    };
    let (oh, ow) = (g.output_height(), g.output_width());
    assert_eq!(weight.values.len(), cout * cin * k * k, "weight size");
    assert!(epilogue.bias.is_none_or(|b| b.len() == cout), "bias size");
    assert!(epilogue.residual.is_none_or(|r| r.len() == batch * cout * oh * ow), "residual size");
    let (in_plane, plane) = (h * w, oh * ow);
    let mut taps = g.live_taps();
    // The centre column of taps first (its centre tap covers every pixel), then each side column.
    taps.sort_by_key(|&(dy, dx, _)| (dx != 0, dx, dy != 0, dy));
    // Bands small enough to stay in cache and, where the map allows, one per thread at least.
    let (cache_pixels, min_band_pixels) = match strategy {
        TapStrategy::PerTap => (BAND_VALUES / cout, MIN_BAND_PIXELS),
        TapStrategy::Gathered => (GATHERED_VALUES / (cin * taps.len()).max(cout), MIN_GATHERED_BAND_PIXELS),
        TapStrategy::Direct | TapStrategy::Winograd => unreachable!("returned above"),
    };
    let workers = workers_for([cout, plane, cin, taps.len()]);
    let work = share_out(oh, ow, cache_pixels, min_band_pixels, workers, cout);

    let size = batch * cout * plane;
    // Every output value is written before it is read (the first product or the residual's
    // copy), so the output starts uninitialised; except where a product has no depth (it writes
    // nothing) or one row (gemm then views its destination as a slice).
    let zeroed = cin == 0 || work.iter().any(|piece| piece.channels.len() == 1);
    let mut out = if zeroed { vec![0f32; size] } else { Vec::with_capacity(size) };
    for b in 0..batch {
        let convolution = ImageConvolution {
            image: &x[b * cin * in_plane..][..cin * in_plane],
            weight,
            // SAFETY: image b's output lies inside the allocation.
            out: SharedOut(unsafe { out.as_mut_ptr().add(b * cout * plane) }),
            taps: &taps,
            g,
            epilogue: Epilogue { residual: epilogue.residual.map(|r| &r[b * cout * plane..][..cout * plane]), ..epilogue },
        };
        let piece = |band: &Band| {
            // SAFETY: each piece writes only its own rows of its own output planes.
            unsafe {
                match strategy {
                    TapStrategy::PerTap => convolution.convolve_band(band),
                    TapStrategy::Gathered => convolution.convolve_gathered_band(band),
                    TapStrategy::Direct | TapStrategy::Winograd => unreachable!("returned above"),
                }
            }
        };
        each_piece(&work, workers, piece);
    }
    // SAFETY: the pieces wrote every value of every image (rows x channels cover the output).
    unsafe { out.set_len(size) };
    out
}

/// One piece of work: output rows `rows` of planes `channels` of one image; `split` lets the
/// matrix product itself use the threads (the only piece).
pub(super) struct Band {
    pub(super) rows: Range<usize>,
    pub(super) channels: Range<usize>,
    pub(super) split: bool,
}

/// The pieces of work of one image's `cout`-plane output of `rows` rows of `row_pixels` pixels
/// each: bands of rows small enough to stay in cache (`cache_pixels`) and, where the map allows,
/// one per worker at least; maps too small for a band per worker are shared out by blocks of
/// output channels as well.
pub(super) fn share_out(rows: usize, row_pixels: usize, cache_pixels: usize, min_band_pixels: usize, workers: usize, cout: usize) -> Vec<Band> {
    let band_pixels = cache_pixels.min((rows * row_pixels).div_ceil(workers)).max(min_band_pixels);
    let band_rows = band_pixels.div_ceil(row_pixels.max(1)).clamp(1, rows.max(1));
    let bands: Vec<(usize, usize)> = (0..rows).step_by(band_rows).map(|top| (top, (top + band_rows).min(rows))).collect();
    let blocks = (workers / bands.len().max(1)).min(cout / MIN_BLOCK_CHANNELS).max(1);
    let block = cout.div_ceil(blocks).next_multiple_of(MIN_BLOCK_CHANNELS).min(cout);
    // One piece alone lets the matrix product itself use the threads.
    let split = bands.len() * cout.div_ceil(block) == 1;
    bands
        .iter()
        .flat_map(|&(top, bottom)| (0..cout).step_by(block).map(move |c| Band { rows: top..bottom, channels: c..(c + block).min(cout), split }))
        .collect()
}

/// `piece` on each piece of work, on `workers` threads where there are several pieces.
pub(super) fn each_piece(work: &[Band], workers: usize, piece: impl Fn(&Band) + Send + Sync) {
    if workers > 1 {
        super::each_index(work.len(), |i| piece(&work[i]));
    } else {
        work.iter().for_each(piece);
    }
}

/// One image's convolution as the pieces of work share it.
struct ImageConvolution<'a> {
    /// `[Cin, H, W]`.
    image: &'a [f32],
    weight: Weights<'a>,
    /// The image's `[Cout, H, W]` output.
    out: SharedOut,
    /// The live taps, the centre column first.
    taps: &'a [(isize, isize, usize)],
    g: TapGeometry,
    /// Its residual is the image's.
    epilogue: Epilogue<'a>,
}

impl ImageConvolution<'_> {
    /// This band's rows of output plane `c`, once written.
    ///
    /// # Safety
    /// As for [`Self::convolve_band`], and these values are initialised.
    unsafe fn band_plane<'b>(&self, rows: &Range<usize>, c: usize) -> &'b mut [f32] {
        let (plane, w) = (self.g.output_height() * self.g.output_width(), self.g.output_width());
        unsafe { std::slice::from_raw_parts_mut(self.out.0.add(c * plane + rows.start * w), rows.len() * w) }
    }

    /// The residual's rows copied where the products then add, or nothing.
    ///
    /// # Safety
    /// As for [`Self::convolve_band`].
    unsafe fn start_from_residual(&self, band: &Band) {
        let Some(residual) = self.epilogue.residual else { return };
        let (plane, w) = (self.g.output_height() * self.g.output_width(), self.g.output_width());
        let (start, len) = (band.rows.start * w, band.rows.len() * w);
        for c in band.channels.clone() {
            // SAFETY: rows of plane c that only this piece writes; the residual has the output's shape.
            unsafe { std::ptr::copy_nonoverlapping(residual[c * plane + start..][..len].as_ptr(), self.out.0.add(c * plane + start), len) };
        }
    }

    /// The bias and ReLU on this band's written rows.
    ///
    /// # Safety
    /// As for [`Self::convolve_band`], once the band's values are written.
    unsafe fn finish_band(&self, band: &Band) {
        let Epilogue { bias, relu, .. } = self.epilogue;
        if bias.is_none() && !relu {
            return;
        }
        for c in band.channels.clone() {
            let bias = bias.map_or(0.0, |b| b[c]);
            // SAFETY: the caller's promise.
            let values = unsafe { self.band_plane(&band.rows, c) };
            if relu {
                values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
            } else {
                values.iter_mut().for_each(|v| *v += bias);
            }
        }
    }

    /// One band as a single product: every live tap's input for these rows gathered (a row per
    /// input channel and tap, in the weights' own order, zero where the tap reads padding), then
    /// `weight[channels] x gathered` into the band, with the epilogue.
    ///
    /// # Safety
    /// As for [`Self::convolve_band`].
    unsafe fn convolve_gathered_band(&self, band: &Band) {
        let TapGeometry { input_channels: cin, kernel: k, .. } = self.g;
        let (h, w) = (self.g.output_height(), self.g.output_width());
        let (plane, depth, pixels, count) = (h * w, cin * k * k, band.rows.len() * w, band.channels.len());
        let gathered = gather_band(self.image, self.taps, &self.g, self.weight.order, &band.rows);
        // SAFETY: dst: `count` planes from channels.start, this band's pixels; lhs: weight rows
        // `channels`, each cin·k² long; rhs: the gathered matrix, cin·k² rows of `pixels`.
        unsafe {
            self.start_from_residual(band);
            let dst = self.out.0.add(band.channels.start * plane + band.rows.start * w);
            let lhs = (self.weight.values.as_ptr().add(band.channels.start * depth), depth, 1);
            let parallelism = if band.split { parallelism(count * pixels * depth) } else { gemm::Parallelism::None };
            product((dst, plane), self.epilogue.residual.is_some(), lhs, (gathered.as_ptr(), pixels), [count, pixels, depth], parallelism);
            self.finish_band(band);
        }
    }

    /// Output rows `rows` of planes `channels`: every live tap's product over the pixels of
    /// those rows it reaches. The centre column of taps adds straight into `out`; each side
    /// column (taps shifted by the same `dx`) sums into a scratch band first, since its
    /// products also run over the `|dx|` columns at each row's end whose input lies across the
    /// row boundary: only its valid columns are then added.
    ///
    /// # Safety
    /// `out` points at the image's `[Cout, H, W]` output, and no other thread writes these rows
    /// of these planes meanwhile.
    unsafe fn convolve_band(&self, piece: &Band) {
        let TapGeometry { input_channels: cin, height: h, width: w, kernel: k, stride, .. } = self.g;
        debug_assert_eq!(stride, 1, "strided layers gather their taps");
        let Band { rows, channels, split } = piece;
        let (plane, top, bottom, count) = (h * w, rows.start, rows.end, channels.len());
        let band = (bottom - top) * w;
        // SAFETY: the caller's promise.
        unsafe { self.start_from_residual(piece) };
        let mut side = Vec::new();
        for column in self.taps.chunk_by(|a, b| a.1 == b.1) {
            let dx = column[0].1;
            let (x_lo, x_hi) = ((-dx).max(0) as usize, (w as isize - dx).min(w as isize) as usize);
            // The products' destination: pixel q of plane `channels.start + i` at
            // `target + i · row_stride + q - origin`.
            let (target, row_stride, origin) = if dx == 0 {
                // SAFETY: plane channels.start of the image's output.
                (unsafe { self.out.0.add(channels.start * plane) }, plane, 0)
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
                let accumulate = !(dx == 0 && dy == 0) || self.epilogue.residual.is_some();
                let parallelism = if *split { parallelism(count * pixels * cin) } else { gemm::Parallelism::None };
                // SAFETY: dst: `count` rows, pixels first..first + pixels of this band; lhs: the
                // weights of (co, ci, tap) for co in `channels`; rhs: cin planes, pixels read..read +
                // pixels, inside the plane since rows y_lo..y_hi shifted by dy and columns
                // x_lo..x_hi shifted by dx stay inside the map (between them, pixels read across
                // a row end: wrong outputs that only side columns produce, and drop below).
                unsafe {
                    let (channel_stride, _) = self.weight.order.strides([cin, k * k]);
                    let first_weight = self.weight.order.offset([cin, k * k], channels.start, 0, tap);
                    let lhs = (self.weight.values.as_ptr().add(first_weight), cin * k * k, channel_stride);
                    let rhs = (self.image.as_ptr().add(read), plane);
                    product((target.add(first - origin), row_stride), accumulate, lhs, rhs, [count, pixels, cin], parallelism);
                }
            }
            if dx != 0 {
                for (i, c) in channels.clone().enumerate() {
                    // SAFETY: the centre column, first, wrote these rows.
                    let out_rows = unsafe { self.band_plane(rows, c) };
                    for (out_row, side_row) in out_rows.chunks_exact_mut(w).zip(side[i * band..][..band].chunks_exact(w)) {
                        for (o, s) in out_row[x_lo..x_hi].iter_mut().zip(&side_row[x_lo..x_hi]) {
                            *o += s;
                        }
                    }
                }
            }
        }
        // SAFETY: every value of the band is written.
        unsafe { self.finish_band(piece) };
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` where `accumulate`, for `[m, n, depth]`: `dst` is
/// (start, row stride) of an `m x n` matrix, `lhs` (start, row stride, column stride) of
/// `m x depth`, `rhs` (start, row stride) of `depth x n`; every column stride but lhs's is 1.
///
/// # Safety
/// Every element those strides reach lies inside its buffer; no one else writes `dst` meanwhile.
pub(super) unsafe fn product(
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize),
    [m, n, depth]: [usize; 3],
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            depth,
            dst.0,
            1,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            1,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A row of `pixels` values per input channel `ci` and tap, in `order` (row `ci · k² + tap` or
/// `tap · Cin + ci`, as the weights): input channel `ci` under the tap for each output pixel of
/// `rows` (output pixel `(y, x)` reads `(stride · y + dy, stride · x + dx)`), zero where the tap
/// reads padding (a dead tap's whole row). Each value is written once, in order.
fn gather_band(image: &[f32], taps: &[(isize, isize, usize)], g: &TapGeometry, order: WeightOrder, rows: &Range<usize>) -> Vec<f32> {
    let TapGeometry { input_channels: cin, height: h, width: w, kernel: k, stride, .. } = *g;
    let ow = g.output_width();
    let (plane, kk, pixels) = (h * w, k * k, rows.len() * ow);
    let zeros = |gathered: &mut Vec<f32>, n: usize| gathered.extend(std::iter::repeat_n(0f32, n));
    let mut gathered = Vec::with_capacity(cin * kk * pixels);
    for row in 0..cin * kk {
        let (ci, tap) = match order {
            WeightOrder::Oihw => (row / kk, row % kk),
            WeightOrder::Ohwi => (row % cin, row / cin),
        };
        let input = &image[ci * plane..][..plane];
        let Some(&(dy, dx, _)) = taps.iter().find(|t| t.2 == tap) else {
            zeros(&mut gathered, pixels);
            continue;
        };
        // The output columns whose input column `stride · x + dx` lies on the map.
        let x_lo = ((-dx).max(0) as usize).div_ceil(stride);
        let x_hi = ((w as isize - dx) as usize).div_ceil(stride).min(ow);
        for y in rows.clone() {
            let source = (stride * y) as isize + dy;
            if !(0..h as isize).contains(&source) || x_lo >= x_hi {
                zeros(&mut gathered, ow);
                continue;
            }
            let from = (source * w as isize + (stride * x_lo) as isize + dx) as usize;
            zeros(&mut gathered, x_lo);
            let columns = &input[from..][..stride * (x_hi - x_lo - 1) + 1];
            if stride == 1 {
                gathered.extend_from_slice(columns);
            } else {
                gathered.extend(columns.iter().step_by(stride));
            }
            zeros(&mut gathered, ow - x_hi);
        }
    }
    gathered
}

/// Matrix products and convolutions at least this large (multiply-adds) are split across
/// threads: with the pool's threads waiting for a frame's passes ([`super::on_pool`]) small
/// passes gain too (in Chromium at width 1/8, 128x64, two threads: 2^21 18-20 ms a frame, 2^19
/// 15.8-16.3, 2^17 no better; with the crew, 2^17 and 2^11 values a pass: within the spread
/// between pages).
const PARALLEL_WORK: usize = 1 << 19;

/// Threads a convolution of `factors` (their product: multiply-adds) is shared out to: small
/// ones stay on the calling thread, where sharing them out would cost more.
pub(super) fn workers_for(factors: [usize; 4]) -> usize {
    let work = factors.into_iter().fold(1usize, usize::saturating_mul);
    if work >= PARALLEL_WORK { threads() } else { 1 }
}

pub(super) fn parallelism(work: usize) -> gemm::Parallelism {
    #[cfg(feature = "threads")]
    if work >= PARALLEL_WORK {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = work;
    gemm::Parallelism::None
}
