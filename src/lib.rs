//! rpl-web: the RPL anomaly-segmentation network (Residual Pattern Learning, Liu et al.,
//! ICCV 2023) in Rust with burn, for the browser (WebGPU) and the command line.
//!
//! Layers, from the bottom: [`model`] (burn modules, backend-generic), [`weights`] (checkpoint
//! formats and key mapping), [`scoring`], [`preprocess`] and [`visualize`] (images in and out),
//! [`cpu`] (kernels of our own for the CPU backend), `gpu` (on wgpu: burn's implicit-product
//! convolution on register tiles; natively, kernel launch counts), [`inference`] (one image
//! through it all), [`backend`] (where it runs); [`metrics`] (the
//! paper's AUROC / AP / FPR95 and mIoU), [`analysis`] (what the page reads from a result),
//! [`provenance`] (the version, the source hash and a model file's SHA-256);
//! [`synthetic`] (generated street scenes), `training` (the demo model's two stages) and
//! `evaluation` (a model on the held-out scenes).

pub mod analysis;
pub mod backend;
pub mod cpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod benchmark;
#[cfg(not(target_arch = "wasm32"))]
pub mod datasets;
#[cfg(not(target_arch = "wasm32"))]
pub mod evaluation;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod provenance;
pub mod scoring;
pub mod synthetic;
#[cfg(feature = "train")]
pub mod training;
pub mod visualize;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

#[cfg(not(target_arch = "wasm32"))]
pub use inference::predict;
pub use inference::{PredictOptions, Prediction, predict_async};
pub use model::{RplConfig, RplLogits, RplNetwork};
pub use scoring::ScoreMode;
