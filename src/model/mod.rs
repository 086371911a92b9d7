//! The RPL network as burn modules, generic over the backend (the `Device` picks it at run time).
//! Architecture facts: DeepLabV3+ on WideResNet-38 A2, output stride 8, plus the RPL residual block.

pub mod aspp;
pub mod config;
pub mod decoder;
pub mod layers;
pub mod network;
pub mod residual_block;
pub mod trunk;

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

pub use config::RplConfig;
pub use network::{RplLogits, RplNetwork, RplTrace};

/// Bilinear resize with `align_corners=True`, as every resize of the reference.
pub fn resize_to(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(true)
        .with_output_size(size);
    interpolate(x, options)
}
