//! One image through the network: class map, anomaly score and (optionally) both heads' logits.

use burn::tensor::kind::Basic;
use burn::tensor::{Device, Int, Tensor, TensorData};
use thiserror::Error;

use crate::model::RplNetwork;
use crate::preprocess::RgbImage;
use crate::scoring::{ScoreMode, anomaly_score};

#[derive(Debug, Error)]
pub enum InferenceError {
    #[error("reading the {what} back from the device failed: {reason}")]
    Readback { what: &'static str, reason: String },
}

/// What the network says about one image, at the image's size.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub width: usize,
    pub height: usize,
    /// Train id per pixel: argmax of out1, the closed-set segmentation.
    pub classes: Vec<u8>,
    /// The blurred anomaly score of out2, row-major H x W.
    pub score: Vec<f32>,
    pub mode: ScoreMode,
    /// out1 and out2 as `[classes, H, W]`, when asked for.
    pub logits: Option<[Vec<f32>; 2]>,
}

pub fn predict(
    network: &RplNetwork,
    image: &RgbImage,
    mode: ScoreMode,
    keep_logits: bool,
    device: &Device,
) -> Result<Prediction, InferenceError> {
    let logits = network.forward(image.to_input(device));
    let classes = logits.out1.clone().argmax(1);
    let score = anomaly_score(logits.out2.clone(), mode);
    let kept = if keep_logits { Some([read_f32(logits.out1, "out1")?, read_f32(logits.out2, "out2")?]) } else { None };
    Ok(Prediction {
        width: image.width,
        height: image.height,
        classes: read_classes(classes)?,
        score: read_f32(score, "anomaly score")?,
        mode,
        logits: kept,
    })
}

fn read<const D: usize, K: Basic>(tensor: Tensor<D, K>, what: &'static str) -> Result<TensorData, InferenceError> {
    tensor.try_into_data().map_err(|e| InferenceError::Readback { what, reason: format!("{e:?}") })
}

fn read_f32<const D: usize>(tensor: Tensor<D>, what: &'static str) -> Result<Vec<f32>, InferenceError> {
    read(tensor, what)?.try_into_vec::<f32>().map_err(|e| InferenceError::Readback { what, reason: format!("{e:?}") })
}

fn read_classes(classes: Tensor<4, Int>) -> Result<Vec<u8>, InferenceError> {
    // Class ids are below 256; the integer width of the readback depends on the backend.
    Ok(read(classes, "class map")?.iter::<i64>().map(|c| c as u8).collect())
}
