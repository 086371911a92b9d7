//! The trunk's two max-pools (3x3, stride 2, padding 1) in one pass per plane: each output row
//! takes the largest of its three source rows, then of three neighbouring columns. burn's CPU
//! pooling works out every window's indices one value at a time.

use burn::tensor::Tensor;

use super::{FlexValues, each_chunk_mut, flex_tensor};

/// The output side of a 3x3, stride-2, padding-1 pool: `ceil(n / 2)`.
fn pooled(n: usize) -> usize {
    n.div_ceil(2)
}

/// The input positions output `o` reads: `2o - 1 ..= 2o + 1`, inside `0..n` (the padding never
/// wins a max).
fn window(o: usize, n: usize) -> std::ops::RangeInclusive<usize> {
    (2 * o).saturating_sub(1)..=(2 * o + 1).min(n - 1)
}

/// `x` (`[N, C, H, W]`, row-major, `shape`) max-pooled: `[N, C, ceil(H/2), ceil(W/2)]`.
pub fn max_pool_3x3_stride_2(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(x.len(), n * c * h * w, "input size");
    let (out_h, out_w) = (pooled(h), pooled(w));
    let mut out = vec![0f32; n * c * out_h * out_w];
    each_chunk_mut(&mut out, out_h * out_w, |i, out_plane| {
        let plane = &x[i * h * w..][..h * w];
        let mut rows_max = vec![0f32; w];
        for (y, out_row) in out_plane.chunks_exact_mut(out_w).enumerate() {
            let mut rows = window(y, h).map(|r| &plane[r * w..][..w]);
            rows_max.copy_from_slice(rows.next().expect("a window holds its centre row"));
            for row in rows {
                rows_max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
            }
            for (column, o) in out_row.iter_mut().enumerate() {
                *o = rows_max[window(column, w)].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            }
        }
    });
    out
}

/// [`max_pool_3x3_stride_2`] of a tensor on flex; `None` elsewhere.
pub fn max_pool_3x3_stride_2_on_flex(x: &Tensor<4>) -> Option<Tensor<4>> {
    let shape = x.dims();
    let input = FlexValues::of(x.clone())?;
    let [n, c, h, w] = shape;
    Some(flex_tensor(max_pool_3x3_stride_2(input.values(), shape), [n, c, pooled(h), pooled(w)]))
}
