//! Evaluating a network on generated scenes: inlier mIoU of both heads, how much the residual
//! block changes the segmentation, and AUROC / AP / FPR95 of RPL's score against the closed-set one.

use burn::tensor::Device;

use futures_lite::future::block_on;

use crate::inference::{InferenceError, LiveResult};
use crate::metrics::{ConfusionMatrix, MetricsError, OodMetrics, OodScorePool};
use crate::model::RplNetwork;
use crate::preprocess::RgbImage;
use crate::scoring::ScoreMode;
use crate::synthetic::{HELD_OUT_SEED_BASE, LABEL_OUTLIER, LABEL_VOID, OutlierSet, Scene, TRAINING_SEED_BASE, generate_scene};

/// The fixed held-out set: `count` scenes from the evaluation seed range, with outliers of `kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldOutSet {
    pub count: usize,
    pub size: [usize; 2],
    pub outliers: OutlierSet,
}

impl HeldOutSet {
    pub fn scene(&self, index: usize) -> Scene {
        generate_scene(HELD_OUT_SEED_BASE + index as u64, self.size[1], self.size[0], self.outliers)
    }
}

#[derive(Debug, Clone)]
pub struct SyntheticReport {
    pub images: usize,
    /// Inlier mIoU of argmax(out1), the closed-set segmentation.
    pub miou_out1: f64,
    /// Inlier mIoU of argmax(out2), with the residual block.
    pub miou_out2: f64,
    /// Share of inlier pixels where argmax(out2) equals argmax(out1).
    pub agreement: f64,
    /// Blurred energy of out2 (the paper's RPL score).
    pub rpl: OodMetrics,
    /// Blurred energy of out1 (the closed-set baseline).
    pub baseline: OodMetrics,
    /// IoU per class of argmax(out1) (`None`: class absent).
    pub iou_out1: Vec<Option<f64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Runs the network over the held-out set; `progress(done, total)` after each image.
pub fn evaluate_synthetic(
    network: &RplNetwork,
    set: &HeldOutSet,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<SyntheticReport, EvaluationError> {
    let classes = network.config.num_classes;
    let (mut cm1, mut cm2) = (ConfusionMatrix::new(classes), ConfusionMatrix::new(classes));
    let (mut rpl, mut baseline) = (OodScorePool::new(), OodScorePool::new());
    let (mut agree, mut inliers) = (0u64, 0u64);
    for index in 0..set.count {
        let scene = set.scene(index);
        let image = RgbImage::from_interleaved(scene.width, scene.height, 3, &scene.rgb8).expect("generated scenes are valid RGB");
        // Class maps and scores of both heads, without reading the logits back.
        let live = LiveResult::run(network, &image, device);
        let [classes1, classes2] = block_on(live.class_maps())?;
        let [score1, score2] = block_on(live.scores(ScoreMode::Energy))?;
        cm1.add(&classes1, &scene.labels)?;
        cm2.add(&classes2, &scene.labels)?;
        for ((&label, &c1), &c2) in scene.labels.iter().zip(&classes1).zip(&classes2) {
            if label != LABEL_OUTLIER && label != LABEL_VOID {
                inliers += 1;
                agree += u64::from(c1 == c2);
            }
        }
        let mask = scene.ood_mask();
        rpl.add(&score2, &mask)?;
        baseline.add(&score1, &mask)?;
        progress(index + 1, set.count);
    }
    Ok(SyntheticReport {
        images: set.count,
        miou_out1: cm1.mean_iou(),
        miou_out2: cm2.mean_iou(),
        agreement: agree as f64 / inliers.max(1) as f64,
        rpl: rpl.metrics()?,
        baseline: baseline.metrics()?,
        iou_out1: cm1.iou_per_class(),
    })
}

/// The "colour only" control: each pixel gets the class whose mean colour (over `fit` training
/// scenes) is nearest to its own. If the data only needed colour, this would score like the network.
pub fn nearest_mean_colour_miou(set: &HeldOutSet, fit: usize, classes: usize) -> f64 {
    let mut sums = vec![[0f64; 3]; classes];
    let mut counts = vec![0u64; classes];
    for i in 0..fit {
        let scene = generate_scene(TRAINING_SEED_BASE + i as u64, set.size[1], set.size[0], OutlierSet::None);
        for (px, &label) in scene.rgb8.chunks_exact(3).zip(&scene.labels) {
            if usize::from(label) < classes {
                for c in 0..3 {
                    sums[usize::from(label)][c] += f64::from(px[c]);
                }
                counts[usize::from(label)] += 1;
            }
        }
    }
    let means: Vec<(u8, [f64; 3])> = (0..classes)
        .filter(|&k| counts[k] > 0)
        .map(|k| (k as u8, sums[k].map(|s| s / counts[k] as f64)))
        .collect();
    let mut confusion = ConfusionMatrix::new(classes);
    for index in 0..set.count {
        let scene = set.scene(index);
        let predicted: Vec<u8> = scene
            .rgb8
            .chunks_exact(3)
            .map(|px| {
                let distance = |m: &[f64; 3]| (0..3).map(|c| (f64::from(px[c]) - m[c]).powi(2)).sum::<f64>();
                means.iter().min_by(|a, b| distance(&a.1).total_cmp(&distance(&b.1))).map_or(0, |m| m.0)
            })
            .collect();
        confusion.add(&predicted, &scene.labels).expect("same size");
    }
    confusion.mean_iou()
}
