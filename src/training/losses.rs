//! The training losses: cross-entropy for the segmentation (stage 1) and the paper's RPL losses
//! for the residual block (stage 2, `../shared/docs/rpl-reference.md`, "Training").

use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Int, Tensor, TensorData};

use crate::synthetic::{LABEL_OUTLIER, SceneRng};

/// Weight of the outlier energy loss, as in the paper.
pub const OUTLIER_ENERGY_WEIGHT: f32 = 0.05;
/// CoroCL's InfoNCE temperature.
pub const CONTRAST_TEMPERATURE: f32 = 0.1;
/// Probabilities are clamped here before the entropy's logarithm, as in the paper's code.
const PROBABILITY_FLOOR: f32 = 1e-7;

/// Mean of `values` `[N, 1, H, W]` weighted by `mask` (1 where a pixel counts; 0 when none does).
fn masked_mean(values: Tensor<4>, mask: Tensor<4>) -> Tensor<1> {
    let count = mask.clone().sum().clamp_min(1e-6);
    (values * mask).sum() / count
}

/// 1.0 where `labels` `[N, H, W]` satisfies the predicate's tensor test, as `[N, 1, H, W]` floats.
fn mask_of(labels: &Tensor<3, Int>, keep: impl Fn(Tensor<3, Int>) -> Tensor<3, burn::tensor::Bool>) -> Tensor<4> {
    keep(labels.clone()).float().unsqueeze_dim(1)
}

/// Pixel-wise cross-entropy of `logits` `[N, C, H, W]` against class ids `[N, H, W]`, each pixel
/// weighted by its class's `weights` `[C]` (PyTorch's weighted mean); labels outside `0..C`
/// (void 255, outliers 254) are ignored.
pub fn segmentation_cross_entropy(logits: Tensor<4>, labels: Tensor<3, Int>, weights: Tensor<1>) -> Tensor<1> {
    let [n, classes, h, w] = logits.dims();
    let valid = mask_of(&labels, |l| l.lower_elem(classes as i64));
    let target = labels.clamp_max(classes as i64 - 1);
    let pixel_weights = weights.select(0, target.clone().reshape([n * h * w])).reshape([n, 1, h, w]) * valid;
    let nll = -log_softmax(logits, 1).gather(1, target.unsqueeze_dim::<4>(1));
    masked_mean(nll, pixel_weights)
}

/// Logit-adjusted cross-entropy (Menon et al., 2021): `tau * ln(w_c)` is added to class c's
/// logits before [`segmentation_cross_entropy`], so that at test time the network's own logits
/// sit `tau * ln(w)` lower, partly undoing the over-prediction of the up-weighted thin classes.
/// Classes of weight 0 (never labelled) are not shifted.
pub fn logit_adjusted_cross_entropy(logits: Tensor<4>, labels: Tensor<3, Int>, weights: Tensor<1>, tau: f32) -> Tensor<1> {
    let [classes] = weights.dims();
    let shift = weights.clone().mask_fill(weights.clone().equal_elem(0.0), 1.0).log() * tau;
    segmentation_cross_entropy(logits + shift.reshape([1, classes, 1, 1]), labels, weights)
}

/// Stage 2's losses, each already weighted; their sum is what is minimised.
pub struct RplLosses {
    /// Inlier pixels: out2 keeps out1's segmentation (cross-entropy to argmax(out1)).
    pub inlier_ce: Tensor<1>,
    /// Inlier pixels: out2 keeps out1's uncertainty (MSE between softmax entropies).
    pub inlier_entropy: Tensor<1>,
    /// Outlier pixels: 0.05 x relu(logsumexp(out2)), pushing their energy up.
    pub outlier_energy: Tensor<1>,
    /// CoroCL: InfoNCE separating outlier from inlier embeddings across contexts.
    pub contrast: Tensor<1>,
}

impl RplLosses {
    pub fn total(&self) -> Tensor<1> {
        self.inlier_ce.clone() + self.inlier_entropy.clone() + self.outlier_energy.clone() + self.contrast.clone()
    }
}

fn entropy(logits: Tensor<4>) -> Tensor<4> {
    let p = softmax(logits, 1).clamp(PROBABILITY_FLOOR, 1.0);
    -(p.clone() * p.log()).sum_dim(1)
}

