//! One image through the network: class map, anomaly scores and (optionally) both heads' logits.
//! Full-resolution maps are made in bands of rows (see [`LiveResult`]). Results are read back
//! asynchronously, as the browser requires; natively [`predict`] waits.

use std::fmt::Display;
use std::ops::Range;

use burn::tensor::kind::Basic;
use burn::tensor::{Device, Int, Tensor, TensorData};
use thiserror::Error;

use crate::model::{DecoderLogits, RplNetwork, resize_rows};
use crate::preprocess::RgbImage;
use crate::scoring::{ScoreMode, gaussian_blur, unblurred_score};

#[derive(Debug, Error)]
pub enum InferenceError {
    #[error("reading the {head} {what} back from the device failed: {reason}")]
    Readback { head: &'static str, what: &'static str, reason: String },
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

/// Runs and waits for the results (native backends; the browser cannot block).
#[cfg(not(target_arch = "wasm32"))]
pub fn predict(
    network: &RplNetwork,
    image: &RgbImage,
    options: PredictOptions,
    device: &Device,
) -> Result<Prediction, InferenceError> {
    crate::cpu::finish_on_pool(device, predict_async(network, image, options, device))
}

/// Runs and reads back asynchronously (required in the browser).
pub async fn predict_async(
    network: &RplNetwork,
    image: &RgbImage,
    options: PredictOptions,
    device: &Device,
) -> Result<Prediction, InferenceError> {
    let live = LiveResult::run(network, image, device);
    let (classes, closed_set_score) = match options.closed_set_score {
        true => live.class_map_and_score(Head::Out1, options.mode).await.map(|(classes, score)| (classes, Some(score)))?,
        false => (live.class_map(Head::Out1).await?, None),
    };
    let score = live.score(Head::Out2, options.mode).await?;
    let logits = match options.keep_logits {
        true => Some([live.logits(Head::Out1).await?, live.logits(Head::Out2).await?]),
        false => None,
    };
    Ok(Prediction { width: image.width, height: image.height, classes, mode: options.mode, score, closed_set_score, logits })
}

/// The network's two heads: out1, the closed-set segmentation network, and out2, the same
/// network with the RPL residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    Out1,
    Out2,
}

impl Head {
    /// In the order of every `[out1, out2]` pair.
    pub const BOTH: [Head; 2] = [Head::Out1, Head::Out2];

    /// The name used by the page and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Out1 => "out1",
            Self::Out2 => "out2",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::BOTH.into_iter().find(|h| h.name() == name)
    }

    /// Its place in an `[out1, out2]` pair.
    pub fn index(self) -> usize {
        match self {
            Self::Out1 => 0,
            Self::Out2 => 1,
        }
    }
}

/// Full-resolution logits are made at most this many bytes (float32) of one head at a time: a
/// quarter of the 128 MiB every WebGPU adapter can bind, whatever the image size.
pub const OUTPUT_BAND_BYTES: usize = 32 << 20;

/// Both heads' logits kept on the device, for follow-up questions about one image without
/// running the network again: other score modes, class maps, one pixel's probabilities.
/// They are kept at the decoder's resolution; every full-resolution map is made from them in
/// bands of rows (a 2048x1024 frame's logits alone would take 152 MB per head).
pub struct LiveResult {
    pub width: usize,
    pub height: usize,
    logits: DecoderLogits,
    rows_per_band: usize,
}

fn read_floats(data: Result<TensorData, impl Display>, head: Head, what: &'static str) -> Result<Vec<f32>, InferenceError> {
    let failed = |reason: &dyn Display| InferenceError::Readback { head: head.name(), what, reason: reason.to_string() };
    // A float16 network's outputs are widened here, where they leave the device.
    data.map_err(|e| failed(&e))?.convert::<f32>().try_into_vec::<f32>().map_err(|e| failed(&e))
}

/// Each pixel's class (the largest logit's), `[N, H, W]`.
fn class_ids(logits: Tensor<4>) -> Tensor<3, Int> {
    crate::cpu::class_argmax::class_argmax_on_flex(&logits).unwrap_or_else(|| logits.argmax(1).squeeze_dim(1))
}

fn read_classes(data: Result<TensorData, impl Display>, head: Head) -> Result<Vec<u8>, InferenceError> {
    let data = data.map_err(|e| InferenceError::Readback { head: head.name(), what: "classes", reason: e.to_string() })?;
    // Class ids are below 256; the integer width of the readback depends on the backend.
    Ok(data.iter::<i64>().map(|c| c as u8).collect())
}

impl LiveResult {
    pub fn run(network: &RplNetwork, image: &RgbImage, device: &Device) -> Self {
        Self::new(network.forward_to_decoder(image.to_input(device)))
    }

    /// From a forward pass already queued (one image).
    pub fn new(logits: DecoderLogits) -> Self {
        let [height, width] = logits.image_size;
        Self { width, height, logits, rows_per_band: 0 }.with_band_bytes(OUTPUT_BAND_BYTES)
    }

