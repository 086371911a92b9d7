//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016):
//! a 2x2 tile of outputs from a 4x4 tile of inputs with 16 multiplications per pair of input and
//! output channels where the taps take 36, so the matrix products do 4/9 of the arithmetic of
//! [`super::tap_products`]. The weights and each tile of the input are carried into the
//! transform domain (sums, and halves for the weights), where each of the 16 transform points is
//! one matrix product over the input channels; the output transform (sums again) turns a tile's
//! 16 points back into its 2x2 outputs. A kernel dilated by `d` is the same kernel on every
//! `d`-th pixel: a tile's outputs, and its inputs, lie `d` apart.
//!
//! The transforms' coefficients are 0, ±1 and ±1/2: in float32 the results differ from the taps'
//! by rounding only (tested against burn's convolution in `tests/cpu_kernels.rs`).

use std::ops::Range;

use super::{SharedOut, each_chunk_mut};
use super::tap_products::{BAND_VALUES, Band, Epilogue, MIN_BAND_PIXELS, TapGeometry, Weights, each_piece, parallelism, product, share_out, workers_for};

/// The input transform `Bᵀ`: a tile's 4 inputs along one axis to its 4 transform points.
const INPUT_TRANSFORM: [[f32; 4]; 4] = [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
/// The weight transform `G`: 3 taps along one axis to 4 transform points.
const WEIGHT_TRANSFORM: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
/// The output transform `Aᵀ`: 4 transform points along one axis to the tile's 2 outputs.
const OUTPUT_TRANSFORM: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
/// Transform points per tile (4x4).
const POINTS: usize = 16;
/// Values between the rows the matrix products read (transformed weights, transformed inputs)
/// beyond the row itself: rows a power of two apart would fall in the same few cache sets.
const ROW_GAP: usize = 16;

/// Values from one transformed weight row (`Cin` of them) to the next.
fn weight_row(cin: usize) -> usize {
    cin + ROW_GAP
}

/// Where Winograd's products beat one product per tap (measured on a Zen 5, 2 threads, against
/// [`super::tap_products::TapStrategy::PerTap`]: 128->128 on 64x128 6.4 -> 4.7 ms, 304->256 on
/// 64x128 31 -> 17 ms, 256->256 at rate 4 on 32x64 5.7 -> 4.8 ms): 3x3 stride-1 layers with at
/// least 128 input and output channels on maps of 1024 pixels or more, every tap reading the map
/// and few tiles hanging off it. On smaller maps the weights' transform and the narrower
/// products cost what the arithmetic saves (512->512 on 16x32 5.9 -> 5.7 ms); where the
/// transformed weights outgrow the cache, more (1024->1024 at rate 2 on 32x64: 125 -> 200 ms).
pub fn gains_on(g: &TapGeometry) -> bool {
    const MIN_CHANNELS: usize = 128;
    const MIN_PIXELS: usize = 1024;
    const MAX_WEIGHTS: usize = 512 * 512;
    let TapGeometry { input_channels: cin, output_channels: cout, height: h, width: w, kernel, stride, dilation, .. } = *g;
    let tiles = Tiling::new(h, w, dilation.max(1));
    let covered = 4 * tiles.rows.len() * tiles.per_row();
    kernel == 3
        && stride == 1
        && cin.min(cout) >= MIN_CHANNELS
        && cin * cout <= MAX_WEIGHTS
        && h * w >= MIN_PIXELS
        && g.live_taps().len() == 9
        && 10 * h * w >= 9 * covered
}

/// `x` (`[N, Cin, H, W]`, row-major) convolved with the 3x3 `weight` at stride 1 with "same"
/// padding, then `epilogue`: `[N, Cout, H, W]`, row-major.
pub fn convolve_winograd(x: &[f32], weight: Weights, g: TapGeometry, epilogue: Epilogue) -> Vec<f32> {
    let TapGeometry { batch, input_channels: cin, height: h, width: w, output_channels: cout, kernel, dilation, stride } = g;
    assert!(kernel == 3 && stride == 1 && dilation >= 1, "a 3x3 kernel at stride 1");
    assert_eq!(x.len(), batch * cin * h * w, "input size");
    assert_eq!(weight.values.len(), cout * cin * 9, "weight size");
    assert!(epilogue.bias.is_none_or(|b| b.len() == cout), "bias size");
    assert!(epilogue.residual.is_none_or(|r| r.len() == batch * cout * h * w), "residual size");
    let plane = h * w;
    let tiles = Tiling::new(h, w, dilation);
    let weights = transform_weights(weight, &g);
    let workers = workers_for([cout, plane, cin, 4]);
    // A band's transformed outputs (4 points per tile kept) match the taps' band in size.
    let work = share_out(tiles.rows.len(), 4 * tiles.per_row(), BAND_VALUES / cout.max(1), MIN_BAND_PIXELS, workers, cout);
    let size = batch * cout * plane;
    let mut out = Vec::<f32>::with_capacity(size);
    for b in 0..batch {
        let image = &x[b * cin * plane..][..cin * plane];
        let convolution = ImageConvolution {
            input: tiles.split_rows(image, cin),
            weights: &weights,
            tiles: &tiles,
            g,
            // SAFETY: image b's output lies inside the allocation.
            out: SharedOut(unsafe { out.as_mut_ptr().add(b * cout * plane) }),
            epilogue: Epilogue { residual: epilogue.residual.map(|r| &r[b * cout * plane..][..cout * plane]), ..epilogue },
        };
        // SAFETY: each piece writes only its own tile rows' output rows of its own planes.
        each_piece(&work, workers, |piece| unsafe { convolution.convolve_piece(piece) });
    }
    // SAFETY: every output pixel lies in exactly one tile, and every piece wrote its tiles' pixels.
    unsafe { out.set_len(size) };
    out
}

/// The weights in the transform domain, `[16][Cout][Cin + ROW_GAP]` (point `4i + j`: row point
/// `i`, column point `j`; each point's matrix one block): `G g Gᵀ` for each 3x3 kernel `g`,
/// computed a row of `Cin` values at a time from the taps laid out `[tap][Cout][Cin]`, so that
/// every step is a sum of whole rows.
fn transform_weights(weight: Weights, g: &TapGeometry) -> Vec<f32> {
    let (cout, cin) = (g.output_channels, g.input_channels);
    let mut taps = vec![0f32; 9 * cout * cin];
    each_chunk_mut(&mut taps, cout * cin, |tap, values| {
        for (co, row) in values.chunks_exact_mut(cin).enumerate() {
            row.iter_mut().enumerate().for_each(|(ci, value)| *value = weight.at(g, co, ci, tap));
        }
    });
    let row = weight_row(cin);
    let mut transformed = vec![0f32; POINTS * cout * row];
    each_chunk_mut(&mut transformed, cout * row, |point, block| {
        let (i, j) = (point / 4, point % 4);
        for (co, values) in block.chunks_exact_mut(row).enumerate() {
            let values = &mut values[..cin];
            for (ky, &row_coefficient) in WEIGHT_TRANSFORM[i].iter().enumerate() {
                for (kx, &column_coefficient) in WEIGHT_TRANSFORM[j].iter().enumerate() {
                    let coefficient = row_coefficient * column_coefficient;
                    if coefficient != 0.0 {
                        let tap = &taps[((3 * ky + kx) * cout + co) * cin..][..cin];
                        values.iter_mut().zip(tap).for_each(|(v, &g)| *v += coefficient * g);
                    }
                }
            }
        }
    });
    transformed
}

/// Where the tiles lie. With dilation `d`, a tile's outputs are rows `y0` and `y0 + d` by
/// columns `x0` and `x0 + d`, for `y0` (and `x0`) of the form `2d·q + r`, `r < d`: every pixel
/// then lies in exactly one tile. Along a row, tiles go by `r`, then `q`, so that a tile's input
/// columns `x0 - d + b·d` (b = 0..3) are, for all tiles of one `r`, four runs of neighbouring
/// values in a row split by phase: [`Tiling::split_rows`].
struct Tiling {
    dilation: usize,
    height: usize,
    width: usize,
    /// `y0` of each row of tiles, in order.
    rows: Vec<usize>,
    /// Tiles per residue `r` along a row (`q` = 0..per_residue).
    per_residue: usize,
}

impl Tiling {
    fn new(height: usize, width: usize, dilation: usize) -> Self {
        let period = 2 * dilation;
        let rows = (0..height).filter(|y| y % period < dilation).collect();
        Self { dilation, height, width, rows, per_residue: width.div_ceil(period) }
    }

    /// Tiles in a row of tiles.
    fn per_row(&self) -> usize {
        self.dilation * self.per_residue
    }

    /// Values of one split row: `[phase 0, 1][r][q = 0..=per_residue]`.
    fn split_len(&self) -> usize {
        2 * self.dilation * (self.per_residue + 1)
    }

    /// Each input row split by phase, `[Cin][H][phase][r][q]`: value `(p, r, q)` is column
    /// `2d·q + p·d + r - d` (zero off the map), so tile `(r, q)`'s input columns are `(0, r, q)`,
    /// `(1, r, q)`, `(0, r, q + 1)` and `(1, r, q + 1)`.
    fn split_rows(&self, image: &[f32], cin: usize) -> Vec<f32> {
        let (d, q_len, len) = (self.dilation, self.per_residue + 1, self.split_len());
        let mut split = vec![0f32; cin * self.height * len];
        each_chunk_mut(&mut split, len * self.height, |c, rows| {
            for (y, row) in rows.chunks_exact_mut(len).enumerate() {
                let input = &image[(c * self.height + y) * self.width..][..self.width];
                for (run, values) in row.chunks_exact_mut(q_len).enumerate() {
                    let (phase, r) = (run / d, run % d);
                    for (q, value) in values.iter_mut().enumerate() {
                        let x = (2 * d * q + phase * d + r).wrapping_sub(d);
                        *value = input.get(x).copied().unwrap_or(0.0);
                    }
                }
            }
        });
        split
    }
}

/// One image's convolution as the pieces of work share it.
struct ImageConvolution<'a> {
    /// The image's rows split by [`Tiling::split_rows`].
    input: Vec<f32>,
    /// [`transform_weights`].
    weights: &'a [f32],
    tiles: &'a Tiling,
    g: TapGeometry,
    /// The image's `[Cout, H, W]` output.
    out: SharedOut,
    /// Its residual is the image's.
    epilogue: Epilogue<'a>,
}

