//! The whole RPL network: DeepLabV3+ on WideResNet-38 with the RPL residual block.

use std::ops::ControlFlow;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use super::aspp::Aspp;
use super::config::{RplConfig, released};
use super::convolution::convolve;
use super::decoder::SegmentationHead;
use super::layers::conv;
use super::residual_block::ResidualAnomalyBlock;
use super::{resize_rows, resize_to};
use super::trunk::WiderResNet38;

/// Both heads' logits at the input's resolution, `[N, classes, H, W]`.
#[derive(Debug, Clone)]
pub struct RplLogits {
    /// The closed-set (inlier) segmentation: the original DeepLabV3+ output.
    pub out1: Tensor<4>,
    /// With the RPL residual added: the logits the anomaly score is computed from.
    pub out2: Tensor<4>,
}

/// Both heads' logits at the decoder's resolution (m2's, about H/2 x W/2), before the resize to
/// the image: a quarter of the full-resolution values, so inference keeps these on the device
/// and makes full-resolution rows from them a band at a time.
#[derive(Debug, Clone)]
pub struct DecoderLogits {
    pub out1: Tensor<4>,
    pub out2: Tensor<4>,
    /// `[height, width]` of the input image, the size both heads resize to.
    pub image_size: [usize; 2],
}

impl DecoderLogits {
    /// Both heads' logits at the image's resolution, whole.
    pub fn at_image_size(&self) -> RplLogits {
        let rows = 0..self.image_size[0];
        let [out1, out2] = [&self.out1, &self.out2].map(|head| resize_rows(head.clone(), self.image_size, rows.clone()));
        RplLogits { out1, out2 }
    }
}

/// The stages of a forward pass, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// WideResNet-38 up to mod7 (and the fine features m2).
    Trunk,
    /// The segmentation ASPP and the decoder's input features (dec0).
    Aspp,
    /// The RPL residual block (its own ASPP).
    ResidualBlock,
    /// The shared `final` head on both inputs (out1, out2 at the decoder's resolution).
    Decoder,
}

impl Stage {
    pub const ALL: [Self; 4] = [Self::Trunk, Self::Aspp, Self::ResidualBlock, Self::Decoder];

    pub fn name(self) -> &'static str {
        match self {
            Self::Trunk => "trunk",
            Self::Aspp => "aspp",
            Self::ResidualBlock => "residual block",
            Self::Decoder => "decoder",
        }
    }
}

/// Intermediate maps of one forward pass, named as in the reference fixtures.
#[derive(Debug, Clone)]
pub struct RplTrace {
    pub mod1: Tensor<4>,
    pub m2: Tensor<4>,
    pub mod7: Tensor<4>,
    pub aspp: Tensor<4>,
    pub res: Tensor<4>,
    pub logits: RplLogits,
}

#[derive(Module, Debug)]
pub struct RplNetwork {
    pub trunk: WiderResNet38,
    pub aspp: Aspp,
    /// 1x1: fine features (m2) -> 48 channels.
    pub bot_fine: Conv2d,
    /// 1x1: ASPP output -> 256 channels.
    pub bot_aspp: Conv2d,
    pub head: SegmentationHead,
    pub residual_block: ResidualAnomalyBlock,
    #[module(skip)]
    pub config: RplConfig,
}

impl RplNetwork {
    /// A network of the given widths; parameters are initialised lazily, so building the
    /// released model to inspect its shapes allocates no weights.
    pub fn new(config: RplConfig, device: &Device) -> Self {
        let branch = config.width(released::ASPP_BRANCH);
        Self {
            trunk: WiderResNet38::new(&config, device),
            aspp: Aspp::new(&config, device),
            bot_fine: conv(config.width(128), config.width(released::FINE), 1, 1, 1, device),
            bot_aspp: conv(config.aspp_channels(), branch, 1, 1, 1, device),
            head: SegmentationHead::new(&config, device),
            residual_block: ResidualAnomalyBlock::new(&config, device),
            config,
        }
    }

    /// For inference: every BatchNorm that reads a convolution's output folded into that
    /// convolution (see [`fold_batch_norm`](super::layers::fold_batch_norm)); the trunk's pre-activation `bn1`s stay.
    /// Not for training or saving: the reference's BatchNorm entries are gone.
    pub fn fold_batch_norms(mut self) -> Self {
        let blocks = self.trunk.stages.iter_mut().flat_map(|stage| stage.blocks.iter_mut());
        blocks.for_each(|block| block.fold_batch_norms());
        self.aspp.fold_batch_norms();
        self.residual_block.atten_aspp.fold_batch_norms();
        self.head.fold_batch_norms();
        self
    }

