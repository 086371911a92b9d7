//! Inference's BatchNorm then ReLU, `max(x · scale + shift, 0)` per channel, in one pass over
//! the map (burn's ops make three, each writing a new map): the trunk's pre-activations.

use burn::tensor::Tensor;

use super::{FlexValues, each_chunk_mut, flex_tensor};

/// `x` (`[N, C, H, W]`, row-major) with channel c mapped to `max(x · scale[c] + shift[c], 0)`.
pub fn batch_norm_relu(x: &[f32], shape: [usize; 4], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(x.len(), n * c * h * w, "input size");
    assert!(scale.len() == c && shift.len() == c, "one scale and shift per channel");
    let plane = h * w;
    let mut out = vec![0f32; x.len()];
    each_chunk_mut(&mut out, plane, |i, out_plane| {
        let (s, b) = (scale[i % c], shift[i % c]);
        for (o, &v) in out_plane.iter_mut().zip(&x[i * plane..][..plane]) {
            *o = (v * s + b).max(0.0);
        }
    });
    out
}

/// [`batch_norm_relu`] of a tensor on flex; `None` elsewhere.
pub fn batch_norm_relu_on_flex(x: &Tensor<4>, scale: Tensor<1>, shift: Tensor<1>) -> Option<Tensor<4>> {
    let shape = x.dims();
    let input = FlexValues::of(x.clone())?;
    let (scale, shift) = (FlexValues::of(scale)?, FlexValues::of(shift)?);
    Some(flex_tensor(batch_norm_relu(input.values(), shape, scale.values(), shift.values()), shape))
}
