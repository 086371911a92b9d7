//! The RPL residual block: a second ASPP whose output is added to the decoder's features.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::aspp::Aspp;
use super::config::{RplConfig, released};
use super::convolution::convolve;
use super::layers::{conv, conv_with_bias};
use super::resize_to;

/// Learns a residual pattern on the decoder features that pushes outliers' logits down,
/// while the closed-set network it sits beside stays frozen.
#[derive(Module, Debug)]
pub struct ResidualAnomalyBlock {
    pub atten_aspp: Aspp,
    /// 1x1, ASPP output -> ASPP branch width.
    pub bot_atten_aspp: Conv2d,
    /// 1x1, to the decoder's width, so the residual adds to its features.
    pub atten_aspp_final: Conv2d,
    /// 1x1 with bias: CoroCL's projection, used only in training; kept so checkpoints load strictly.
    pub proj_head: Conv2d,
}

impl ResidualAnomalyBlock {
    pub fn new(config: &RplConfig, device: &Device) -> Self {
        let branch = config.width(released::ASPP_BRANCH);
        Self {
            atten_aspp: Aspp::new(config, device),
            bot_atten_aspp: conv(config.aspp_channels(), branch, 1, 1, 1, device),
            atten_aspp_final: conv(branch, config.decoder_channels(), 1, 1, 1, device),
            proj_head: conv_with_bias(branch, config.decoder_channels(), 1, 1, 1, true, device),
        }
    }

    /// The residual at the fine features' resolution `size`, from `mod7`'s output.
    pub fn forward(&self, x7: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        let bottleneck = convolve(&self.bot_atten_aspp, self.atten_aspp.forward(x7));
        convolve(&self.atten_aspp_final, resize_to(bottleneck, size))
    }

    /// The residual, and `proj_head`'s embeddings of the bottleneck (CoroCL's input, training only).
    pub fn forward_with_projection(&self, x7: Tensor<4>, size: [usize; 2]) -> (Tensor<4>, Tensor<4>) {
        let bottleneck = convolve(&self.bot_atten_aspp, self.atten_aspp.forward(x7));
        let projection = convolve(&self.proj_head, bottleneck.clone());
        (convolve(&self.atten_aspp_final, resize_to(bottleneck, size)), projection)
    }
}
