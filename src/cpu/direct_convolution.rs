//! Stride-1 "same" convolutions computed directly in SIMD registers, for the layers with few
//! output channels, where a matrix product per tap spends most of its time packing and on tiles
//! it cannot fill (measured on a Zen 3: 22-26 GFLOP/s for 512->32 against 77-89 on square
//! products). The input is first copied channels-last with zero columns on either side
//! (`[H][pad + W' + pad][Cin]`): an output pixel's inputs under any tap are then one contiguous
//! run of `Cin` values and no tap needs a bounds test within a row. The weights are repacked
//! `[Cout / B][tap][Cin][B]`, so that B output channels are a few SIMD vectors. A register tile
//! holds B output channels of P neighbouring pixels: each input value is loaded once per tile and
//! meets B channels' weights, each weight vector meets P pixels.

use pulp::{Arch, Simd, WithSimd};

use super::tap_products::{Epilogue, TapGeometry, Weights, workers_for};
use super::{SharedOut, each_chunk_mut};

/// Input channels summed per pass over a row's tiles: a block's weights under every tap then
/// stay in the core's L2 cache from one tile to the next.
const DEPTH_BLOCK: usize = 128;

/// (vectors of output channels, pixels) in a register tile for `lanes`-wide SIMD: about 24
/// accumulators where there are 32 vector registers (AVX-512), 12 where there are 16.
const fn register_tile(lanes: usize) -> (usize, usize) {
    if lanes >= 16 { (2, 12) } else { (2, 6) }
}

/// `x` (`[N, Cin, H, W]`, row-major) convolved with `weight`, then `epilogue`: `[N, Cout, H, W]`,
/// row-major.
pub fn convolve_direct(x: &[f32], weight: Weights, g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    let TapGeometry { batch, input_channels: cin, height: h, width: w, output_channels: cout, kernel: k, .. } = g;
    assert_eq!(x.len(), batch * cin * h * w, "input size");
    assert_eq!(weight.values.len(), cout * cin * k * k, "weight size");
    assert!(epilogue.bias.is_none_or(|b| b.len() == cout), "bias size");
    assert!(epilogue.residual.is_none_or(|r| r.len() == batch * cout * h * w), "residual size");
    let arch = Arch::new();
    let lanes = arch.dispatch(Lanes);
    let (vectors, pixels) = register_tile(lanes);
    let taps = g.live_taps();
    // Every live tap's columns stay inside the padded rows.
    let pad = taps.iter().map(|&(_, dx, _)| dx.unsigned_abs()).max().unwrap_or(0);
    let shape = RowShape { block: vectors * lanes, tile: pixels, tiles: w.div_ceil(pixels), pad };
    let weights = pack_weights(weight, &g, &taps, shape.block);

    let plane = h * w;
    let mut out = vec![0f32; batch * cout * plane];
    let blocks = cout.div_ceil(shape.block);
    let workers = workers_for([cout, plane, cin, taps.len()]);
    for b in 0..batch {
        let rows = channels_last_rows(&x[b * cin * plane..][..cin * plane], &g, &shape);
        let image = ImageRows {
            rows: &rows,
            weights: &weights,
            taps: &taps,
            g,
            shape,
            // SAFETY: image b's output lies inside the allocation.
            out: SharedOut(unsafe { out.as_mut_ptr().add(b * cout * plane) }),
            epilogue: Epilogue { residual: epilogue.residual.map(|r| &r[b * cout * plane..][..cout * plane]), ..epilogue },
        };
        // One piece of work: an output row's block of channels.
        let piece = |i: usize| arch.dispatch(RowBlock { image: &image, row: i / blocks, block: i % blocks });
        if workers > 1 {
            super::each_index(h * blocks, piece);
        } else {
            (0..h * blocks).for_each(piece);
        }
    }
    out
}

/// The SIMD width, in float32 lanes.
struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> usize {
        S::F32_LANES
    }
}

/// How a row is cut into register tiles.
#[derive(Clone, Copy)]
struct RowShape {
    /// Output channels per block (a whole number of SIMD vectors).
    block: usize,
    /// Pixels per register tile.
    tile: usize,
    /// Tiles per row (the last may run past the row's end: its extra pixels read padding and
    /// are not stored).
    tiles: usize,
    /// Zero columns on each side of a padded input row.
    pad: usize,
}

