//! Training the demo model the paper's way, in two stages, with burn's autodiff.
//!
//! Stage 1 trains a narrow network of the RPL family on inlier scenes (cross-entropy on out1).
//! Stage 2 freezes it (BatchNorm in eval mode) and trains only the residual block's
//! `atten_aspp`, `bot_atten_aspp` and `proj_head` on scenes with pasted outliers.
//! Both stages checkpoint as they go and resume from the last checkpoint.

pub mod data;
pub mod losses;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use thiserror::Error;

use crate::model::{RplConfig, RplNetwork};
use crate::synthetic::{OutlierSet, SceneRng};
use crate::weights::safetensors::{SafetensorsCheckpoint, StorageType, write_safetensors};
use crate::weights::{NetworkTensors, WeightsError, commit_running_statistics, load_network_as};
use crate::model::aspp::Aspp;
use crate::model::residual_block::ResidualAnomalyBlock;
use data::{Batch, BatchSpec, training_batch};

/// Training scenes whose label frequencies set the class weights.
const CLASS_FREQUENCY_SCENES: usize = 100;

/// Everything that decides the trained model; the defaults made the bundled one.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub config: RplConfig,
    /// Generated scene size `[h, w]`; training crops are cut from it at its own scale.
    pub scene: [usize; 2],
    pub crop: [usize; 2],
    pub batch: usize,
    pub stage1_steps: usize,
    pub stage2_steps: usize,
    pub stage1_lr: f64,
    pub stage2_lr: f64,
    /// Stage 1's logit adjustment `tau` (see [`losses::logit_adjusted_cross_entropy`]).
    pub stage1_logit_adjustment: f32,
    /// Stage 1 ends with this many steps on larger crops, a second short cycle (its own poly
    /// schedule from `context_lr`): on the held-out scenes the cycle lifts mIoU, the crops' extra
    /// context a little more (see the model card).
    pub context_steps: usize,
    pub context_crop: [usize; 2],
    pub context_batch: usize,
    pub context_lr: f64,
    /// CoroCL: at most this many embeddings per kind (outlier, inlier) per step.
    pub contrast_samples: usize,
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            config: RplConfig { width_divisor: 8, num_classes: 19 },
            scene: [256, 512],
            crop: [128, 256],
            batch: 4,
            stage1_steps: 2800,
            stage2_steps: 1500,
            stage1_lr: 7e-4,
            stage2_lr: 3e-3,
            stage1_logit_adjustment: 0.5,
            context_steps: 400,
            context_crop: [256, 256],
            context_batch: 2,
            context_lr: 2e-4,
            contrast_samples: 512,
            seed: 1,
            checkpoint_every: 50,
        }
    }
}

impl TrainConfig {
    /// Stage 1's steps: on crops, then on context crops.
    pub fn stage1_total_steps(&self) -> usize {
        self.stage1_steps + self.context_steps
    }
}

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("cannot {what} {path}: {reason}")]
    Checkpoint { what: &'static str, path: String, reason: String },
}

/// One step's report, for progress bars.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub stage: u8,
    /// Steps done in this stage (1-based after the step).
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    /// The named parts of the loss.
    pub parts: Vec<(&'static str, f32)>,
    /// Seconds spent on this step.
    pub seconds: f64,
}

/// Where a run keeps its checkpoints and stage outputs.
struct RunDir(PathBuf);

impl RunDir {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn checkpoint_error(what: &'static str, path: &Path, reason: impl ToString) -> TrainError {
        TrainError::Checkpoint { what, path: path.display().to_string(), reason: reason.to_string() }
    }

    /// The step a stage's checkpoint reached, if there is one.
    fn saved_step(&self, stage: u8) -> Option<usize> {
        std::fs::read_to_string(self.file(&format!("stage{stage}.step"))).ok()?.trim().parse().ok()
    }

