//! Stride-1 "same" convolutions computed directly in SIMD registers, on the planes as they come
//! (`[Cin, H, W]`): the lanes of a vector are neighbouring pixels of a row, and each weight is
//! broadcast to meet them. A matrix product per tap sends its partial sums through memory once
//! per tap, and a gathered band writes every input value nine times over before any arithmetic;
//! here a register tile of C output channels x V pixel vectors sums every input channel under
//! every tap before it is stored once. Each piece of work first copies the input under its rows
//! into planes with zero borders as wide as the taps reach (rows at its edges copied by both
//! neighbours), so that no tap needs a bounds test, and the copy is in its core's cache. The
//! weights are read where they are, a run of `Cin · k²` per output channel, the tile's reads
//! following their order.

use std::borrow::Cow;
use std::ops::Range;

use pulp::{Arch, Simd, WithSimd};

use super::tap_products::{Epilogue, TapGeometry, WeightOrder, Weights, workers_for};
use super::SharedOut;

/// (output channels, pixel vectors) of a register tile for `lanes`-wide SIMD: 24 accumulators
/// and 3 input vectors where there are 32 vector registers (AVX-512), 12 and 3 where there are
/// 16 (AVX2). WebAssembly's 4 lanes get 8 and 4: V8 keeps a few of x86's 16 registers for
/// itself, and 4 x 3 spilled (in Chromium, width 1/8 at 512x256 on 2 threads: 4 x 3 no faster than
/// the gathered products, 4 x 2 24 % faster, 2 x 4 another 6 %).
const fn register_tile(lanes: usize) -> (usize, usize) {
    if lanes >= 16 {
        (8, 3)
    } else if lanes >= 8 {
        (4, 3)
    } else {
        (2, 4)
    }
}

/// Pieces of work per thread, each a run of neighbouring tiles whose input rows overlap (on 2
/// threads of a Zen 5, 1 to 3 alike, 4 slower by 6 %, 8 by 18 %).
const PIECES_PER_THREAD: usize = 2;

/// Where the direct convolution beats the matrix products (measured on a Zen 5 with AVX-512,
/// 2 threads, against [`super::tap_products::TapStrategy::Gathered`] and `PerTap` at width 1/8,
/// 256x512: 16->16 on 128x256 0.57 -> 0.38 ms, 32->32 1.75 -> 1.31, 64->64 on 32x64 0.40 ->
/// 0.35, 64->128 at rate 4 0.67 -> 0.63; released width, 64->128 on 128x256 13.0 -> 9.8): 3x3
/// and larger stride-1 layers of up to 128x128 channels whose every tap reads the map, where
/// there is SIMD (4 lanes or more) and the padded copy stays close to the map's size. Wider
/// layers stream their weights once per tile (1024->512 at rate 2 on 16x32: 9.2 -> 12.5 ms),
/// and large rates pad small maps many times over (512->32 at rate 24 on 32x64: 0.86 -> 1.9).
pub fn gains_on(g: &TapGeometry) -> bool {
    const MAX_WEIGHTS: usize = 128 * 128;
    const MIN_LANES: usize = 4;
    let lanes = simd_lanes();
    let taps = g.live_taps();
    let padded = PaddedPlanes::new(g, &taps, lanes, g.height).plane;
    g.kernel > 1
        && g.stride == 1
        && g.input_channels * g.output_channels <= MAX_WEIGHTS
        && lanes >= MIN_LANES
        && taps.len() == g.kernel * g.kernel
        && 2 * padded <= 3 * g.height * g.width
}

