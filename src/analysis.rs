//! What the page asks about a result once it is computed: one pixel's classes, probabilities and
//! scores; the OoD mask at a threshold; metrics against a ground-truth mask. Host-side and
//! backend-free, so the page's answers are the command line's.

use thiserror::Error;

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
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Both heads' logits `[classes, H, W]` and their anomaly scores `[H, W]` for one image.
#[derive(Debug, Clone)]
pub struct HeadResults {
    pub width: usize,
    pub height: usize,
    pub classes: usize,
    /// out1 (closed set) and out2 (with RPL).
    pub logits: [Vec<f32>; 2],
    pub scores: [Vec<f32>; 2],
}

/// One pixel, for the page's hover read-out.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelReport {
    /// Train id of argmax, per head.
    pub class: [u8; 2],
    /// Softmax over the classes, per head.
    pub probabilities: [Vec<f32>; 2],
    pub score: [f32; 2],
}

/// AUROC / AP / FPR95 and curves of one head's score against a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadEvaluation {
    pub metrics: OodMetrics,
    pub curves: Curves,
}

impl HeadResults {
    /// Argmax over classes per pixel, for head 0 (out1) or 1 (out2).
    pub fn class_map(&self, head: usize) -> Vec<u8> {
        argmax_classes(&self.logits[head], self.classes)
    }

    pub fn pixel(&self, x: usize, y: usize) -> Result<PixelReport, AnalysisError> {
        if x >= self.width || y >= self.height {
            return Err(AnalysisError::OutsideImage { x, y, width: self.width, height: self.height });
        }
        let pixels = self.width * self.height;
        let p = y * self.width + x;
        let head = |h: usize| {
            let logits: Vec<f32> = (0..self.classes).map(|c| self.logits[h][c * pixels + p]).collect();
            let peak = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - peak).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let class = (0..self.classes).fold(0, |best, c| if logits[c] > logits[best] { c } else { best });
            (class as u8, exp.iter().map(|e| e / sum).collect::<Vec<f32>>())
        };
        let (c1, p1) = head(0);
        let (c2, p2) = head(1);
        Ok(PixelReport { class: [c1, c2], probabilities: [p1, p2], score: [self.scores[0][p], self.scores[1][p]] })
    }

    /// Share of pixels whose score (of `head`) is above `threshold`, and that mask.
    pub fn threshold(&self, head: usize, threshold: f32) -> (f64, Vec<bool>) {
        threshold_mask(&self.scores[head], threshold)
    }

    /// Both heads' metrics against a mask of the image's size (0 inlier, 1 OoD, 255 ignored).
    pub fn evaluate(&self, mask: &[u8], mask_width: usize, mask_height: usize) -> Result<[HeadEvaluation; 2], AnalysisError> {
        check_mask(mask, mask_width, mask_height, self.width, self.height)?;
        let head = |h: usize| -> Result<HeadEvaluation, AnalysisError> {
            let mut pool = OodScorePool::new();
            pool.add(&self.scores[h], mask)?;
            Ok(HeadEvaluation { metrics: pool.metrics()?, curves: pool.curves(CURVE_POINTS)? })
        };
        Ok([head(0)?, head(1)?])
    }
}

/// The pixels scoring above `threshold`, and their share of the image.
pub fn threshold_mask(scores: &[f32], threshold: f32) -> (f64, Vec<bool>) {
    let mask: Vec<bool> = scores.iter().map(|&s| s > threshold).collect();
    let share = mask.iter().filter(|&&m| m).count() as f64 / mask.len().max(1) as f64;
    (share, mask)
}

/// Argmax over classes per pixel of logits stored `[classes, H, W]` (the first on ties).
pub fn argmax_classes(logits: &[f32], classes: usize) -> Vec<u8> {
    let pixels = logits.len() / classes;
    (0..pixels)
        .map(|p| {
            let mut best = 0;
            for c in 1..classes {
                if logits[c * pixels + p] > logits[best * pixels + p] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// A mask must have the image's size and only the benchmarks' three values.
pub fn check_mask(mask: &[u8], mask_width: usize, mask_height: usize, width: usize, height: usize) -> Result<(), AnalysisError> {
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
