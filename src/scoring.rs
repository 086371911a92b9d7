//! Per-pixel anomaly scores from logits, as the paper's `compute_anomaly_score`, plus two
//! classic baselines for teaching. Every score is "higher = more anomalous" and is blurred.

use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Tensor, TensorData};

/// Side of the Gaussian smoothing kernel (sigma 1) applied to every score map.
pub const BLUR_KERNEL: usize = 7;
const BLUR_RADIUS: usize = BLUR_KERNEL / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreMode {
    /// `-logsumexp(logits)`: the paper's score.
    Energy,
    /// Softmax entropy divided by log(classes), in [0, 1].
    Entropy,
    /// Baseline (Hendrycks & Gimpel): `-max softmax`.
    MaxSoftmax,
    /// Baseline (Hendrycks et al.): `-max logit`.
    MaxLogit,
}

impl ScoreMode {
    pub const ALL: [Self; 4] = [Self::Energy, Self::Entropy, Self::MaxSoftmax, Self::MaxLogit];

    /// The name used on the command line and in the page.
    pub fn name(self) -> &'static str {
        match self {
            Self::Energy => "energy",
            Self::Entropy => "entropy",
            Self::MaxSoftmax => "max-softmax",
            Self::MaxLogit => "max-logit",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Max-softmax and max-logit are not the paper's scores: shown as baselines.
    pub fn is_baseline(self) -> bool {
        matches!(self, Self::MaxSoftmax | Self::MaxLogit)
    }
}

impl serde::Serialize for ScoreMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The blurred anomaly score `[N, H, W]` of logits `[N, classes, H, W]`.
pub fn anomaly_score(logits: Tensor<4>, mode: ScoreMode) -> Tensor<3> {
    gaussian_blur(unblurred_score(logits, mode))
}

/// The per-pixel score `[N, H, W]` before the blur: pixels are independent, so it can be
/// computed a band of rows at a time.
pub fn unblurred_score(logits: Tensor<4>, mode: ScoreMode) -> Tensor<3> {
    match mode {
        ScoreMode::Energy => energy_score(logits),
        ScoreMode::Entropy => normalized_entropy(logits),
        ScoreMode::MaxSoftmax => max_softmax_score(logits),
        ScoreMode::MaxLogit => max_logit_score(logits),
    }
}

/// `log(sum(exp(x)))` over the classes, stable: shifted by the per-pixel maximum. `[N, 1, H, W]`.
fn logsumexp(logits: Tensor<4>) -> Tensor<4> {
    if let Some(on_cpu) = crate::cpu::log_sum_exp::log_sum_exp_on_flex(&logits) {
        return on_cpu;
    }
    let max = logits.clone().max_dim(1);
    (logits - max.clone()).exp().sum_dim(1).log() + max
}

/// `-logsumexp(logits)` per pixel, unblurred.
pub fn energy_score(logits: Tensor<4>) -> Tensor<3> {
    logsumexp(logits).neg().squeeze_dim(1)
}

/// `-sum(p log p) / log(classes)` per pixel, unblurred. From log-probabilities, so a
/// probability that underflows to 0 contributes its limit 0 instead of NaN.
pub fn normalized_entropy(logits: Tensor<4>) -> Tensor<3> {
    let classes = logits.dims()[1] as f64;
    let log_p = logits.clone() - logsumexp(logits);
    let plogp = log_p.clone().exp() * log_p;
    plogp.sum_dim(1).neg().div_scalar(classes.ln()).squeeze_dim(1)
}

/// `-max softmax` per pixel, unblurred.
pub fn max_softmax_score(logits: Tensor<4>) -> Tensor<3> {
    let max = logits.clone().max_dim(1);
    (max - logsumexp(logits)).exp().neg().squeeze_dim(1)
}

/// `-max logit` per pixel, unblurred.
pub fn max_logit_score(logits: Tensor<4>) -> Tensor<3> {
    logits.max_dim(1).neg().squeeze_dim(1)
}

/// Weights `exp(-x^2 / 2)` for x = -3..3, normalised to sum 1.
pub fn gaussian_kernel() -> [f32; BLUR_KERNEL] {
    let raw: [f64; BLUR_KERNEL] = std::array::from_fn(|i| {
        let x = i as f64 - BLUR_RADIUS as f64;
        (-x * x / 2.0).exp()
    });
    let sum: f64 = raw.iter().sum();
    raw.map(|w| (w / sum) as f32)
}

/// 7x7, sigma-1 Gaussian blur of `[N, H, W]` maps with reflect padding, applied separably.
/// Maps of 3 pixels or fewer on a side cannot be reflected by 3: their border is repeated instead.
pub fn gaussian_blur(score: Tensor<3>) -> Tensor<3> {
    let [_, h, w] = score.dims();
    let device = score.device();
    let reflect = h > BLUR_RADIUS && w > BLUR_RADIUS;
    if let Some(blurred) = crate::cpu::gaussian_blur::blur_separable_on_flex(&score, &gaussian_kernel(), reflect) {
        return blurred;
    }
    let mode = if reflect { PadMode::Reflect } else { PadMode::Edge };
    let r = BLUR_RADIUS;
    let padded = score.unsqueeze_dim::<4>(1).pad((r, r, r, r), mode);
    let kernel = gaussian_kernel().to_vec();
    let horizontal = Tensor::<4>::from_data(TensorData::new(kernel.clone(), [1, 1, 1, BLUR_KERNEL]), &device);
    let vertical = Tensor::<4>::from_data(TensorData::new(kernel, [1, 1, BLUR_KERNEL, 1]), &device);
    let valid = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let blurred = conv2d(conv2d(padded, horizontal, None, valid.clone()), vertical, None, valid);
    blurred.squeeze_dim(1)
}
