//! The RPL network as burn modules, generic over the backend (the `Device` picks it at run time).
//! Architecture facts: DeepLabV3+ on WideResNet-38 A2, output stride 8, plus the RPL residual block.

pub mod aspp;
pub mod config;
pub mod convolution;
pub mod decoder;
pub mod layers;
pub mod network;
pub mod residual_block;
pub mod trunk;

use burn::tensor::{Tensor, TensorData};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

pub use config::RplConfig;
pub use network::{RplLogits, RplNetwork, RplTrace, Stage};

/// Bilinear resize with `align_corners=True`, as every resize of the reference.
pub fn resize_to(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    if x.device().is_autodiff() {
        // Training: burn's GPU and ndarray backends have no backward for bilinear interpolation;
        // every backend has one for matrix products.
        return resize_by_matmul(x, size);
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(true)
        .with_output_size(size);
    interpolate(x, options)
}

/// Bilinear weights with `align_corners=True` as a `[to, from]` row-major matrix: output `i`
/// samples input `i * (from - 1) / (to - 1)` from its two neighbours.
pub fn interpolation_matrix(from: usize, to: usize) -> Vec<f32> {
    let scale = if to > 1 { (from - 1) as f32 / (to - 1) as f32 } else { 0.0 };
    let mut weights = vec![0f32; to * from];
    for i in 0..to {
        let source = i as f32 * scale;
        let lower = (source.floor() as usize).min(from - 1);
        let upper = (lower + 1).min(from - 1);
        let t = source - lower as f32;
        weights[i * from + lower] += 1.0 - t;
        weights[i * from + upper] += t;
    }
    weights
}

/// The same resize as [`resize_to`], as `A_h · x · A_wᵀ` (differentiable on every backend).
pub fn resize_by_matmul(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [out_h, out_w] = size;
    let device = x.device();
    let a_w = Tensor::<2>::from_data(TensorData::new(interpolation_matrix(w, out_w), [out_w, w]), &device);
    let a_h = Tensor::<2>::from_data(TensorData::new(interpolation_matrix(h, out_h), [out_h, h]), &device);
    let rows = x.reshape([n * c * h, w]).matmul(a_w.transpose()).reshape([n * c, h, out_w]);
    let columns = a_h.unsqueeze::<3>().expand([n * c, out_h, h]).matmul(rows);
    columns.reshape([n, c, out_h, out_w])
}
