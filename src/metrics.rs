//! The paper's evaluation: pixel-pooled AUROC, AP and FPR95 of an anomaly score, and inlier mIoU.
//!
//! Scores are pooled exactly: every distinct float32 score keeps its own inlier and OoD counts,
//! so adding images one at a time (or in any split) gives the same numbers as sorting all pixels
//! of the dataset at once, and memory grows with the distinct scores, never with the images.

use thiserror::Error;

/// Ground-truth value of an inlier pixel in OoD masks (the public benchmarks' convention).
pub const LABEL_INLIER: u8 = 0;
/// Ground-truth value of an OoD pixel; any other value is ignored.
pub const LABEL_OOD: u8 = 1;
/// The recall at which FPR95 reads the false-positive rate.
const RECALL_LEVEL: f64 = 0.95;

#[derive(Debug, Error, PartialEq)]
pub enum MetricsError {
    #[error("{scores} scores but {labels} labels: the score map and the mask must have the same size")]
    SizeMismatch { scores: usize, labels: usize },
    #[error("score {index} is NaN: a NaN score cannot be ranked")]
    NanScore { index: usize },
    #[error("no OoD pixels (label 1) were seen: AUROC, AP and FPR95 need both kinds")]
    NoOodPixels,
    #[error("no inlier pixels (label 0) were seen: AUROC, AP and FPR95 need both kinds")]
    NoInlierPixels,
}

/// AUROC, AP and FPR95 with OoD as the positive class, as the paper's `eval_ood_measure`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OodMetrics {
    pub auroc: f64,
    /// Average precision, step-wise (sklearn's `average_precision_score`).
    pub ap: f64,
    /// False-positive rate at the cut whose recall is nearest to 0.95.
    pub fpr95: f64,
    pub n_inlier: u64,
    pub n_ood: u64,
}

/// Inlier and OoD counts per distinct score, kept sorted by score (ascending).
#[derive(Debug, Clone, Default)]
pub struct OodScorePool {
    /// `(score, ood, inlier)`; scores distinct and ascending.
    bins: Vec<(f32, u64, u64)>,
    n_ignored: u64,
}

impl OodScorePool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pools one score map with its mask (0 inlier, 1 OoD, anything else ignored).
    pub fn add(&mut self, scores: &[f32], labels: &[u8]) -> Result<(), MetricsError> {
        if scores.len() != labels.len() {
            return Err(MetricsError::SizeMismatch { scores: scores.len(), labels: labels.len() });
        }
        let mut pixels = Vec::with_capacity(scores.len());
        for (index, (&score, &label)) in scores.iter().zip(labels).enumerate() {
            if label != LABEL_INLIER && label != LABEL_OOD {
                self.n_ignored += 1;
                continue;
            }
            if score.is_nan() {
                return Err(MetricsError::NanScore { index });
            }
            // -0.0 and 0.0 are one score, as for NumPy's comparisons.
            let score = if score == 0.0 { 0.0 } else { score };
            pixels.push((score, label == LABEL_OOD));
        }
        pixels.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut runs: Vec<(f32, u64, u64)> = Vec::new();
        for (score, is_ood) in pixels {
            match runs.last_mut() {
                Some(last) if last.0 == score => {
                    if is_ood { last.1 += 1 } else { last.2 += 1 }
                }
                _ => runs.push((score, u64::from(is_ood), u64::from(!is_ood))),
            }
        }
        self.bins = merge_runs(std::mem::take(&mut self.bins), runs);
        Ok(())
    }

    /// Pools another pool's pixels (for splitting a dataset over workers).
    pub fn merge(&mut self, other: OodScorePool) {
        self.bins = merge_runs(std::mem::take(&mut self.bins), other.bins);
        self.n_ignored += other.n_ignored;
    }

    pub fn n_ood(&self) -> u64 {
        self.bins.iter().map(|b| b.1).sum()
    }

    pub fn n_inlier(&self) -> u64 {
        self.bins.iter().map(|b| b.2).sum()
    }

    pub fn n_ignored(&self) -> u64 {
        self.n_ignored
    }

    /// Distinct scores held: what the pool's memory grows with.
    pub fn distinct_scores(&self) -> usize {
        self.bins.len()
    }

    /// AUROC, AP and FPR95 of everything pooled so far.
    pub fn metrics(&self) -> Result<OodMetrics, MetricsError> {
        let (positives, negatives) = (self.n_ood(), self.n_inlier());
        if positives == 0 {
            return Err(MetricsError::NoOodPixels);
        }
        if negatives == 0 {
            return Err(MetricsError::NoInlierPixels);
        }
        let (p, n) = (positives as f64, negatives as f64);
        // One cut per distinct score, from the highest score down: (true, false) positives above it.
        let mut cuts = Vec::with_capacity(self.bins.len());
        let (mut tp, mut fp) = (0u64, 0u64);
        for &(_, ood, inlier) in self.bins.iter().rev() {
            tp += ood;
            fp += inlier;
            cuts.push((tp, fp));
        }

        let (mut auroc, mut ap) = (0.0, 0.0);
        let (mut prev_tpr, mut prev_fpr) = (0.0, 0.0);
        for &(tp, fp) in &cuts {
            let (tpr, fpr) = (tp as f64 / p, fp as f64 / n);
            auroc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
            ap += (tpr - prev_tpr) * (tp as f64 / (tp + fp) as f64);
            (prev_tpr, prev_fpr) = (tpr, fpr);
        }
        Ok(OodMetrics { auroc, ap, fpr95: fpr_at_recall(&cuts, p, n), n_inlier: negatives, n_ood: positives })
    }
}