    fn save(&self, stage: u8, step: usize, network: &RplNetwork, optimizer: &ModuleOptimizer) -> Result<(), TrainError> {
        let model = self.file(&format!("stage{stage}.model.bpk"));
        commit_running_statistics(network);
        network.clone().save_file(&model).map_err(|e| Self::checkpoint_error("write", &model, e.to_string()))?;
        let optim = self.file(&format!("stage{stage}.optim.bpk"));
        optimizer.save(&optim).map_err(|e| Self::checkpoint_error("write", &optim, e.to_string()))?;
        let marker = self.file(&format!("stage{stage}.step"));
        std::fs::write(&marker, step.to_string()).map_err(|e| Self::checkpoint_error("write", &marker, e))
    }

    fn resume(
        &self,
        stage: u8,
        network: RplNetwork,
        optimizer: ModuleOptimizer,
    ) -> Result<(RplNetwork, ModuleOptimizer, usize), TrainError> {
        let Some(step) = self.saved_step(stage) else { return Ok((network, optimizer, 0)) };
        let model = self.file(&format!("stage{stage}.model.bpk"));
        let network = network.try_load_file(&model).map_err(|e| Self::checkpoint_error("read", &model, e.to_string()))?;
        let optim = self.file(&format!("stage{stage}.optim.bpk"));
        let optimizer = optimizer.load(&optim).map_err(|e| Self::checkpoint_error("read", &optim, e.to_string()))?;
        Ok((network, optimizer, step))
    }

    fn stage_output(&self, stage: u8) -> PathBuf {
        self.file(&format!("stage{stage}.safetensors"))
    }
}

/// The learning rate at `step` of `steps`: the paper's poly schedule with power 0.9.
pub fn poly_lr(base: f64, step: usize, steps: usize) -> f64 {
    base * (1.0 - step as f64 / steps as f64).max(0.0).powf(0.9)
}

/// Runs (or resumes) both stages in `dir` on `device` (an autodiff device); returns the trained
/// network on the device without autodiff.
pub fn train(
    cfg: &TrainConfig,
    dir: &Path,
    device: &Device,
    mut report: impl FnMut(&StepReport),
) -> Result<RplNetwork, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| RunDir::checkpoint_error("create", dir, e))?;
    let run = RunDir(dir.to_path_buf());
    if !run.stage_output(1).exists() {
        let network = train_segmentation(cfg, &run, device, &mut report)?;
        save_network(&network, &run.stage_output(1), StorageType::F32, device)?;
    }
    // Stage 2 always starts from the saved stage-1 network, so a fresh run and a resumed one train
    // from the same values.
    let stage1 = load_stage_output(&run.stage_output(1), cfg.config, device)?;
    let network = train_residual_block(cfg, &run, stage1, device, &mut report)?;
    Ok(network.valid())
}

fn load_stage_output(path: &Path, config: RplConfig, device: &Device) -> Result<RplNetwork, TrainError> {
    let source = SafetensorsCheckpoint::open(path)?;
    Ok(load_network_as(&source, config, device)?)
}

/// Writes a network as safetensors under the reference's names.
pub fn save_network(network: &RplNetwork, path: &Path, storage: StorageType, device: &Device) -> Result<(), TrainError> {
    let tensors = NetworkTensors::new(path.display().to_string(), network);
    write_safetensors(&tensors, storage, path, &device.clone().inner())?;
    Ok(())
}

/// The ASPP's image-pooling BatchNorm sees one value per image and channel: a batch of four has
/// no usable statistics (training-mode outputs then differ from eval-mode ones), so it trains as
/// a fixed affine map on its initial running statistics (mean 0, variance 1).
fn with_fixed_image_pool_statistics(mut aspp: Aspp) -> Aspp {
    aspp.img_conv.bn = aspp.img_conv.bn.map(|mut bn| {
        bn.training = bn.training.with_value(false);
        bn
    });
    aspp
}

/// Stage 1: the whole network learns the segmentation (out1) with cross-entropy.
pub struct SegmentationStage {
    pub network: RplNetwork,
    optimizer: ModuleOptimizer,
    /// Per-class weights of the cross-entropy `[classes]`.
    class_weights: Tensor<1>,
    /// The logit adjustment's `tau`.
    logit_adjustment: f32,
}