/// `x` (`[N, Cin, H, W]`, row-major) convolved with `weight`, then `epilogue`: `[N, Cout, H, W]`,
/// row-major.
pub fn convolve_direct(x: &[f32], weight: Weights, g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    let TapGeometry { batch, input_channels: cin, height: h, width: w, output_channels: cout, kernel: k, stride, .. } = g;
    assert_eq!(stride, 1, "stride 1");
    assert_eq!(x.len(), batch * cin * h * w, "input size");
    assert_eq!(weight.values.len(), cout * cin * k * k, "weight size");
    assert!(epilogue.bias.is_none_or(|b| b.len() == cout), "bias size");
    assert!(epilogue.residual.is_none_or(|r| r.len() == batch * cout * h * w), "residual size");
    if h * w == 0 {
        return Vec::new();
    }
    let arch = Arch::new();
    let lanes = simd_lanes();
    let (channels, vectors) = register_tile(lanes);
    let taps = g.live_taps();
    let plane = h * w;
    let row_vectors = w.div_ceil(lanes);
    let tiles = (h * row_vectors).div_ceil(vectors);
    let workers = workers_for([cout, plane, cin, taps.len()]);
    // Runs of tiles, and on maps of fewer tiles than pieces wanted, groups of channel blocks too.
    let (blocks, wanted) = (cout.div_ceil(channels), if workers > 1 { workers * PIECES_PER_THREAD } else { 1 });
    let tile_runs = wanted.min(tiles).max(1);
    let block_groups = wanted.div_ceil(tile_runs).min(blocks).max(1);
    let pieces = tile_runs * block_groups;
    let run_of = |run: usize| tiles * run / tile_runs..tiles * (run + 1) / tile_runs;
    // Output rows of each run of tiles: each piece copies those rows' input, and its borders.
    let rows_of = |tiles: &Range<usize>| {
        let last = (tiles.end * vectors).min(h * row_vectors) - 1;
        tiles.start * vectors / row_vectors..last / row_vectors + 1
    };
    let run_rows = (0..tile_runs).map(|run| rows_of(&run_of(run)).len()).max().unwrap_or(0);
    let layout = PaddedPlanes::new(&g, &taps, lanes, run_rows);
    let (weights, reads) = weight_rows(weight, &g, &taps, &layout);
    let size = batch * cout * plane;
    let mut out = Vec::<f32>::with_capacity(size);
    for b in 0..batch {
        let image = PaddedImage {
            input: &x[b * cin * plane..][..cin * plane],
            weights: &weights,
            reads: &reads,
            g,
            layout,
            // SAFETY: image b's output lies inside the allocation.
            out: SharedOut(unsafe { out.as_mut_ptr().add(b * cout * plane) }),
            epilogue: Epilogue { residual: epilogue.residual.map(|r| &r[b * cout * plane..][..cout * plane]), ..epilogue },
        };
        let piece = |i: usize| {
            let (run, group) = (i % tile_runs, i / tile_runs);
            let tiles = run_of(run);
            let rows = rows_of(&tiles);
            let padded = layout.copy(image.input, &g, rows.start);
            let blocks = blocks * group / block_groups..blocks * (group + 1) / block_groups;
            arch.dispatch(Tiles { image: &image, padded: &padded, first_row: rows.start, tiles, blocks })
        };
        if pieces > 1 {
            super::each_index(pieces, piece);
        } else {
            piece(0);
        }
    }
    // SAFETY: the tiles cover every pixel of every plane, and each stored its values.
    unsafe { out.set_len(size) };
    out
}

