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
    #[error("the object's mask has {values} values, the {width}x{height} image has {} pixels", .width * .height)]
    ObjectSize { values: usize, width: usize, height: usize },
    #[error("the object covers no pixel of the {width}x{height} image")]
    EmptyObject { width: usize, height: usize },
    #[error("the image before is {before_width}x{before_height}, the image after {width}x{height}: they must match")]
    BeforeSize { before_width: usize, before_height: usize, width: usize, height: usize },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// What pasting an object changed, for the page's before and after: each head's mean score over
/// the object's pixels and over the rest of the image, before and after, and what the
/// closed-set head (out1) made of the object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectChange {
    /// The object's pixels.
    pub pixels: usize,
    /// Per head, in [`Head::BOTH`] order: the mean score over the object's pixels, `[before, after]`.
    pub inside: [[f64; 2]; 2],
    /// Per head: the mean score over every other pixel, `[before, after]` (NaN where there is none).
    pub outside: [[f64; 2]; 2],
    /// The train id out1 gives most of the object's pixels (the lowest on ties), and their share.
    pub out1_class: u8,
    pub out1_class_share: f64,
    /// out1's softmax probability of its own label, averaged over the object's pixels: how sure
    /// the closed-set network is of a label that cannot be right.
    pub out1_confidence: f64,
    /// The share of the known pixels (inliers of the ground truth, or without one every pixel
    /// off the object) where out2 gives out1's class, NaN where there are none: the residual
    /// block leaves the segmentation of what the network knows as it was.
    pub same_class_on_inliers: f64,
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

impl ImageScores {
    /// What changed where `object` is nonzero, from `before` (the same image without the
    /// object, scored in the same mode) to these scores; `out1_logits`: out1's logits on this
    /// image, `[classes, H, W]`; `classes`: both heads' class maps of this image; `truth`: its
    /// ground truth (0 inlier, 1 OoD, 255 ignored) where it has one.
    pub fn object_change(
        &self,
        before: &ImageScores,
        object: &[u8],
        out1_logits: &[f32],
        classes: [&[u8]; 2],
        truth: Option<&[u8]>,
    ) -> Result<ObjectChange, AnalysisError> {
        let (width, height) = (self.width, self.height);
        if (before.width, before.height) != (width, height) {
            return Err(AnalysisError::BeforeSize { before_width: before.width, before_height: before.height, width, height });
        }
        let plane = width * height;
        if object.len() != plane {
            return Err(AnalysisError::ObjectSize { values: object.len(), width, height });
        }
        let class_count = out1_logits.len() / plane;
        if class_count == 0 || out1_logits.len() != class_count * plane {
            return Err(AnalysisError::ScoreCount { head: Head::Out1.name(), values: out1_logits.len(), width, height });
        }
        for (head, map) in Head::BOTH.into_iter().zip(classes) {
            if map.len() != plane {
                return Err(AnalysisError::ScoreCount { head: head.name(), values: map.len(), width, height });
            }
        }
        let inside: Vec<usize> = (0..plane).filter(|&i| object[i] != 0).collect();
        if inside.is_empty() {
            return Err(AnalysisError::EmptyObject { width, height });
        }
        let mean = |values: &[f32], on_object: bool| {
            let (sum, count) = values
                .iter()
                .zip(object)
                .filter(|&(_, &o)| (o != 0) == on_object)
                .fold((0f64, 0usize), |(sum, count), (&v, _)| (sum + f64::from(v), count + 1));
            if count == 0 { f64::NAN } else { sum / count as f64 }
        };
        let before_after = |on_object: bool| Head::BOTH.map(|head| [mean(before.head(head), on_object), mean(self.head(head), on_object)]);
        let mut votes = vec![0usize; class_count];
        let mut confidence = 0f64;
        let mut pixel = vec![0f32; class_count];
        for &i in &inside {
            for (class, logit) in pixel.iter_mut().enumerate() {
                *logit = out1_logits[class * plane + i];
            }
            let (class, probabilities) = class_and_softmax(&pixel);
            votes[usize::from(class)] += 1;
            confidence += f64::from(probabilities[usize::from(class)]);
        }
        let out1_class = (0..class_count).fold(0, |best, c| if votes[c] > votes[best] { c } else { best });
        if let Some(truth) = truth {
            check_mask(truth, width, height, width, height)?;
        }
        let known: Vec<usize> = (0..plane).filter(|&i| object[i] == 0 && truth.is_none_or(|t| t[i] == 0)).collect();
        let same = known.iter().filter(|&&i| classes[0][i] == classes[1][i]).count();
        Ok(ObjectChange {
            pixels: inside.len(),
            inside: before_after(true),
            outside: before_after(false),
            out1_class: out1_class as u8,
            out1_class_share: votes[out1_class] as f64 / inside.len() as f64,
            out1_confidence: confidence / inside.len() as f64,
            same_class_on_inliers: if known.is_empty() { f64::NAN } else { same as f64 / known.len() as f64 },
        })
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