impl SegmentationStage {
    /// A freshly initialised network of `config` on `device` (an autodiff device), trained with
    /// these class weights and logit adjustment.
    pub fn new(config: RplConfig, class_weights: &[f32], logit_adjustment: f32, device: &Device) -> Self {
        let class_weights = Tensor::from_data(TensorData::new(class_weights.to_vec(), [class_weights.len()]), device);
        let mut network = RplNetwork::new(config, device);
        network.aspp = with_fixed_image_pool_statistics(network.aspp);
        Self { network, optimizer: AdamConfig::new().init(), class_weights, logit_adjustment }
    }

    /// One optimiser step on `batch`; returns the loss before the step.
    pub fn step(&mut self, batch: Batch, lr: f64) -> Vec<(&'static str, f32)> {
        let logits = self.network.forward_closed_set(batch.images);
        let loss = losses::logit_adjusted_cross_entropy(logits, batch.labels, self.class_weights.clone(), self.logit_adjustment);
        let grads = GradientsParams::from_grads(loss.backward(), &self.network);
        self.network = self.optimizer.step(lr, self.network.clone(), grads);
        vec![("ce", loss.into_scalar())]
    }
}

/// Stage 2: the segmentation network frozen (BatchNorm in eval mode), only the residual block's
/// `atten_aspp`, `bot_atten_aspp` and `proj_head` learn, with the paper's losses.
pub struct ResidualStage {
    pub network: RplNetwork,
    optimizer: ModuleOptimizer,
    /// Scene images per batch; the outlier-source images follow them.
    scenes: usize,
    contrast_samples: usize,
}

impl ResidualStage {
    pub fn new(segmentation: RplNetwork, scenes: usize, contrast_samples: usize) -> Self {
        let mut network = segmentation.freeze();
        let rb = network.residual_block;
        network.residual_block = ResidualAnomalyBlock {
            atten_aspp: with_fixed_image_pool_statistics(rb.atten_aspp.unfreeze()),
            bot_atten_aspp: rb.bot_atten_aspp.unfreeze(),
            proj_head: rb.proj_head.unfreeze(),
            atten_aspp_final: rb.atten_aspp_final,
        };
        Self { network, optimizer: AdamConfig::new().init(), scenes, contrast_samples }
    }

    /// One optimiser step on `batch` (scenes, then as many outlier-source images); returns the
    /// loss and its parts before the step. `rng` draws CoroCL's pixels.
    pub fn step(&mut self, batch: Batch, lr: f64, rng: &mut SceneRng) -> Vec<(&'static str, f32)> {
        let [_, _, h, w] = batch.images.dims();
        let (logits, projection) = self.network.forward_with_projection(batch.images);
        let scenes = self.scenes;
        let labels = batch.labels.slice(0..scenes);
        let (ce, mse, energy) = losses::residual_losses(logits.out1.slice(0..scenes), logits.out2.slice(0..scenes), &labels);
        let [n, _, h8, w8] = projection.dims();
        let small = labels_at(&batch.host_labels, n, [h, w], [h8, w8]);
        let (contrast, contrast_floor) = losses::contrastive_loss(projection, &small, self.contrast_samples, rng)
            .unwrap_or_else(|| (ce.clone().zeros_like(), 0.0));
        let parts = losses::RplLosses { inlier_ce: ce, inlier_entropy: mse, outlier_energy: energy, contrast };
        let loss = parts.total();
        let grads = GradientsParams::from_grads(loss.backward(), &self.network);
        self.network = self.optimizer.step(lr, self.network.clone(), grads);
        let scalar = |t: burn::tensor::Tensor<1>| -> f32 { t.into_scalar() };
        vec![
            ("loss", scalar(loss)),
            ("ce", scalar(parts.inlier_ce)),
            ("ent", scalar(parts.inlier_entropy)),
            ("energy", scalar(parts.outlier_energy)),
            ("contrast", scalar(parts.contrast)),
            // The least InfoNCE can reach with this step's sample counts.
            ("contrast_floor", contrast_floor),
        ]
    }
}