/// The SIMD width the kernel runs at on this machine, in float32 lanes.
pub fn simd_lanes() -> usize {
    Arch::new().dispatch(Lanes)
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

/// Where a piece's padded copy of the input keeps its values: for a run of `rows` output rows,
/// each input plane's rows under them widened to whole vectors, with `left` zero columns before
/// them, `top` rows above and below (the image's, or zeros beyond its edges), and zeros after,
/// so that every live tap of every output vector of the run reads inside its plane.
#[derive(Clone, Copy)]
struct PaddedPlanes {
    lanes: usize,
    /// Vectors per output row (the last may run past the row's end).
    row_vectors: usize,
    top: usize,
    left: usize,
    /// Values per padded row and per padded plane.
    row: usize,
    plane: usize,
}

impl PaddedPlanes {
    fn new(g: &TapGeometry, taps: &[(isize, isize, usize)], lanes: usize, rows: usize) -> Self {
        let reach = |shift: fn(&(isize, isize, usize)) -> isize| taps.iter().map(|t| shift(t).unsigned_abs()).max().unwrap_or(0);
        let (top, left) = (reach(|t| t.0), reach(|t| t.1));
        let row_vectors = g.width.div_ceil(lanes);
        let row = row_vectors * lanes + 2 * left;
        Self { lanes, row_vectors, top, left, row, plane: (rows + 2 * top) * row }
    }

    /// Where the run's first output pixel (its row's column 0) reads under the tap shifted by
    /// (`dy`, `dx`), from a plane's start.
    fn offset(&self, dy: isize, dx: isize) -> usize {
        ((self.top as isize + dy) * self.row as isize + self.left as isize + dx) as usize
    }

    /// Output vector `vector` (row by row, `row_vectors` a row): its row and first column.
    fn vector_at(&self, vector: usize) -> (usize, usize) {
        (vector / self.row_vectors, vector % self.row_vectors * self.lanes)
    }

    /// The padded planes of `image` (`[Cin, H, W]` of `g`) for the run of output rows from
    /// `first_row`: each value written once.
    fn copy(&self, image: &[f32], g: &TapGeometry, first_row: usize) -> Vec<f32> {
        let (h, w) = (g.height, g.width);
        let rows = self.plane / self.row;
        // The image's rows in the copy: padded row r holds input row first_row + r - top.
        let (from, to) = (first_row.saturating_sub(self.top), (first_row + rows - self.top).min(h));
        let size = g.input_channels * self.plane;
        let mut padded = Vec::<f32>::with_capacity(size);
        let plane_start = padded.as_mut_ptr();
        for ci in 0..g.input_channels {
            // SAFETY: plane ci of the allocation; the image's rows between zero runs (above
            // them, the rest of the previous row and this one's left; below them, the rest).
            unsafe {
                let plane = plane_start.add(ci * self.plane);
                let mut written = 0;
                for (y, source) in image[ci * h * w..][from * w..to * w].chunks_exact(w).enumerate() {
                    let at = (from + y + self.top - first_row) * self.row + self.left;
                    plane.add(written).write_bytes(0, at - written);
                    plane.add(at).copy_from_nonoverlapping(source.as_ptr(), w);
                    written = at + w;
                }
                plane.add(written).write_bytes(0, self.plane - written);
            }
        }
        // SAFETY: every plane is written.
        unsafe { padded.set_len(size) };
        padded
    }
}

/// Each output channel's weights as one row, and where in the padded planes each of its values
/// reads from an output vector's place: the weights as stored where every tap is live; otherwise
/// the live taps' weights copied out (`[Cout, Cin, live taps]`).
fn weight_rows<'a>(weight: Weights<'a>, g: &TapGeometry, taps: &[(isize, isize, usize)], layout: &PaddedPlanes) -> (Cow<'a, [f32]>, Vec<usize>) {
    let (cin, cout) = (g.input_channels, g.output_channels);
    let (rows, order) = if taps.len() < g.kernel * g.kernel {
        let rows = (0..cout).flat_map(|co| (0..cin).flat_map(move |ci| taps.iter().map(move |t| weight.at(g, co, ci, t.2)))).collect();
        (Cow::Owned(rows), WeightOrder::Oihw)
    } else {
        (Cow::Borrowed(weight.values), weight.order)
    };
    // With every tap live, `taps[i].2 == i`: the rows' order is the weights' own.
    let read = |ci: usize, tap: usize| ci * layout.plane + layout.offset(taps[tap].0, taps[tap].1);
    let reads = (0..cin * taps.len())
        .map(|i| match order {
            WeightOrder::Oihw => read(i / taps.len(), i % taps.len()),
            WeightOrder::Ohwi => read(i % cin, i / cin),
        })
        .collect();
    (rows, reads)
}

/// One image's convolution as the pieces of work share it.
struct PaddedImage<'a> {
    /// The image's `[Cin, H, W]`.
    input: &'a [f32],
    /// A row per output channel, in the order of `reads`.
    weights: &'a [f32],
    /// Where each weight of a row reads, from an output vector's place in a piece's padded planes.
    reads: &'a [usize],
    g: TapGeometry,
    layout: PaddedPlanes,
    /// The image's `[Cout, H, W]` output.
    out: SharedOut,
    /// Its residual is the image's.
    epilogue: Epilogue<'a>,
}

/// Register tiles `tiles` (each V output vectors, in row order) of blocks `blocks` of C output
/// channels.
struct Tiles<'a> {
    image: &'a PaddedImage<'a>,
    /// The input under the tiles' rows, padded; its first output row.
    padded: &'a [f32],
    first_row: usize,
    tiles: Range<usize>,
    blocks: Range<usize>,
}

impl WithSimd for Tiles<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match register_tile(S::F32_LANES) {
            (8, 3) => self.compute::<S, 8, 3>(simd),
            (4, 3) => self.compute::<S, 4, 3>(simd),
            (2, 4) => self.compute::<S, 2, 4>(simd),
            tile => unreachable!("no register tile {tile:?}"),
        }
    }
}

