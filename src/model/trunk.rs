//! The WideResNet-38 (A2) trunk: `mod1` to `mod7` with the two max-pools, output stride 8.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::config::{RplConfig, released};
use super::convolution::{convolve, convolve_then};
use super::layers::{batch_norm, bn_relu, conv, conv_bn_relu, fold_batch_norm};

/// Pre-activation residual block: two 3x3 convolutions, or a 1x1-3x3-1x1 bottleneck.
#[derive(Module, Debug)]
pub struct IdentityResidualBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    /// `None` once folded into `conv1` for inference.
    pub bn2: Option<BatchNorm>,
    pub conv2: Conv2d,
    /// Present in bottleneck blocks only (with `conv3`), until folded into `conv2`.
    pub bn3: Option<BatchNorm>,
    pub conv3: Option<Conv2d>,
    /// 1x1 projection of the shortcut, where the stride or the channel count changes.
    pub proj_conv: Option<Conv2d>,
}

impl IdentityResidualBlock {
    /// `channels` has two entries for a two-conv block, three for a bottleneck.
    pub fn new(cin: usize, channels: &[usize], stride: usize, dilation: usize, device: &Device) -> Self {
        let cout = *channels.last().expect("a block has output channels");
        let bottleneck = channels.len() == 3;
        let (conv1, conv2) = if bottleneck {
            (conv(cin, channels[0], 1, stride, 1, device), conv(channels[0], channels[1], 3, 1, dilation, device))
        } else {
            (conv(cin, channels[0], 3, stride, dilation, device), conv(channels[0], channels[1], 3, 1, dilation, device))
        };
        let needs_projection = stride != 1 || cin != cout;
        Self {
            bn1: batch_norm(cin, device),
            conv1,
            bn2: Some(batch_norm(channels[0], device)),
            conv2,
            bn3: bottleneck.then(|| batch_norm(channels[1], device)),
            conv3: bottleneck.then(|| conv(channels[1], channels[2], 1, 1, 1, device)),
            proj_conv: needs_projection.then(|| conv(cin, cout, 1, stride, 1, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = bn_relu(&self.bn1, x.clone());
        let shortcut = match &self.proj_conv {
            Some(proj) => convolve(proj, a.clone()),
            None => x,
        };
        let hidden = conv_bn_relu(&self.conv1, self.bn2.as_ref(), a);
        // The last convolution adds the shortcut (in its kernel, on the CPU).
        match &self.conv3 {
            Some(conv3) => convolve_then(conv3, conv_bn_relu(&self.conv2, self.bn3.as_ref(), hidden), Some(shortcut), false),
            None => convolve_then(&self.conv2, hidden, Some(shortcut), false),
        }
    }

    /// `bn2` into `conv1` and `bn3` into `conv2` (`bn1` reads the block's input, no convolution's).
    pub fn fold_batch_norms(&mut self) {
        fold_batch_norm(&mut self.conv1, &mut self.bn2);
        fold_batch_norm(&mut self.conv2, &mut self.bn3);
    }
}

/// One `modN` of the trunk: blocks `block1..blockN`, the first one changing stride or width.
#[derive(Module, Debug)]
pub struct ResidualStage {
    pub blocks: Vec<IdentityResidualBlock>,
}

impl ResidualStage {
    fn new(cin: usize, spec: &StageSpec, config: &RplConfig, device: &Device) -> Self {
        let channels: Vec<usize> = spec.channels.iter().map(|&c| config.width(c)).collect();
        let cout = *channels.last().unwrap();
        let blocks = (0..spec.blocks)
            .map(|i| {
                let (block_in, stride) = if i == 0 { (cin, spec.first_stride) } else { (cout, 1) };
                IdentityResidualBlock::new(block_in, &channels, stride, spec.dilation, device)
            })
            .collect();
        Self { blocks }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

/// What one stage of the released trunk looks like.
struct StageSpec {
    blocks: usize,
    channels: &'static [usize],
    first_stride: usize,
    dilation: usize,
}

/// mod2..mod7 of WideResNet-38 A2 as the RPL code builds it for output stride 8.
const STAGES: [StageSpec; 6] = [
    StageSpec { blocks: 3, channels: &[128, 128], first_stride: 1, dilation: 1 },
    StageSpec { blocks: 3, channels: &[256, 256], first_stride: 1, dilation: 1 },
    StageSpec { blocks: 6, channels: &[512, 512], first_stride: 2, dilation: 1 },
    StageSpec { blocks: 3, channels: &[512, 1024], first_stride: 1, dilation: 2 },
    StageSpec { blocks: 1, channels: &[512, 1024, 2048], first_stride: 1, dilation: 4 },
    StageSpec { blocks: 1, channels: &[1024, 2048, released::TRUNK_OUT], first_stride: 1, dilation: 4 },
];

/// The trunk's outputs that the rest of the network reads.
pub struct TrunkFeatures {
    /// `mod1` output (full resolution), kept only for tracing.
    pub mod1: Option<Tensor<4>>,
    /// `mod2` output at H/2: the decoder's fine features.
    pub m2: Tensor<4>,
    /// `mod7` output at H/8: the input of both ASPPs.
    pub mod7: Tensor<4>,
}

#[derive(Module, Debug)]
pub struct WiderResNet38 {
    /// `mod1.conv1`: 3x3 convolution from RGB.
    pub mod1: Conv2d,
    /// mod2 to mod7, in order.
    pub stages: Vec<ResidualStage>,
}

impl WiderResNet38 {
    pub fn new(config: &RplConfig, device: &Device) -> Self {
        let mut cin = config.width(released::STEM);
        let mod1 = conv(3, cin, 3, 1, 1, device);
        let stages = STAGES
            .iter()
            .map(|spec| {
                let stage = ResidualStage::new(cin, spec, config, device);
                cin = config.width(*spec.channels.last().unwrap());
                stage
            })
            .collect();
        Self { mod1, stages }
    }

    pub fn forward(&self, x: Tensor<4>, keep_mod1: bool) -> TrunkFeatures {
        let x1 = convolve(&self.mod1, x);
        let mod1 = keep_mod1.then(|| x1.clone());
        let m2 = self.stages[0].forward(max_pool(x1));
        let x3 = self.stages[1].forward(max_pool(m2.clone()));
        let mod7 = self.stages[2..].iter().fold(x3, |x, stage| stage.forward(x));
        TrunkFeatures { mod1, m2, mod7 }
    }
}

/// `pool2` / `pool3`: 3x3 max-pool, stride 2, padding 1 (a side of n becomes ceil(n/2)).
fn max_pool(x: Tensor<4>) -> Tensor<4> {
    if let Some(pooled) = crate::cpu::max_pool::max_pool_3x3_stride_2_on_flex(&x) {
        return pooled;
    }
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]))
}
