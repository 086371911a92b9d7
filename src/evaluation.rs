//! Evaluating a network: on generated scenes (inlier mIoU of both heads, how much the residual
//! block changes the segmentation, AUROC / AP / FPR95 of RPL's score against the closed-set one),
//! and on the public benchmarks' folders, streamed image by image, from the network or from
//! saved score maps.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use crate::datasets::{DatasetKind, Listing, Sample, Skipped, read_label};
use crate::inference::{InferenceError, LiveResult, PredictOptions, predict};
use crate::metrics::{ConfusionMatrix, MetricsError, OodMetrics, OodScorePool};
use crate::model::RplNetwork;
use crate::npy;
use crate::preprocess::RgbImage;
use crate::scoring::ScoreMode;
use crate::synthetic::{HELD_OUT_SEED_BASE, LABEL_OUTLIER, LABEL_VOID, OutlierSet, Scene, TRAINING_SEED_BASE, generate_scene};

/// The fixed held-out set: `count` scenes from the evaluation seed range, with outliers of `kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct SyntheticReport {
    pub images: usize,
    /// The anomaly score both heads were evaluated with.
    pub score: ScoreMode,
    /// Inlier mIoU of argmax(out1), the closed-set segmentation.
    pub miou_out1: f64,
    /// Inlier mIoU of argmax(out2), with the residual block.
    pub miou_out2: f64,
    /// Share of inlier pixels where argmax(out2) equals argmax(out1).
    pub agreement: f64,
    /// The blurred score of out2 (with RPL; energy is the paper's).
    pub rpl: OodMetrics,
    /// The same score of out1 (the closed-set baseline).
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

/// What `rpl eval --json` writes for the generated held-out set: the set, the network's figures
/// and the colour-only control in one document.
#[derive(Debug, Clone, Serialize)]
pub struct SyntheticEvaluation {
    pub dataset: DatasetKind,
    pub set: HeldOutSet,
    #[serde(flatten)]
    pub report: SyntheticReport,
    /// [`nearest_mean_colour_miou`] on the same scenes.
    pub colour_only_miou: f64,
}