/// The inlier and outlier losses on scene pixels: `out1`, `out2` `[N, C, H, W]`, labels `[N, H, W]`.
pub fn residual_losses(out1: Tensor<4>, out2: Tensor<4>, labels: &Tensor<3, Int>) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let out1 = out1.detach();
    let inlier = mask_of(labels, |l| l.lower_elem(i64::from(LABEL_OUTLIER)));
    let outlier = mask_of(labels, |l| l.equal_elem(i64::from(LABEL_OUTLIER)));
    let target = out1.clone().argmax(1);
    let ce = masked_mean(-log_softmax(out2.clone(), 1).gather(1, target), inlier.clone());
    let entropy_gap = (entropy(out2.clone()) - entropy(out1)).powi_scalar(2);
    let mse = masked_mean(entropy_gap, inlier);
    let peak = out2.clone().max_dim(1).detach();
    let logsumexp = peak.clone() + (out2 - peak).exp().sum_dim(1).log();
    let energy = masked_mean(relu(logsumexp), outlier) * OUTLIER_ENERGY_WEIGHT;
    (ce, mse, energy)
}

/// CoroCL's contrast: up to `per_kind` outlier and as many inlier embeddings are drawn from
/// `projection` `[N, D, h, w]` (labels at that resolution, row-major per image, inliers being any
/// class), L2-normalised, and trained with a supervised InfoNCE (positives: the same kind).
/// Returns the loss and its floor (see [`contrastive_floor`]).
pub fn contrastive_loss(projection: Tensor<4>, labels_small: &[u8], per_kind: usize, rng: &mut SceneRng) -> Option<(Tensor<1>, f32)> {
    let [n, d, h, w] = projection.dims();
    let device = projection.device();
    let mut outliers: Vec<usize> = (0..n * h * w).filter(|&i| labels_small[i] == LABEL_OUTLIER).collect();
    let mut inliers: Vec<usize> = (0..n * h * w).filter(|&i| labels_small[i] < LABEL_OUTLIER).collect();
    if outliers.len() < 2 || inliers.len() < 2 {
        return None;
    }
    for pool in [&mut outliers, &mut inliers] {
        // Partial Fisher-Yates: the first `per_kind` entries become a uniform sample.
        for i in 0..pool.len().min(per_kind) {
            let j = i + rng.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(per_kind);
    }
    let kinds: Vec<f32> = outliers.iter().map(|_| 1.0).chain(inliers.iter().map(|_| 0.0)).collect();
    let picked: Vec<i64> = outliers.iter().chain(&inliers).map(|&i| i as i64).collect();
    let m = picked.len();
    let rows = projection.permute([0, 2, 3, 1]).reshape([n * h * w, d]);
    let index = Tensor::<1, Int>::from_data(TensorData::new(picked, [m]), &device);
    let z = rows.select(0, index);
    let z = z.clone() / z.powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    let similarity = z.clone().matmul(z.transpose()) / CONTRAST_TEMPERATURE;
    let kind = Tensor::<1>::from_data(TensorData::new(kinds, [m]), &device);
    let same = kind.clone().unsqueeze_dim::<2>(1).equal(kind.unsqueeze_dim::<2>(0)).float();
    let eye = Tensor::<2>::eye(m, &device);
    let positives = same - eye.clone();
    // Exclude each anchor from its own denominator with a large negative.
    let logits = similarity - eye * 1e4;
    let peak = logits.clone().max_dim(1).detach();
    let log_denominator = peak.clone() + (logits.clone() - peak).exp().sum_dim(1).log();
    let log_prob = logits - log_denominator;
    let per_anchor = (log_prob * positives.clone()).sum_dim(1) / positives.sum_dim(1).clamp_min(1.0);
    Some((-per_anchor.mean(), contrastive_floor(outliers.len(), inliers.len())))
}

/// The least the supervised InfoNCE can reach with `outliers` and `inliers` embeddings: each
/// anchor's loss is at least the log of its positives' count (all of them equally close).
pub fn contrastive_floor(outliers: usize, inliers: usize) -> f32 {
    let anchors = (outliers + inliers) as f64;
    let part = |count: usize| count as f64 * ((count.max(2) - 1) as f64).ln();
    ((part(outliers) + part(inliers)) / anchors) as f32
}
