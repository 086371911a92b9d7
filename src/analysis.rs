//! What the page asks about a result once it is computed: one pixel's classes, probabilities and
//! scores; the OoD mask at a threshold; metrics against a ground-truth mask. Host-side and
//! backend-free, so the page's answers are the command line's.

use thiserror::Error;

use crate::inference::Head;
use crate::metrics::{Curves, LABEL_INLIER, LABEL_OOD, MetricsError, OodMetrics, OodScorePool};

/// Points per drawn curve.
const CURVE_POINTS: usize = 200;

#[derive(Debug, Error, PartialEq)]
pub enum AnalysisError {
    #[error("the ground-truth mask is {mask_width}x{mask_height}, the image {width}x{height}: they must match")]
    MaskSize { mask_width: usize, mask_height: usize, width: usize, height: usize },
    #[error("the ground-truth mask has values other than 0 (inlier), 1 (OoD) and 255 (ignored): {values:?}")]
    MaskValues { values: Vec<u8> },
    #[error("pixel ({x}, {y}) is outside the {width}x{height} image")]
    OutsideImage { x: usize, y: usize, width: usize, height: usize },
    #[error("the {head} scores have {values} values, the {width}x{height} image has {} pixels", .width * .height)]
    ScoreCount { head: &'static str, values: usize, width: usize, height: usize },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Both heads' anomaly scores of one image, row-major H x W each.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    width: usize,
    height: usize,
    /// In [`Head::BOTH`] order.
    scores: [Vec<f32>; 2],
}

/// One pixel, for the page's hover read-out; each pair in [`Head::BOTH`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelReport {
    /// Train id of the argmax (the first on ties).
    pub class: [u8; 2],
    /// Softmax over the classes.
    pub probabilities: [Vec<f32>; 2],
    pub score: [f32; 2],
}

/// AUROC / AP / FPR95 and curves of one head's score against a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadEvaluation {
    pub metrics: OodMetrics,
    pub curves: Curves,
}

impl ImageScores {
    /// `scores` in [`Head::BOTH`] order, each `width * height` values.
    pub fn new(width: usize, height: usize, scores: [Vec<f32>; 2]) -> Result<Self, AnalysisError> {
        for head in Head::BOTH {
            let values = scores[head.index()].len();
            if values != width * height {
                return Err(AnalysisError::ScoreCount { head: head.name(), values, width, height });
            }
        }
        Ok(Self { width, height, scores })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn head(&self, head: Head) -> &[f32] {
        &self.scores[head.index()]
    }

    /// Both heads' scores at one pixel.
    pub fn at(&self, x: usize, y: usize) -> Result<[f32; 2], AnalysisError> {
        if x >= self.width || y >= self.height {
            return Err(AnalysisError::OutsideImage { x, y, width: self.width, height: self.height });
        }
        Ok(Head::BOTH.map(|head| self.head(head)[y * self.width + x]))
    }

    /// The pixels whose score of `head` is above `threshold`, and their share of the image.
    pub fn threshold(&self, head: Head, threshold: f32) -> (f64, Vec<bool>) {
        let mask: Vec<bool> = self.head(head).iter().map(|&s| s > threshold).collect();
        let share = mask.iter().filter(|&&m| m).count() as f64 / mask.len().max(1) as f64;
        (share, mask)
    }

    /// Each head's metrics against a mask of the image's size (0 inlier, 1 OoD, 255 ignored),
    /// in [`Head::BOTH`] order.
    pub fn evaluate(&self, mask: &[u8], mask_width: usize, mask_height: usize) -> Result<[HeadEvaluation; 2], AnalysisError> {
        check_mask(mask, mask_width, mask_height, self.width, self.height)?;
        let evaluate = |head: Head| -> Result<HeadEvaluation, AnalysisError> {
            let mut pool = OodScorePool::new();
            pool.add(self.head(head), mask)?;
            Ok(HeadEvaluation { metrics: pool.metrics()?, curves: pool.curves(CURVE_POINTS)? })
        };
        Ok([evaluate(Head::Out1)?, evaluate(Head::Out2)?])
    }
}

impl PixelReport {
    /// From both heads' logits at the pixel (one per class) and its scores.
    pub fn new(logits: &[Vec<f32>; 2], score: [f32; 2]) -> Self {
        let [(c1, p1), (c2, p2)] = [&logits[0], &logits[1]].map(|head_logits| class_and_softmax(head_logits));
        Self { class: [c1, c2], probabilities: [p1, p2], score }
    }
}

/// The argmax (the first on ties) and the softmax of one pixel's logits.
fn class_and_softmax(logits: &[f32]) -> (u8, Vec<f32>) {
    let peak = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - peak).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let class = (0..logits.len()).fold(0, |best, c| if logits[c] > logits[best] { c } else { best });
    (class as u8, exp.iter().map(|e| e / sum).collect())
}

/// A mask must have the image's size and only the benchmarks' three values.
pub(crate) fn check_mask(mask: &[u8], mask_width: usize, mask_height: usize, width: usize, height: usize) -> Result<(), AnalysisError> {
    if (mask_width, mask_height) != (width, height) || mask.len() != width * height {
        return Err(AnalysisError::MaskSize { mask_width, mask_height, width, height });
    }
    let mut seen = [false; 256];
    for &v in mask {
        seen[usize::from(v)] = true;
    }
    let unknown: Vec<u8> = (0..=255u8).filter(|&v| seen[usize::from(v)] && v != LABEL_INLIER && v != LABEL_OOD && v != 255).collect();
    if unknown.is_empty() { Ok(()) } else { Err(AnalysisError::MaskValues { values: unknown }) }
}