impl RowShape {
    /// Pixels in a padded input row.
    fn padded_width(&self) -> usize {
        self.tiles * self.tile + 2 * self.pad
    }
}

/// `weight` as `[Cout / block][live tap][Cin][block]`, the channels past `Cout` in the last block
/// zero.
fn pack_weights(weight: Weights, g: &TapGeometry, taps: &[(isize, isize, usize)], block: usize) -> Vec<f32> {
    let (cin, cout) = (g.input_channels, g.output_channels);
    let blocks = cout.div_ceil(block);
    let mut packed = vec![0f32; blocks * taps.len() * cin * block];
    for (i, lanes) in packed.chunks_exact_mut(block).enumerate() {
        let (ci, tap, b) = (i % cin, i / cin % taps.len(), i / cin / taps.len());
        for (c, lane) in lanes.iter_mut().enumerate().take(cout.saturating_sub(b * block)) {
            *lane = weight.at(g, b * block + c, ci, taps[tap].2);
        }
    }
    packed
}

/// One image (`[Cin, H, W]`) channels-last, `[H][padded width][Cin]`, its columns `pad..pad + W`
/// the image's and the rest zero.
fn channels_last_rows(image: &[f32], g: &TapGeometry, shape: &RowShape) -> Vec<f32> {
    let (cin, w, plane) = (g.input_channels, g.width, g.height * g.width);
    let mut rows = vec![0f32; g.height * shape.padded_width() * cin];
    each_chunk_mut(&mut rows, shape.padded_width() * cin, |y, row| {
        for ci in 0..cin {
            let source = &image[ci * plane + y * w..][..w];
            for (x, &value) in source.iter().enumerate() {
                row[(shape.pad + x) * cin + ci] = value;
            }
        }
    });
    rows
}

/// One image's convolution as the pieces of work share it.
struct ImageRows<'a> {
    /// `[H][padded width][Cin]`.
    rows: &'a [f32],
    /// `[Cout / block][live tap][Cin][block]`.
    weights: &'a [f32],
    taps: &'a [(isize, isize, usize)],
    g: TapGeometry,
    shape: RowShape,
    /// The image's `[Cout, H, W]` output.
    out: SharedOut,
    /// Its residual is the image's.
    epilogue: Epilogue<'a>,
}

/// Output row `row` of the channels of block `block`.
struct RowBlock<'a> {
    image: &'a ImageRows<'a>,
    row: usize,
    block: usize,
}

impl WithSimd for RowBlock<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match register_tile(S::F32_LANES) {
            (2, 12) => self.compute::<S, 2, 12>(simd),
            (2, 6) => self.compute::<S, 2, 6>(simd),
            tile => unreachable!("no register tile {tile:?}"),
        }
    }
}

