//! One image through the network: class map, anomaly scores and (optionally) both heads' logits.
//! Results are read back asynchronously, as the browser requires; natively [`predict`] waits.

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

/// What to compute besides the class map and the anomaly score of out2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    pub mode: ScoreMode,
    /// Also score out1, the closed-set network without the RPL block (for comparison).
    pub closed_set_score: bool,
    /// Also return both heads' logits.
    pub keep_logits: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self { mode: ScoreMode::Energy, closed_set_score: false, keep_logits: false }
    }
}

/// What the network says about one image, at the image's size.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub width: usize,
    pub height: usize,
    /// Train id per pixel: argmax of out1, the closed-set segmentation.
    pub classes: Vec<u8>,
    pub mode: ScoreMode,
    /// The blurred anomaly score of out2 (with RPL), row-major H x W.
    pub score: Vec<f32>,
    /// The same score of out1 (without RPL), when asked for.
    pub closed_set_score: Option<Vec<f32>>,
    /// out1 and out2 as `[classes, H, W]`, when asked for.
    pub logits: Option<[Vec<f32>; 2]>,
}

/// The results, computed (or queued) on the device, not yet read back.
struct DeviceResults {
    classes: Tensor<4, Int>,
    score: Tensor<3>,
    closed_set_score: Option<Tensor<3>>,
    logits: Option<[Tensor<4>; 2]>,
}

fn compute(network: &RplNetwork, image: &RgbImage, options: PredictOptions, device: &Device) -> DeviceResults {
    let logits = network.forward(image.to_input(device));
    DeviceResults {
        classes: logits.out1.clone().argmax(1),
        score: anomaly_score(logits.out2.clone(), options.mode),
        closed_set_score: options.closed_set_score.then(|| anomaly_score(logits.out1.clone(), options.mode)),
        logits: options.keep_logits.then_some([logits.out1, logits.out2]),
    }
}

/// Runs and waits for the results (native backends; the browser cannot block).
#[cfg(not(target_arch = "wasm32"))]
pub fn predict(
    network: &RplNetwork,
    image: &RgbImage,
    options: PredictOptions,
    device: &Device,
) -> Result<Prediction, InferenceError> {
    futures_lite::future::block_on(predict_async(network, image, options, device))
}

/// Runs and reads back asynchronously (required in the browser).
pub async fn predict_async(
    network: &RplNetwork,
    image: &RgbImage,
    options: PredictOptions,
    device: &Device,
) -> Result<Prediction, InferenceError> {
    let results = compute(network, image, options, device);
    let classes = results.classes.into_data_async().await;
    let score = results.score.into_data_async().await;
    let closed = match results.closed_set_score {
        Some(t) => Some(t.into_data_async().await),
        None => None,
    };
    let logits = match results.logits {
        Some([out1, out2]) => Some([out1.into_data_async().await, out2.into_data_async().await]),
        None => None,
    };
    assemble(image, options, classes, score, closed, logits)
}

type Read<E> = Result<TensorData, E>;

fn assemble<E: std::fmt::Debug>(
    image: &RgbImage,
    options: PredictOptions,
    classes: Read<E>,
    score: Read<E>,
    closed_set_score: Option<Read<E>>,
    logits: Option<[Read<E>; 2]>,
) -> Result<Prediction, InferenceError> {
    Ok(Prediction {
        width: image.width,
        height: image.height,
        classes: read_classes(classes, "class map")?,
        mode: options.mode,
        score: read_floats(score, "anomaly score")?,
        closed_set_score: closed_set_score.map(|d| read_floats(d, "closed-set score")).transpose()?,
        logits: match logits {
            Some([out1, out2]) => Some([read_floats(out1, "out1 logits")?, read_floats(out2, "out2 logits")?]),
            None => None,
        },
    })
}

/// Both heads' logits kept on the device, for follow-up questions about one image without
/// running the network again: other score modes, class maps, one pixel's probabilities.
pub struct LiveResult {
    pub width: usize,
    pub height: usize,
    logits: crate::model::RplLogits,
}

fn read_floats(data: Result<TensorData, impl std::fmt::Debug>, what: &'static str) -> Result<Vec<f32>, InferenceError> {
    let failed = |reason: String| InferenceError::Readback { what, reason };
    // A float16 network's outputs are widened here, where they leave the device.
    data.map_err(|e| failed(format!("{e:?}")))?.convert::<f32>().try_into_vec::<f32>().map_err(|e| failed(format!("{e:?}")))
}

fn read_classes(data: Result<TensorData, impl std::fmt::Debug>, what: &'static str) -> Result<Vec<u8>, InferenceError> {
    let data = data.map_err(|e| InferenceError::Readback { what, reason: format!("{e:?}") })?;
    // Class ids are below 256; the integer width of the readback depends on the backend.
    Ok(data.iter::<i64>().map(|c| c as u8).collect())
}

impl LiveResult {
    pub fn run(network: &RplNetwork, image: &RgbImage, device: &Device) -> Self {
        Self { width: image.width, height: image.height, logits: network.forward(image.to_input(device)) }
    }

    fn heads(&self) -> [Tensor<4>; 2] {
        [self.logits.out1.clone(), self.logits.out2.clone()]
    }

    /// The blurred score of out1 and of out2, row-major H x W each.
    pub async fn scores(&self, mode: ScoreMode) -> Result<[Vec<f32>; 2], InferenceError> {
        let [out1, out2] = self.heads().map(|l| anomaly_score(l, mode));
        Ok([read_floats(out1.into_data_async().await, "out1 score")?, read_floats(out2.into_data_async().await, "out2 score")?])
    }

    /// Train ids (argmax) of out1 and of out2.
    pub async fn class_maps(&self) -> Result<[Vec<u8>; 2], InferenceError> {
        let [c1, c2] = self.heads().map(|l| l.argmax(1));
        Ok([read_classes(c1.into_data_async().await, "out1 classes")?, read_classes(c2.into_data_async().await, "out2 classes")?])
    }

    /// Both heads' logits at one pixel (`x < width`, `y < height`).
    pub async fn pixel_logits(&self, x: usize, y: usize) -> Result<[Vec<f32>; 2], InferenceError> {
        let [l1, l2] = self.heads().map(|l| {
            let classes = l.dims()[1];
            l.slice([0..1, 0..classes, y..y + 1, x..x + 1])
        });
        Ok([read_floats(l1.into_data_async().await, "out1 logits")?, read_floats(l2.into_data_async().await, "out2 logits")?])
    }
}