    /// `x`: normalised images `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> RplLogits {
        self.forward_to_decoder(x).at_image_size()
    }

    /// Both heads' logits before the final resize: what inference keeps (see [`DecoderLogits`]).
    pub fn forward_to_decoder(&self, x: Tensor<4>) -> DecoderLogits {
        self.forward_staged(x, &mut |_| {})
    }

    /// [`Self::forward_to_decoder`], calling `stage_done` after each stage (for timing each one).
    pub fn forward_staged(&self, x: Tensor<4>, stage_done: &mut dyn FnMut(Stage)) -> DecoderLogits {
        let mut each = |stage, _: &Tensor<4>| {
            stage_done(stage);
            ControlFlow::Continue(())
        };
        self.forward_inner(x, false, &mut each).expect("no stage stops the pass").0
    }

    /// The pass up to and including `last`, and that stage's output (mod7, dec0, the residual,
    /// out2 at the decoder's resolution): where waiting for each stage is not possible (the
    /// browser), a stage's time is the difference between two of these.
    pub fn forward_through(&self, x: Tensor<4>, last: Stage) -> Tensor<4> {
        let mut output = None;
        self.forward_inner(x, false, &mut |stage, result| {
            if stage != last {
                return ControlFlow::Continue(());
            }
            output = Some(result.clone());
            ControlFlow::Break(())
        });
        output.expect("every stage reports its output")
    }

    /// The forward pass that also returns the intermediate maps (for parity debugging).
    pub fn forward_traced(&self, x: Tensor<4>) -> RplTrace {
        let pass = self.forward_inner(x, true, &mut |_, _| ControlFlow::Continue(()));
        pass.and_then(|(_, trace)| trace).expect("traced forward pass keeps its maps")
    }

    /// out1 only: the closed-set segmentation, without the residual block (training stage 1).
    pub fn forward_closed_set(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let features = self.trunk.forward(x, false);
        let [_, _, h2, w2] = features.m2.dims();
        let dec0 = self.decoder_features(features.mod7, features.m2, [h2, w2]);
        resize_to(self.head.forward(dec0), [h, w])
    }

    /// Both heads' logits and CoroCL's embeddings (`proj_head`, at mod7's resolution): what
    /// training stage 2 needs.
    pub fn forward_with_projection(&self, x: Tensor<4>) -> (RplLogits, Tensor<4>) {
        let [_, _, h, w] = x.dims();
        let features = self.trunk.forward(x, false);
        let [_, _, h2, w2] = features.m2.dims();
        let (res, projection) = self.residual_block.forward_with_projection(features.mod7.clone(), [h2, w2]);
        let dec0 = self.decoder_features(features.mod7, features.m2, [h2, w2]);
        let out1 = resize_to(self.head.forward(dec0.clone()), [h, w]);
        let out2 = resize_to(self.head.forward(dec0 + res), [h, w]);
        (RplLogits { out1, out2 }, projection)
    }

    /// `dec0`: fine features joined with the upsampled ASPP output, at m2's size.
    fn decoder_features(&self, mod7: Tensor<4>, m2: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        self.decoder_features_and_aspp(mod7, m2, size).0
    }

    /// `dec0` and the ASPP's output it was made from.
    fn decoder_features_and_aspp(&self, mod7: Tensor<4>, m2: Tensor<4>, size: [usize; 2]) -> (Tensor<4>, Tensor<4>) {
        let aspp = self.aspp.forward(mod7);
        let dec0_up = resize_to(convolve(&self.bot_aspp, aspp.clone()), size);
        (Tensor::cat(vec![convolve(&self.bot_fine, m2), dec0_up], 1), aspp)
    }

    /// The pass, offering each stage's output to `stage_done`; `None` where it stopped the pass.
    fn forward_inner(
        &self,
        x: Tensor<4>,
        traced: bool,
        stage_done: &mut dyn FnMut(Stage, &Tensor<4>) -> ControlFlow<()>,
    ) -> Option<(DecoderLogits, Option<RplTrace>)> {
        let mut done = |stage, output: &Tensor<4>| stage_done(stage, output).is_continue().then_some(());
        let [_, _, h, w] = x.dims();
        let features = self.trunk.forward(x, traced);
        done(Stage::Trunk, &features.mod7)?;
        let [_, _, h2, w2] = features.m2.dims();

        let (dec0, aspp) = self.decoder_features_and_aspp(features.mod7.clone(), features.m2.clone(), [h2, w2]);
        done(Stage::Aspp, &dec0)?;
        let res = self.residual_block.forward(features.mod7.clone(), [h2, w2]);
        done(Stage::ResidualBlock, &res)?;

        let out1 = self.head.forward(dec0.clone());
        let out2 = self.head.forward(dec0 + res.clone());
        done(Stage::Decoder, &out2)?;
        let logits = DecoderLogits { out1, out2, image_size: [h, w] };

        let trace = traced.then(|| RplTrace {
            mod1: features.mod1.expect("mod1 kept when traced"),
            m2: features.m2,
            mod7: features.mod7,
            aspp,
            res,
            logits: logits.at_image_size(),
        });
        Some((logits, trace))
    }
}