/// Points of the ROC curve `(FPR, TPR)` and the precision-recall curve `(recall, precision)`,
/// at every distinct score, thinned to at most `max_points` each (for drawing).
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub roc: Vec<[f64; 2]>,
    pub precision_recall: Vec<[f64; 2]>,
}

impl OodScorePool {
    pub fn curves(&self, max_points: usize) -> Result<Curves, MetricsError> {
        let (p, n) = (self.n_ood() as f64, self.n_inlier() as f64);
        if p == 0.0 {
            return Err(MetricsError::NoOodPixels);
        }
        if n == 0.0 {
            return Err(MetricsError::NoInlierPixels);
        }
        let stride = self.bins.len().div_ceil(max_points.max(2) - 1).max(1);
        let mut roc = vec![[0.0, 0.0]];
        let mut precision_recall = Vec::new();
        let (mut tp, mut fp) = (0u64, 0u64);
        for (i, &(_, ood, inlier)) in self.bins.iter().rev().enumerate() {
            tp += ood;
            fp += inlier;
            if (i + 1) % stride == 0 || i + 1 == self.bins.len() {
                roc.push([fp as f64 / n, tp as f64 / p]);
                if tp + fp > 0 {
                    precision_recall.push([tp as f64 / p, tp as f64 / (tp + fp) as f64]);
                }
            }
        }
        Ok(Curves { roc, precision_recall })
    }
}

/// The reference's rule: among the cuts from the first one reaching full recall back up to the
/// highest score, the first (lowest-score) cut whose recall is nearest to 0.95; its FP / N.
fn fpr_at_recall(cuts: &[(u64, u64)], positives: f64, negatives: f64) -> f64 {
    let total_tp = cuts.last().map_or(0, |c| c.0);
    let full_recall = cuts.iter().position(|c| c.0 == total_tp).unwrap_or(0);
    let mut best = (f64::INFINITY, 0u64);
    for &(tp, fp) in cuts[..=full_recall].iter().rev() {
        let distance = (tp as f64 / positives - RECALL_LEVEL).abs();
        if distance < best.0 {
            best = (distance, fp);
        }
    }
    best.1 as f64 / negatives
}

/// Merges two ascending, distinct-score run lists, adding the counts of equal scores.
fn merge_runs(a: Vec<(f32, u64, u64)>, b: Vec<(f32, u64, u64)>) -> Vec<(f32, u64, u64)> {
    if a.is_empty() {
        return b;
    }
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.0.total_cmp(&y.0) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next().unwrap_or_default(), b.next().unwrap_or_default());
                    Some((x.0, x.1 + y.1, x.2 + y.2))
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        merged.extend(next);
    }
    merged
}

/// A class confusion matrix for inlier mIoU; labels outside `0..classes` (void 255, OoD 254)
/// are ignored.
#[derive(Debug, Clone)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `counts[label * classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self { classes, counts: vec![0; classes * classes] }
    }

    pub fn add(&mut self, predicted: &[u8], labels: &[u8]) -> Result<(), MetricsError> {
        if predicted.len() != labels.len() {
            return Err(MetricsError::SizeMismatch { scores: predicted.len(), labels: labels.len() });
        }
        for (&p, &l) in predicted.iter().zip(labels) {
            let (p, l) = (usize::from(p), usize::from(l));
            if l < self.classes && p < self.classes {
                self.counts[l * self.classes + p] += 1;
            }
        }
        Ok(())
    }

    /// Intersection over union per class; `None` for a class neither labelled nor predicted.
    pub fn iou_per_class(&self) -> Vec<Option<f64>> {
        let k = self.classes;
        (0..k)
            .map(|c| {
                let hit = self.counts[c * k + c];
                let labelled: u64 = self.counts[c * k..(c + 1) * k].iter().sum();
                let predicted: u64 = (0..k).map(|l| self.counts[l * k + c]).sum();
                let union = labelled + predicted - hit;
                (union > 0).then(|| hit as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes present in labels or predictions (NaN-mean, as the paper's code).
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.iou_per_class().into_iter().flatten().collect();
        if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 }
    }

    /// Share of labelled pixels whose prediction is right.
    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let hits: u64 = (0..self.classes).map(|c| self.counts[c * self.classes + c]).sum();
        if total == 0 { 0.0 } else { hits as f64 / total as f64 }
    }
}