fn train_segmentation(
    cfg: &TrainConfig,
    run: &RunDir,
    device: &Device,
    report: &mut impl FnMut(&StepReport),
) -> Result<RplNetwork, TrainError> {
    let spec = BatchSpec { scene: cfg.scene, crop: cfg.crop, batch: cfg.batch, outliers: OutlierSet::None, with_sources: false };
    let weights = data::class_weights(&spec, cfg.config.num_classes, CLASS_FREQUENCY_SCENES);
    let context = BatchSpec { crop: cfg.context_crop, batch: cfg.context_batch, ..spec };
    let mut stage = SegmentationStage::new(cfg.config, &weights, cfg.stage1_logit_adjustment, device);
    let start;
    (stage.network, stage.optimizer, start) = run.resume(1, stage.network, stage.optimizer)?;
    let steps = cfg.stage1_total_steps();
    for step in start..steps {
        let started = Instant::now();
        let (batch, lr) = match step.checked_sub(cfg.stage1_steps) {
            None => (training_batch(&spec, cfg.seed, step, device), poly_lr(cfg.stage1_lr, step, cfg.stage1_steps)),
            Some(k) => (training_batch(&context, cfg.seed, step, device), poly_lr(cfg.context_lr, k, cfg.context_steps)),
        };
        let parts = stage.step(batch, lr);
        report(&StepReport { stage: 1, step: step + 1, steps, loss: parts[0].1, parts, seconds: started.elapsed().as_secs_f64() });
        if (step + 1) % cfg.checkpoint_every == 0 || step + 1 == steps {
            run.save(1, step + 1, &stage.network, &stage.optimizer)?;
        }
    }
    Ok(stage.network)
}

/// Labels at the embeddings' resolution: the label at the centre of each output cell.
fn labels_at(host_labels: &[u8], n: usize, size: [usize; 2], small: [usize; 2]) -> Vec<u8> {
    let [h, w] = size;
    let mut out = Vec::with_capacity(n * small[0] * small[1]);
    for image in 0..n {
        for i in 0..small[0] {
            let y = ((i * h + h / 2) / small[0]).min(h - 1);
            for j in 0..small[1] {
                let x = ((j * w + w / 2) / small[1]).min(w - 1);
                out.push(host_labels[image * h * w + y * w + x]);
            }
        }
    }
    out
}

fn train_residual_block(
    cfg: &TrainConfig,
    run: &RunDir,
    segmentation: RplNetwork,
    device: &Device,
    report: &mut impl FnMut(&StepReport),
) -> Result<RplNetwork, TrainError> {
    // Freezing is applied after loading, so a resumed network is frozen the same way.
    let (network, optimizer, start) = run.resume(2, segmentation, AdamConfig::new().init())?;
    let mut stage = ResidualStage::new(network, cfg.batch, cfg.contrast_samples);
    stage.optimizer = optimizer;
    let spec = BatchSpec { scene: cfg.scene, crop: cfg.crop, batch: cfg.batch, outliers: OutlierSet::Training, with_sources: true };
    for step in start..cfg.stage2_steps {
        let started = Instant::now();
        let mut rng = SceneRng::new(cfg.seed ^ (step as u64).wrapping_mul(0x9e37_79b9));
        let batch = training_batch(&spec, cfg.seed, step, device);
        let mut parts = stage.step(batch, poly_lr(cfg.stage2_lr, step, cfg.stage2_steps), &mut rng);
        let loss = parts.remove(0).1;
        report(&StepReport { stage: 2, step: step + 1, steps: cfg.stage2_steps, loss, parts, seconds: started.elapsed().as_secs_f64() });
        if (step + 1) % cfg.checkpoint_every == 0 || step + 1 == cfg.stage2_steps {
            run.save(2, step + 1, &stage.network, &stage.optimizer)?;
        }
    }
    Ok(stage.network)
}
