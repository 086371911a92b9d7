//! The ASPPs' image-level pooling: the mean of each plane. burn's adaptive pooling shares its
//! pass out through rayon, which from a frame's thread sleeps and wakes that thread (twice a
//! frame, one per ASPP); here the pass goes to the frame's crew like every other.

use burn::tensor::Tensor;

use super::{FlexValues, each_index, flex_tensor};

/// Input values a piece of work reads at least: a smaller map is averaged on the calling thread.
const VALUES_PER_PIECE: usize = 1 << 15;

/// Each `H·W` plane of `x` (`[N, C, H, W]`, row-major, `shape`) averaged: `[N, C]` row-major.
pub fn plane_means(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let plane = h * w;
    assert_eq!(x.len(), n * c * plane, "input size");
    let planes = n * c;
    let per_piece = VALUES_PER_PIECE.div_ceil(plane.max(1)).min(planes.max(1));
    let mut means = vec![0f32; planes];
    let out = super::SharedOut(means.as_mut_ptr());
    each_index(planes.div_ceil(per_piece), |piece| {
        for p in piece * per_piece..((piece + 1) * per_piece).min(planes) {
            // SAFETY: each plane's mean is written by the one piece holding that plane.
            unsafe { *out.at(p) = mean(&x[p * plane..][..plane]) };
        }
    });
    means
}

/// The mean of `values`: blocks of them summed in f32 by eight running sums (vectorised), the
/// blocks' sums added up in f64, so that a large plane loses no more than a short one.
fn mean(values: &[f32]) -> f32 {
    const BLOCK: usize = 256;
    let total: f64 = values
        .chunks(BLOCK)
        .map(|block| {
            let mut lanes = [0f32; 8];
            let chunks = block.chunks_exact(8);
            let rest: f32 = chunks.remainder().iter().sum();
            for chunk in chunks {
                lanes.iter_mut().zip(chunk).for_each(|(lane, &v)| *lane += v);
            }
            f64::from(lanes.iter().sum::<f32>() + rest)
        })
        .sum();
    (total / values.len() as f64) as f32
}

/// [`plane_means`] of a tensor on flex as `[N, C, 1, 1]`; `None` elsewhere.
pub fn plane_means_on_flex(x: &Tensor<4>) -> Option<Tensor<4>> {
    let shape = x.dims();
    let input = FlexValues::of(x.clone())?;
    let [n, c, _, _] = shape;
    Some(flex_tensor(plane_means(input.values(), shape), [n, c, 1, 1]))
}