impl Tiles<'_> {
    /// Tile by tile (its input then stays in cache over the blocks), each block of output
    /// channels' sums over every input channel and tap, then the epilogue, stored.
    #[inline(always)]
    fn compute<S: Simd, const C: usize, const V: usize>(self, simd: S) {
        let PaddedImage { weights, reads, g, layout, .. } = *self.image;
        let padded = self.padded;
        let vectors = g.height * layout.row_vectors;
        let cout = g.output_channels;
        for tile in self.tiles.clone() {
            // The tile's vectors; past the map's last one, repeats of it (summed, not stored).
            let at: [(usize, usize); V] = std::array::from_fn(|v| layout.vector_at((tile * V + v).min(vectors - 1)));
            let bases = at.map(|(y, x)| {
                // SAFETY: output pixel (y, x) reads from this place of each padded plane.
                unsafe { padded.as_ptr().add((y - self.first_row) * layout.row + x) }
            });
            let stored = V.min(vectors - tile * V);
            for block in self.blocks.clone() {
                // Past the last channel, repeats of its row (summed, not stored).
                let rows: [*const f32; C] = std::array::from_fn(|c| weights[(block * C + c).min(cout - 1) * reads.len()..].as_ptr());
                // SAFETY: every live tap of every vector reads inside its padded plane (the
                // layout's borders); each row holds a weight per read.
                let sums = unsafe { tile_sums::<S, C, V>(simd, bases, reads, rows) };
                self.store(simd, &sums, block * C, &at[..stored]);
            }
        }
    }

    /// The tile's sums for output channels `first..first + C` at vectors `at`, with the
    /// epilogue, into the output's planes (channels past `Cout` and pixels past a row's end dropped).
    #[inline(always)]
    fn store<S: Simd, const C: usize, const V: usize>(&self, simd: S, acc: &[[S::f32s; V]; C], first: usize, at: &[(usize, usize)]) {
        let PaddedImage { g, out, epilogue, .. } = *self.image;
        let (w, plane) = (g.width, g.height * g.width);
        for (c, sums) in acc.iter().enumerate().take(g.output_channels.saturating_sub(first)) {
            let channel = first + c;
            let bias = simd.splat_f32s(epilogue.bias.map_or(0.0, |b| b[channel]));
            for (&sum, &(y, x)) in sums.iter().zip(at) {
                let (start, len) = (channel * plane + y * w + x, S::F32_LANES.min(w - x));
                let mut value = simd.add_f32s(sum, bias);
                if let Some(residual) = epilogue.residual {
                    value = simd.add_f32s(value, simd.partial_load_f32s(&residual[start..][..len]));
                }
                if epilogue.relu {
                    value = simd.max_f32s(value, simd.splat_f32s(0.0));
                }
                // SAFETY: these pixels of this plane are this tile's alone.
                simd.partial_store_f32s(unsafe { std::slice::from_raw_parts_mut(out.0.add(start), len) }, value);
            }
        }
    }
}

/// `sums[c][v] = Σ_i rows[c][i] · (the vector at bases[v] + reads[i])`: each input vector loaded
/// once for C channels, each weight broadcast once for V vectors, the sums in registers.
///
/// # Safety
/// Every `bases[v] + reads[i]` starts a vector inside its allocation; each row holds
/// `reads.len()` values.
#[inline(always)]
unsafe fn tile_sums<S: Simd, const C: usize, const V: usize>(
    simd: S,
    bases: [*const f32; V],
    reads: &[usize],
    rows: [*const f32; C],
) -> [[S::f32s; V]; C] {
    let mut sums = [[simd.splat_f32s(0.0); V]; C];
    for (i, &at) in reads.iter().enumerate() {
        // SAFETY: the caller's promise.
        let x: [S::f32s; V] = std::array::from_fn(|v| unsafe { bases[v].add(at).cast::<S::f32s>().read_unaligned() });
        for (sums, row) in sums.iter_mut().zip(rows) {
            let weight = simd.splat_f32s(unsafe { *row.add(i) });
            for (sum, &x) in sums.iter_mut().zip(&x) {
                *sum = simd.mul_add_e_f32s(weight, x, *sum);
            }
        }
    }
    sums
}
