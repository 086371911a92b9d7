//! The DeepLabV3+ decoder pieces: fine-feature projection, ASPP bottleneck, and the shared `final` head.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::config::{RplConfig, released};
use super::convolution::convolve;
use super::layers::{ConvBnRelu, conv};

/// `final`: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv1x1 to class logits.
/// Applied twice per image: to the decoder features (out1) and to them plus the RPL residual (out2).
#[derive(Module, Debug)]
pub struct SegmentationHead {
    pub block1: ConvBnRelu,
    pub block2: ConvBnRelu,
    pub classifier: Conv2d,
}

impl SegmentationHead {
    pub fn new(config: &RplConfig, device: &Device) -> Self {
        let width = config.width(released::ASPP_BRANCH);
        Self {
            block1: ConvBnRelu::new(config.decoder_channels(), width, 3, 1, device),
            block2: ConvBnRelu::new(width, width, 3, 1, device),
            classifier: conv(width, config.num_classes, 1, 1, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        convolve(&self.classifier, self.block2.forward(self.block1.forward(x)))
    }

    pub fn fold_batch_norms(&mut self) {
        self.block1.fold_batch_norm();
        self.block2.fold_batch_norm();
    }
}