impl RowBlock<'_> {
    /// The row's sums, pixel by pixel (`[tiles · P][block]`), a depth block of input channels at
    /// a time; then the epilogue, written to the output's planes.
    #[inline(always)]
    fn compute<S: Simd, const V: usize, const P: usize>(self, simd: S) {
        let ImageRows { rows, weights, taps, g, shape, .. } = *self.image;
        let (cin, h, block) = (g.input_channels, g.height, shape.block);
        debug_assert_eq!(block, V * S::F32_LANES);
        let row_values = shape.padded_width() * cin;
        // The taps whose input row exists for this output row, with their index in the packing.
        let live: Vec<(usize, isize)> = taps
            .iter()
            .enumerate()
            .filter_map(|(i, &(dy, dx, _))| {
                let source = self.row as isize + dy;
                (0..h as isize).contains(&source).then(|| (i, source * row_values as isize + dx * cin as isize))
            })
            .collect();
        let block_weights = &weights[self.block * taps.len() * cin * block..][..taps.len() * cin * block];
        let mut sums = vec![0f32; shape.tiles * P * block];
        let zero = simd.splat_f32s(0.0);
        for depth in (0..cin).step_by(DEPTH_BLOCK) {
            let count = DEPTH_BLOCK.min(cin - depth);
            for (tile, tile_sums) in sums.chunks_exact_mut(P * block).enumerate() {
                let mut acc = [[zero; V]; P];
                if depth > 0 {
                    load_tile(&mut acc, tile_sums);
                }
                // Where pixel 0 of this tile reads under a tap of no shift.
                let origin = ((shape.pad + tile * P) * cin + depth) as isize;
                for &(tap, offset) in &live {
                    // SAFETY: rows holds P pixels of `cin` values from this tap's start (the
                    // padding covers every live tap's shift and the last tile's overrun); the
                    // weights hold `count` rows of `block` values from theirs.
                    unsafe {
                        let input = rows.as_ptr().offset(origin + offset);
                        let weights = block_weights.as_ptr().add((tap * cin + depth) * block);
                        multiply_add_tile(simd, &mut acc, input, cin, weights, count);
                    }
                }
                store_tile(&acc, tile_sums);
            }
        }
        self.write_row(&sums);
    }

    /// The bias, residual and ReLU on the row's sums, into the output's planes.
    fn write_row(&self, sums: &[f32]) {
        let ImageRows { g, shape, out, epilogue, .. } = *self.image;
        let (w, plane) = (g.width, g.height * g.width);
        let first = self.block * shape.block;
        for c in 0..shape.block.min(g.output_channels - first) {
            let channel = first + c;
            let bias = epilogue.bias.map_or(0.0, |b| b[channel]);
            let at = channel * plane + self.row * w;
            // SAFETY: this row of this plane is this piece's alone.
            let values = unsafe { std::slice::from_raw_parts_mut(out.0.add(at), w) };
            for (x, value) in values.iter_mut().enumerate() {
                let mut v = sums[x * shape.block + c] + bias;
                if let Some(residual) = epilogue.residual {
                    v += residual[at + x];
                }
                *value = if epilogue.relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// `acc[p] += Σ_i input[p · stride + i] · weights[i]` for `depth` input channels: each input
/// value broadcast once, each weight row (`V` vectors) loaded once.
///
/// # Safety
/// `input` reaches `(P - 1) · stride + depth` values, `weights` `depth · V` vectors.
#[inline(always)]
unsafe fn multiply_add_tile<S: Simd, const V: usize, const P: usize>(
    simd: S,
    acc: &mut [[S::f32s; V]; P],
    input: *const f32,
    stride: usize,
    weights: *const f32,
    depth: usize,
) {
    let lanes = S::F32_LANES;
    for i in 0..depth {
        // SAFETY: the caller's promise.
        let weight: [S::f32s; V] = std::array::from_fn(|v| unsafe { weights.add((i * V + v) * lanes).cast::<S::f32s>().read_unaligned() });
        for (p, sums) in acc.iter_mut().enumerate() {
            let x = simd.splat_f32s(unsafe { *input.add(p * stride + i) });
            for (sum, &weight) in sums.iter_mut().zip(&weight) {
                *sum = simd.mul_add_e_f32s(x, weight, *sum);
            }
        }
    }
}

/// A tile's sums from `sums` (`[P][V vectors]`, unaligned).
#[inline(always)]
fn load_tile<T: Copy, const V: usize, const P: usize>(acc: &mut [[T; V]; P], sums: &[f32]) {
    assert!(size_of_val(sums) >= size_of::<[[T; V]; P]>());
    // SAFETY: in bounds (above); T is a vector of f32 lanes, any bits of which are valid.
    *acc = unsafe { sums.as_ptr().cast::<[[T; V]; P]>().read_unaligned() };
}

/// A tile's sums into `sums` (`[P][V vectors]`, unaligned).
#[inline(always)]
fn store_tile<T: Copy, const V: usize, const P: usize>(acc: &[[T; V]; P], sums: &mut [f32]) {
    assert!(size_of_val(sums) >= size_of::<[[T; V]; P]>());
    // SAFETY: in bounds (above).
    unsafe { sums.as_mut_ptr().cast::<[[T; V]; P]>().write_unaligned(*acc) };
}
