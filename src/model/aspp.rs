//! Atrous spatial pyramid pooling, as used twice: the decoder's `aspp` and the RPL block's `atten_aspp`.

use burn::module::Module;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

use super::config::{RplConfig, released};
use super::layers::ConvBnRelu;

/// Atrous rates at output stride 8 (the reference's 6, 12, 18 doubled).
pub const ATROUS_RATES: [usize; 3] = [12, 24, 36];

#[derive(Module, Debug)]
pub struct Aspp {
    /// Global average pool, then this 1x1 branch, broadcast back to the map's size.
    pub img_conv: ConvBnRelu,
    /// `features.0`: 1x1; `features.1..3`: 3x3 with the atrous rates.
    pub features: Vec<ConvBnRelu>,
}

impl Aspp {
    pub fn new(config: &RplConfig, device: &Device) -> Self {
        let cin = config.width(released::TRUNK_OUT);
        let branch = config.width(released::ASPP_BRANCH);
        let mut features = vec![ConvBnRelu::new(cin, branch, 1, 1, device)];
        features.extend(ATROUS_RATES.iter().map(|&rate| ConvBnRelu::new(cin, branch, 3, rate, device)));
        Self { img_conv: ConvBnRelu::new(cin, branch, 1, 1, device), features }
    }

    /// Output: the five branches concatenated in the order [img, features.0..3].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = x.dims();
        let pooled = crate::cpu::plane_means::plane_means_on_flex(&x).unwrap_or_else(|| adaptive_avg_pool2d(x.clone(), [1, 1]));
        // Bilinear resizing of a 1x1 map is a broadcast.
        let img = self.img_conv.forward(pooled);
        let channels = img.dims()[1];
        let img = img.expand([n, channels, h, w]);
        let mut branches = vec![img];
        branches.extend(self.features.iter().map(|f| f.forward(x.clone())));
        Tensor::cat(branches, 1)
    }

    pub fn fold_batch_norms(&mut self) {
        self.features.iter_mut().chain([&mut self.img_conv]).for_each(ConvBnRelu::fold_batch_norm);
    }
}
