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

use std::ops::Range;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

pub use config::RplConfig;
pub use network::{DecoderLogits, RplLogits, RplNetwork, RplTrace, Stage};

/// Inference on a GPU backend: where the model swaps a burn op for a cheaper form that burn's
/// CPU backends do not need (they have their own) and training must not take (its gradient).
pub(crate) fn on_gpu_outside_training(device: &Device) -> bool {
    #[cfg(feature = "wgpu")]
    {
        // Only cubecl devices (wgpu, WebGPU here: burn's cubecl CPU runtime is not built) report
        // an identity; flex and ndarray do not.
        !device.is_autodiff() && device.identity().is_some()
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        false
    }
}

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
    if let Some(resized) = crate::cpu::bilinear::resize_rows_on_flex(&x, size, 0..size[0]) {
        return resized;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(true)
        .with_output_size(size);
    interpolate(x, options)
}

/// Output positions `outputs` of an `align_corners=True` bilinear resize from `from` to `to`:
/// output `i` samples input `i * (from - 1) / (to - 1)`, from its two neighbours (the upper
/// one's weight last).
pub(crate) fn bilinear_taps(from: usize, to: usize, outputs: Range<usize>) -> impl Iterator<Item = (usize, usize, f32)> {
    let scale = if to > 1 { (from - 1) as f32 / (to - 1) as f32 } else { 0.0 };
    outputs.map(move |i| {
        let source = i as f32 * scale;
        let lower = (source.floor() as usize).min(from - 1);
        let upper = (lower + 1).min(from - 1);
        (lower, upper, source - lower as f32)
    })
}

/// Bilinear weights with `align_corners=True` as a `[to, from]` row-major matrix.
pub fn interpolation_matrix(from: usize, to: usize) -> Vec<f32> {
    let mut weights = vec![0f32; to * from];
    for (i, (lower, upper, t)) in bilinear_taps(from, to, 0..to).enumerate() {
        weights[i * from + lower] += 1.0 - t;
        weights[i * from + upper] += t;
    }
    weights
}

/// Rows `rows` of `resize_to(x, size)`, each output value blended from the two source rows
/// and columns it reads. Work and memory follow the rows asked for, so a large output can be
/// made band by band, each band fitting one GPU buffer.
pub fn resize_rows(x: Tensor<4>, size: [usize; 2], rows: Range<usize>) -> Tensor<4> {
    if let Some(resized) = crate::cpu::bilinear::resize_rows_on_flex(&x, size, rows.clone()) {
        return resized;
    }
    let [_, _, h, w] = x.dims();
    let x = blend(x, 2, &bilinear_taps(h, size[0], rows).collect::<Vec<_>>());
    if w == size[1] { x } else { blend(x, 3, &bilinear_taps(w, size[1], 0..size[1]).collect::<Vec<_>>()) }
}

/// `lower * (1 - t) + upper * t` along `dim`, one tap per output index.
fn blend(x: Tensor<4>, dim: usize, taps: &[(usize, usize, f32)]) -> Tensor<4> {
    let device = x.device();
    let n = taps.len();
    let index = |pick: fn(&(usize, usize, f32)) -> usize| {
        let values: Vec<i64> = taps.iter().map(|tap| pick(tap) as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(values, [n]), &device)
    };
    let (lower, upper) = (index(|tap| tap.0), index(|tap| tap.1));
    let mut shape = [1; 4];
    shape[dim] = n;
    let upper_weight = Tensor::<4>::from_data(TensorData::new(taps.iter().map(|tap| tap.2).collect(), shape), &device);
    let lower_weight = upper_weight.clone().neg().add_scalar(1.0);
    x.clone().select(dim, lower) * lower_weight + x.select(dim, upper) * upper_weight
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