    /// Makes full-resolution maps at most `bytes` of one head's logits at a time (at least one row).
    pub fn with_band_bytes(mut self, bytes: usize) -> Self {
        let row_bytes = self.logits.out1.dims()[1] * self.width * size_of::<f32>();
        self.rows_per_band = (bytes / row_bytes.max(1)).max(1);
        self
    }

    /// The row ranges the full-resolution maps are made in.
    pub fn bands(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let (height, rows) = (self.height, self.rows_per_band);
        (0..height).step_by(rows).map(move |start| start..(start + rows).min(height))
    }

    fn head(&self, head: Head) -> &Tensor<4> {
        match head {
            Head::Out1 => &self.logits.out1,
            Head::Out2 => &self.logits.out2,
        }
    }

    /// Image rows `rows` of `head`'s logits at the image's resolution.
    fn head_rows(&self, head: Head, rows: Range<usize>) -> Tensor<4> {
        resize_rows(self.head(head).clone(), self.logits.image_size, rows)
    }

    /// `per_band` of each band of `head`'s full-resolution logits, joined along the rows.
    fn by_bands<K: Basic>(&self, head: Head, per_band: impl Fn(Tensor<4>) -> Tensor<3, K>) -> Tensor<3, K> {
        Tensor::cat(self.bands().map(|rows| per_band(self.head_rows(head, rows))).collect(), 1)
    }

    /// The blurred score of `head`, row-major H x W.
    pub async fn score(&self, head: Head, mode: ScoreMode) -> Result<Vec<f32>, InferenceError> {
        let score = gaussian_blur(self.by_bands(head, |logits| unblurred_score(logits, mode)));
        read_floats(score.into_data_async().await, head, "score")
    }

    /// Train ids (argmax over the classes) of `head`, row-major H x W.
    pub async fn class_map(&self, head: Head) -> Result<Vec<u8>, InferenceError> {
        let classes = self.by_bands(head, class_ids);
        read_classes(classes.into_data_async().await, head)
    }

    /// [`Self::class_map`] and [`Self::score`] of `head`, each band resized once for both.
    pub async fn class_map_and_score(&self, head: Head, mode: ScoreMode) -> Result<(Vec<u8>, Vec<f32>), InferenceError> {
        let (classes, scores): (Vec<_>, Vec<_>) = self
            .bands()
            .map(|rows| {
                let logits = self.head_rows(head, rows);
                (class_ids(logits.clone()), unblurred_score(logits, mode))
            })
            .unzip();
        let score = gaussian_blur(Tensor::cat(scores, 1));
        let classes = read_classes(Tensor::cat(classes, 1).into_data_async().await, head)?;
        Ok((classes, read_floats(score.into_data_async().await, head, "score")?))
    }

    /// `head`'s logits at the image's resolution, `[classes, H, W]`, read back a band at a time.
    pub async fn logits(&self, head: Head) -> Result<Vec<f32>, InferenceError> {
        let classes = self.head(head).dims()[1];
        let plane = self.height * self.width;
        let mut logits = vec![0f32; classes * plane];
        for rows in self.bands() {
            let values = read_floats(self.head_rows(head, rows.clone()).into_data_async().await, head, "logits")?;
            let band_plane = rows.len() * self.width;
            for (class, values) in values.chunks_exact(band_plane).enumerate() {
                logits[class * plane + rows.start * self.width..][..band_plane].copy_from_slice(values);
            }
        }
        Ok(logits)
    }

    /// The blurred score of out1 and of out2, row-major H x W each.
    pub async fn scores(&self, mode: ScoreMode) -> Result<[Vec<f32>; 2], InferenceError> {
        Ok([self.score(Head::Out1, mode).await?, self.score(Head::Out2, mode).await?])
    }

    /// Train ids (argmax) and blurred scores of out1 and of out2.
    pub async fn class_maps_and_scores(&self, mode: ScoreMode) -> Result<([Vec<u8>; 2], [Vec<f32>; 2]), InferenceError> {
        let (classes1, score1) = self.class_map_and_score(Head::Out1, mode).await?;
        let (classes2, score2) = self.class_map_and_score(Head::Out2, mode).await?;
        Ok(([classes1, classes2], [score1, score2]))
    }

    /// Both heads' logits at one pixel (`x < width`, `y < height`).
    pub async fn pixel_logits(&self, x: usize, y: usize) -> Result<[Vec<f32>; 2], InferenceError> {
        let [l1, l2] = Head::BOTH.map(|head| {
            let row = self.head_rows(head, y..y + 1);
            let classes = row.dims()[1];
            row.slice([0..1, 0..classes, 0..1, x..x + 1])
        });
        Ok([read_floats(l1.into_data_async().await, Head::Out1, "logits")?, read_floats(l2.into_data_async().await, Head::Out2, "logits")?])
    }
}
