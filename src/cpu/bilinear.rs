//! Rows of an `align_corners=True` bilinear resize: the decoder's and the residual block's
//! upsampling, and the logits' to the image (a band of output rows at a time). burn's path for
//! bands gathers source rows and columns with index tensors (about 3x slower than this on flex),
//! its interpolation works out each value's sources one at a time; here each output row is
//! blended from its two source rows, then each value from two columns, in the same order and
//! arithmetic as the bands on other backends.

use std::ops::Range;

use burn::tensor::Tensor;

use super::{FlexValues, each_chunk_mut, flex_tensor};
use crate::model::bilinear_taps;

/// Rows `rows` of `x` (`[N, C, H, W]`, row-major, `shape`) resized to `size`:
/// `[N, C, rows.len(), size[1]]`, row-major.
pub fn resize_rows(x: &[f32], shape: [usize; 4], size: [usize; 2], rows: Range<usize>) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(x.len(), n * c * h * w, "input size");
    let row_taps: Vec<_> = bilinear_taps(h, size[0], rows).collect();
    let column_taps: Vec<_> = bilinear_taps(w, size[1], 0..size[1]).collect();
    let out_plane = row_taps.len() * size[1];
    let mut out = vec![0f32; n * c * out_plane];
    each_chunk_mut(&mut out, out_plane, |i, out| {
        let plane = &x[i * h * w..][..h * w];
        let mut blended_row = vec![0f32; w];
        for (&(lower, upper, t), out_row) in row_taps.iter().zip(out.chunks_exact_mut(size[1])) {
            let (above, below) = (&plane[lower * w..][..w], &plane[upper * w..][..w]);
            let keep = 1.0 - t;
            for ((b, &a), &u) in blended_row.iter_mut().zip(above).zip(below) {
                *b = a * keep + u * t;
            }
            for (o, &(left, right, s)) in out_row.iter_mut().zip(&column_taps) {
                *o = blended_row[left] * (1.0 - s) + blended_row[right] * s;
            }
        }
    });
    out
}

/// [`resize_rows`] of a tensor on flex; `None` elsewhere.
pub fn resize_rows_on_flex(x: &Tensor<4>, size: [usize; 2], rows: Range<usize>) -> Option<Tensor<4>> {
    let shape = x.dims();
    let input = FlexValues::of(x.clone())?;
    let band = rows.len();
    Some(flex_tensor(resize_rows(input.values(), shape, size, rows), [shape[0], shape[1], band, size[1]]))
}
