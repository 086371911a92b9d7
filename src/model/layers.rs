//! Small building blocks shared by the trunk, the ASPPs and the decoder.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, Tensor};

use super::convolution::{convolve, convolve_then};
use super::on_gpu_outside_training;

/// Every BatchNorm of the reference has eps 1e-5.
const BN_EPS: f64 = 1e-5;

/// A bias-free convolution with square kernel, equal padding and dilation (the reference's only kind).
pub fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, dilation: usize, device: &Device) -> Conv2d {
    conv_with_bias(cin, cout, kernel, stride, dilation, false, device)
}

pub fn conv_with_bias(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    // "same" padding for odd kernels: (k - 1) / 2 taps, stretched by the dilation.
    let pad = dilation * (kernel - 1) / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_dilation([dilation, dilation])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init(device)
}

pub fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).with_epsilon(BN_EPS).init(device)
}

/// BatchNorm followed by ReLU: the reference's pre-activation `bnX` (keys `bnX.0.*`). One pass
/// over the map on flex ([`crate::cpu::batch_norm_relu`]).
pub fn bn_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if crate::cpu::on_flex_outside_training(&x.device()) {
        let (scale, shift) = scale_and_shift(bn);
        if let Some(y) = crate::cpu::batch_norm_relu::batch_norm_relu_on_flex(&x, scale, shift) {
            return y;
        }
    }
    relu_in_one_pass(batch_norm_forward(bn, x))
}

/// `bn` applied to `x`; at inference as one multiply and one add per value (burn's BatchNorm
/// makes four passes over the map: subtract, divide, multiply, add).
fn batch_norm_forward(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if x.device().is_autodiff() {
        return bn.forward(x);
    }
    let (scale, shift) = scale_and_shift(bn);
    let channels = scale.dims()[0];
    x * scale.reshape([1, channels, 1, 1]) + shift.reshape([1, channels, 1, 1])
}

/// Inference's BatchNorm as `x · scale + shift`, per channel.
fn scale_and_shift(bn: &BatchNorm) -> (Tensor<1>, Tensor<1>) {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    (scale, shift)
}

/// `conv`, then `bn` (unless folded into `conv`), then ReLU.
pub fn conv_bn_relu(conv: &Conv2d, bn: Option<&BatchNorm>, x: Tensor<4>) -> Tensor<4> {
    match bn {
        Some(bn) => bn_relu(bn, convolve(conv, x)),
        None => convolve_then(conv, x, None, true),
    }
}

/// Folds `bn`, which reads `conv`'s output, into `conv` (inference only): each output channel's
/// weights scaled by `gamma / sqrt(var + eps)` and a bias `beta - mean · scale` (plus the
/// convolution's own bias, scaled). Exact up to rounding; the convolution's bias add replaces
/// BatchNorm's four passes over the map.
pub fn fold_batch_norm(conv: &mut Conv2d, bn: &mut Option<BatchNorm>) {
    let Some(bn) = bn.take() else { return };
    let (scale, mut shift) = scale_and_shift(&bn);
    if let Some(bias) = conv.bias.take() {
        shift = shift + bias.val() * scale.clone();
    }
    let cout = scale.dims()[0];
    conv.weight = Param::from_tensor(conv.weight.val() * scale.reshape([cout, 1, 1, 1]));
    conv.bias = Some(Param::from_tensor(shift));
}

/// ReLU as one clamp to [0, the type's largest value] on GPU backends: burn's `relu` (and
/// `clamp_min`) there write a boolean mask (4 bytes a value, twice a float16 activation) and
/// then fill it. burn's CPU backends have a fast `relu` of their own; training keeps its gradient.
pub fn relu_in_one_pass(x: Tensor<4>) -> Tensor<4> {
    if !on_gpu_outside_training(&x.device()) {
        return relu(x);
    }
    // A finite bound (WGSL has no infinite constants): an activation that overflowed to +inf
    // becomes the type's largest value here, where the CPU keeps inf.
    let largest = if x.dtype() == DType::F16 { f64::from(half::f16::MAX) } else { f64::from(f32::MAX) };
    x.clamp(0.0, largest)
}

/// Convolution, BatchNorm, ReLU (keys `.0` conv and `.1` BatchNorm).
#[derive(Module, Debug)]
pub struct ConvBnRelu {
    pub conv: Conv2d,
    /// `None` once folded into `conv` for inference.
    pub bn: Option<BatchNorm>,
}

impl ConvBnRelu {
    pub fn new(cin: usize, cout: usize, kernel: usize, dilation: usize, device: &Device) -> Self {
        Self { conv: conv(cin, cout, kernel, 1, dilation, device), bn: Some(batch_norm(cout, device)) }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bn_relu(&self.conv, self.bn.as_ref(), x)
    }

    pub fn fold_batch_norm(&mut self) {
        fold_batch_norm(&mut self.conv, &mut self.bn);
    }
}