impl ImageConvolution<'_> {
    /// The tiles of rows of tiles `piece.rows`, output planes `piece.channels`: for each row point
    /// `i`, the input transform of every tile and input channel at the four column points, then
    /// a product with the transformed weights per point, each added into the tiles' four outputs
    /// with the output transform's coefficient; last, the outputs with the epilogue to `out`.
    ///
    /// # Safety
    /// `out` points at the image's `[Cout, H, W]` output, and no other thread writes these tile
    /// rows' output rows of these planes meanwhile.
    unsafe fn convolve_piece(&self, piece: &Band) {
        let Band { rows, channels, split } = piece;
        let cin = self.g.input_channels;
        let (count, tiles) = (channels.len(), rows.len() * self.tiles.per_row());
        // Transformed inputs `[column point j][Cin][tile]` for one row point at a time, rows
        // `stride` apart.
        let stride = tiles + ROW_GAP;
        let mut points = vec![0f32; 4 * cin * stride];
        let mut sums = vec![0f32; count * tiles];
        // The tiles' outputs `[u][v][channel][tile]` as the points add up.
        let mut outputs = vec![0f32; 4 * count * tiles];
        let parallelism = if *split { parallelism(count * tiles * cin) } else { gemm::Parallelism::None };
        let row = weight_row(cin);
        for i in 0..4 {
            self.transform_inputs(i, rows, &mut points, stride);
            for j in 0..4 {
                let point = 4 * i + j;
                // SAFETY: dst: `count` rows of `tiles`; lhs: the transformed weights of point
                // `point` for output channels `channels`, rows Cin + ROW_GAP apart; rhs:
                // Cin rows of `tiles` transformed inputs, `stride` apart.
                unsafe {
                    let lhs = (self.weights.as_ptr().add((point * self.g.output_channels + channels.start) * row), row, 1);
                    product((sums.as_mut_ptr(), tiles), false, lhs, (points[j * cin * stride..].as_ptr(), stride), [count, tiles, cin], parallelism);
                }
                for (u, row_output) in OUTPUT_TRANSFORM.iter().enumerate() {
                    for (v, column_output) in OUTPUT_TRANSFORM.iter().enumerate() {
                        let coefficient = row_output[i] * column_output[j];
                        if coefficient != 0.0 {
                            let output = &mut outputs[(2 * u + v) * count * tiles..][..count * tiles];
                            output.iter_mut().zip(&sums).for_each(|(o, s)| *o += coefficient * s);
                        }
                    }
                }
            }
        }
        // SAFETY: the caller's promise.
        unsafe { self.write_outputs(piece, &outputs) };
    }

    /// Row point `i` of the input transform of the tiles of rows of tiles `rows`, at the four
    /// column points: `points[j][ci][tile]`, rows `stride` apart.
    fn transform_inputs(&self, i: usize, rows: &Range<usize>, points: &mut [f32], stride: usize) {
        let TapGeometry { input_channels: cin, height: h, .. } = self.g;
        let (d, per_residue, per_row, split_len) = (self.tiles.dilation, self.tiles.per_residue, self.tiles.per_row(), self.tiles.split_len());
        let q_len = per_residue + 1;
        let mut combined = vec![0f32; split_len];
        for ci in 0..cin {
            for (k, &y0) in self.tiles.rows[rows.clone()].iter().enumerate() {
                // The tile row's four input rows (y0 - d + a·d) combined by row point i.
                combined.fill(0.0);
                for (a, &coefficient) in INPUT_TRANSFORM[i].iter().enumerate() {
                    let y = (y0 + a * d).wrapping_sub(d);
                    if coefficient != 0.0 && y < h {
                        let row = &self.input[(ci * h + y) * split_len..][..split_len];
                        combined.iter_mut().zip(row).for_each(|(c, v)| *c += coefficient * v);
                    }
                }
                for r in 0..d {
                    let even = &combined[r * q_len..][..q_len];
                    let odd = &combined[(d + r) * q_len..][..q_len];
                    let at = k * per_row + r * per_residue;
                    let [p0, p1, p2, p3] = [0, 1, 2, 3].map(|j| (j * cin + ci) * stride + at);
                    for q in 0..per_residue {
                        points[p0 + q] = even[q] - even[q + 1];
                        points[p1 + q] = odd[q] + even[q + 1];
                        points[p2 + q] = even[q + 1] - odd[q];
                        points[p3 + q] = odd[q] - odd[q + 1];
                    }
                }
            }
        }
    }

    /// The piece's tile outputs (`[u][v][channel][tile]`) back in place, with the epilogue: each
    /// output row of a tile row gathered from its tiles (columns 2d·q + v·d + r), then biased,
    /// added to, clipped.
    ///
    /// # Safety
    /// As for [`Self::convolve_piece`].
    unsafe fn write_outputs(&self, piece: &Band, outputs: &[f32]) {
        let TapGeometry { height: h, width: w, .. } = self.g;
        let (d, per_residue, per_row) = (self.tiles.dilation, self.tiles.per_residue, self.tiles.per_row());
        let (count, tiles) = (piece.channels.len(), piece.rows.len() * per_row);
        let Epilogue { bias, residual, relu } = self.epilogue;
        let plane = h * w;
        let mut row = vec![0f32; 2 * d * per_residue];
        for (n, c) in piece.channels.clone().enumerate() {
            let bias = bias.map_or(0.0, |b| b[c]);
            for (k, &y0) in self.tiles.rows[piece.rows.clone()].iter().enumerate() {
                for u in (0..2).filter(|u| y0 + u * d < h) {
                    let y = y0 + u * d;
                    for v in 0..2 {
                        for r in 0..d {
                            let from = &outputs[((2 * u + v) * count + n) * tiles + k * per_row + r * per_residue..][..per_residue];
                            for (q, value) in from.iter().enumerate() {
                                row[2 * d * q + v * d + r] = *value;
                            }
                        }
                    }
                    // SAFETY: row y of plane c, which only this piece writes.
                    let out = unsafe { std::slice::from_raw_parts_mut(self.out.0.add(c * plane + y * w), w) };
                    let values = out.iter_mut().zip(&row);
                    match residual {
                        Some(residual) => {
                            let residual = &residual[c * plane + y * w..][..w];
                            values.zip(residual).for_each(|((o, &s), &r)| *o = finish(s + bias + r, relu));
                        }
                        None => values.for_each(|(o, &s)| *o = finish(s + bias, relu)),
                    }
                }
            }
        }
    }
}

fn finish(value: f32, relu: bool) -> f32 {
    if relu { value.max(0.0) } else { value }
}