/// Runs the network over the held-out set, scoring both heads in `mode`; `progress(done, total)`
/// after each image.
pub fn evaluate_synthetic(
    network: &RplNetwork,
    set: &HeldOutSet,
    mode: ScoreMode,
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
        let ([classes1, classes2], [score1, score2]) =
            crate::cpu::finish_on_pool(device, async { LiveResult::run(network, &image, device).class_maps_and_scores(mode).await })?;
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
        score: mode,
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

/// Where a dataset evaluation's anomaly scores come from.
pub enum ScoreSource<'a> {
    /// Run the network: RPL's score (out2) and the closed-set baseline's (out1), both `mode`.
    Network { network: &'a RplNetwork, device: &'a Device, mode: ScoreMode },
    /// Score maps saved earlier (`NAME.npy`, float32 H x W): score once, evaluate many times.
    Saved(&'a Path),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DatasetOptions<'a> {
    /// Evaluate the first `limit` images only.
    pub limit: Option<usize>,
    /// Write each image's RPL score map here as `NAME.npy` (what the SMIYC server takes).
    pub save_scores: Option<&'a Path>,
}

/// One image's own AUROC / AP / FPR95 (`None` where it lacks OoD or inlier pixels).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub name: String,
    pub rpl: Option<OodMetrics>,
    pub baseline: Option<OodMetrics>,
}

/// A dataset's figures; as JSON, what `rpl eval --json` writes for a benchmark folder.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    #[serde(rename = "dataset")]
    pub kind: DatasetKind,
    /// The score the network ran with; `None` for saved score maps (computed elsewhere).
    pub score: Option<ScoreMode>,
    /// Images evaluated, in the dataset's order.
    #[serde(rename = "per_image")]
    pub images: Vec<ImageReport>,
    /// Every evaluated pixel pooled, as the paper's tables.
    pub rpl: OodMetrics,
    /// The same for out1 (only when the network ran).
    pub baseline: Option<OodMetrics>,
    /// Inlier mIoU of argmax(out1), where the dataset has class labels and the network ran.
    pub miou_out1: Option<f64>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetEvaluationError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("pooled over the dataset: {0}")]
    Metrics(#[from] MetricsError),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What one image adds to the pools.
struct ImageScores {
    height: usize,
    width: usize,
    rpl: Vec<f32>,
    baseline: Option<Vec<f32>>,
    classes: Option<Vec<u8>>,
}

/// Evaluates a dataset image by image, pooling the pixels as the paper does; memory holds one
/// image and the pools (which grow with the distinct scores seen, not with the images).
/// Per-file problems (an unreadable image or label, a label or saved score map of another
/// size) skip that image and are reported; `progress(done, total)` after each image.
pub fn evaluate_dataset(
    listing: &Listing,
    source: &ScoreSource,
    options: DatasetOptions,
    mut progress: impl FnMut(usize, usize, Option<&Skipped>),
) -> Result<DatasetReport, DatasetEvaluationError> {
    let samples = &listing.samples[..options.limit.unwrap_or(usize::MAX).min(listing.samples.len())];
    let (mut rpl, mut baseline) = (OodScorePool::new(), OodScorePool::new());
    let mut confusion: Option<ConfusionMatrix> = None;
    let mut images = Vec::with_capacity(samples.len());
    let mut skipped = listing.skipped.clone();
    let classes = match source {
        ScoreSource::Network { network, .. } => network.config.num_classes,
        ScoreSource::Saved(_) => 0,
    };
    for (index, sample) in samples.iter().enumerate() {
        let outcome = score_image(sample, source, options.save_scores)?.and_then(|scores| {
            let mask = read_label(&sample.ood_label, scores.width, scores.height).map_err(|e| skip(&sample.ood_label, e))?;
            let class_labels = match (&scores.classes, &sample.class_label) {
                (Some(_), Some(path)) => Some(read_label(path, scores.width, scores.height).map_err(|e| skip(path, e))?),
                _ => None,
            };
            // The image's own pools, merged into the dataset's below (one sort per map). A NaN
            // score cannot be ranked: that image is skipped, not the run.
            let pool = |score: &[f32]| {
                let mut pool = OodScorePool::new();
                pool.add(score, &mask).map(|()| pool).map_err(|e| skip(&sample.image, e))
            };
            let image_rpl = pool(&scores.rpl)?;
            let image_baseline = scores.baseline.as_deref().map(pool).transpose()?;
            Ok((scores, class_labels, image_rpl, image_baseline))
        });
        let (scores, class_labels, image_rpl, image_baseline) = match outcome {
            Ok(parts) => parts,
            Err(why) => {
                skipped.push(why);
                progress(index + 1, samples.len(), skipped.last());
                continue;
            }
        };
        let report = ImageReport {
            name: sample.name.clone(),
            rpl: image_rpl.metrics().ok(),
            baseline: image_baseline.as_ref().and_then(|pool| pool.metrics().ok()),
        };
        rpl.merge(image_rpl);
        if let Some(pool) = image_baseline {
            baseline.merge(pool);
        }
        if let (Some(predicted), Some(labels)) = (&scores.classes, &class_labels) {
            confusion.get_or_insert_with(|| ConfusionMatrix::new(classes)).add(predicted, labels)?;
        }
        images.push(report);
        progress(index + 1, samples.len(), None);
    }
    let ran_network = matches!(source, ScoreSource::Network { .. });
    Ok(DatasetReport {
        kind: listing.kind,
        score: match source {
            ScoreSource::Network { mode, .. } => Some(*mode),
            ScoreSource::Saved(_) => None,
        },
        rpl: rpl.metrics()?,
        baseline: if ran_network && !images.is_empty() { Some(baseline.metrics()?) } else { None },
        miou_out1: confusion.map(|c| c.mean_iou()),
        images,
        skipped,
    })
}

fn skip(file: &Path, reason: impl std::fmt::Display) -> Skipped {
    Skipped { file: file.to_path_buf(), reason: reason.to_string() }
}

/// An image's scores: the outer error stops the run (the backend failed, a score file cannot be
/// written), the inner one skips the image.
fn score_image(
    sample: &Sample,
    source: &ScoreSource,
    save: Option<&Path>,
) -> Result<Result<ImageScores, Skipped>, DatasetEvaluationError> {
    let scores = match source {
        ScoreSource::Network { network, device, mode } => {
            let image = match std::fs::read(&sample.image) {
                Ok(bytes) => RgbImage::decode(&sample.image.display().to_string(), &bytes),
                Err(e) => return Ok(Err(skip(&sample.image, format!("cannot read the image: {e}")))),
            };
            let image = match image {
                Ok(image) => image,
                Err(e) => return Ok(Err(skip(&sample.image, e))),
            };
            let options = PredictOptions { mode: *mode, closed_set_score: true, keep_logits: false };
            let prediction = predict(network, &image, options, device)?;
            ImageScores {
                height: prediction.height,
                width: prediction.width,
                rpl: prediction.score,
                baseline: prediction.closed_set_score,
                classes: Some(prediction.classes),
            }
        }
        ScoreSource::Saved(dir) => match read_score_map(&dir.join(format!("{}.npy", sample.name))) {
            Ok(scores) => scores,
            Err(why) => return Ok(Err(why)),
        },
    };
    if let Some(dir) = save {
        let path = dir.join(format!("{}.npy", sample.name));
        let write = |reason: String| DatasetEvaluationError::Write { path: path.clone(), reason };
        let file = std::fs::File::create(&path).map_err(|e| write(e.to_string()))?;
        npy::write_f32(std::io::BufWriter::new(file), &[scores.height, scores.width], &scores.rpl).map_err(|e| write(e.to_string()))?;
    }
    Ok(Ok(scores))
}

fn read_score_map(path: &Path) -> Result<ImageScores, Skipped> {
    let file = std::fs::File::open(path).map_err(|e| skip(path, format!("no saved score map ({e})")))?;
    let (shape, rpl) = npy::read_f32(std::io::BufReader::new(file)).map_err(|e| skip(path, e))?;
    match shape[..] {
        [height, width] | [1, height, width] => Ok(ImageScores { height, width, rpl, baseline: None, classes: None }),
        _ => Err(skip(path, format!("a score map is H x W, this array is {shape:?}"))),
    }
}
