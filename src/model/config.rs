//! Channel widths of the RPL network: the released model and narrower variants of it.

/// Widths of every layer, as the released model's widths divided by `width_divisor`.
///
/// The released checkpoint has divisor 1; the reference fixtures use 8. Strides, dilations,
/// paddings and the number of blocks never change with the width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RplConfig {
    /// Every internal channel count of the released model is divided by this.
    pub width_divisor: usize,
    /// Segmentation classes (19 for Cityscapes train ids).
    pub num_classes: usize,
}

/// Channel counts of the released model that the width divisor scales.
pub mod released {
    /// Output of `mod1`.
    pub const STEM: usize = 64;
    /// `bot_fine`: the projection of `m2` that joins the decoder.
    pub const FINE: usize = 48;
    /// ASPP branch width (its "reduction"), also `bot_aspp`'s and `final`'s width.
    pub const ASPP_BRANCH: usize = 256;
    /// Output of `mod7`, the input of both ASPPs.
    pub const TRUNK_OUT: usize = 4096;
}

impl RplConfig {
    /// The paper's released RPL+CoroCL network (167,998,832 parameters).
    pub const RELEASED: Self = Self { width_divisor: 1, num_classes: 19 };
    /// The width-1/8 network of the reference fixtures.
    pub const FIXTURE_W8: Self = Self { width_divisor: 8, num_classes: 19 };

    /// A width divisor works when it divides every scaled channel count exactly.
    pub fn is_valid(&self) -> bool {
        self.width_divisor > 0
            && released::STEM % self.width_divisor == 0
            && released::FINE % self.width_divisor == 0
            && self.num_classes > 0
    }

    /// A released channel count at this config's width.
    pub fn width(&self, released_channels: usize) -> usize {
        released_channels / self.width_divisor
    }

    /// Channels entering the shared `final` head: bot_fine's plus bot_aspp's.
    pub fn decoder_channels(&self) -> usize {
        self.width(released::FINE) + self.width(released::ASPP_BRANCH)
    }

    /// Five concatenated ASPP branches.
    pub fn aspp_channels(&self) -> usize {
        5 * self.width(released::ASPP_BRANCH)
    }

    /// Bytes per input pixel of the largest single activation: the input or `mod1` (full
    /// resolution), the decoder's concatenation (H/2) or `mod7` (H/8). A GPU binding must hold
    /// it, so this bounds the image size an adapter can run. (Full-resolution logits are made
    /// in bands of rows of bounded size: see `inference::LiveResult`.) `float_bytes`: 4 for
    /// float32, 2 for float16 (inference writes no boolean masks, which take 4 bytes a value).
    pub fn largest_activation_bytes_per_pixel(&self, float_bytes: usize) -> usize {
        let full = [3, self.width(released::STEM)];
        // The heads' logits also live whole at half resolution (fewer channels than the
        // decoder's features in every RPL config, but counted in case of many classes).
        let half = self.decoder_channels().max(self.num_classes);
        let eighth = self.width(released::TRUNK_OUT);
        (full.iter().max().unwrap() * float_bytes).max(half * float_bytes / 4).max(eighth * float_bytes / 64)
    }

    /// A name for people: "released (full width)" or "width 1/8".
    pub fn describe(&self) -> String {
        match self.width_divisor {
            1 => format!("released (full width, {} classes)", self.num_classes),
            d => format!("width 1/{d} ({} classes)", self.num_classes),
        }
    }
}
