//! Images in: decoding, and 8-bit RGB(A) pixels to the network's normalised NCHW input.

use burn::tensor::{Device, Tensor, TensorData};
use thiserror::Error;

/// ImageNet statistics, as the reference normalises its input.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{origin}: cannot decode the image ({reason})")]
    Decode { origin: String, reason: String },
    #[error("{width}x{height} pixels with {channels} channels need {expected} bytes, got {actual}")]
    BufferSize { width: usize, height: usize, channels: usize, expected: usize, actual: usize },
    #[error("an image must have 3 (RGB) or 4 (RGBA) channels, not {0}")]
    Channels(usize),
    #[error("the image is empty ({width}x{height})")]
    Empty { width: usize, height: usize },
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// From interleaved RGB (3 channels) or RGBA (4; alpha is dropped) bytes.
    pub fn from_interleaved(width: usize, height: usize, channels: usize, bytes: &[u8]) -> Result<Self, ImageError> {
        if channels != 3 && channels != 4 {
            return Err(ImageError::Channels(channels));
        }
        if width == 0 || height == 0 {
            return Err(ImageError::Empty { width, height });
        }
        let expected = width * height * channels;
        if bytes.len() != expected {
            return Err(ImageError::BufferSize { width, height, channels, expected, actual: bytes.len() });
        }
        let pixels = bytes.chunks_exact(channels).flat_map(|px| [px[0], px[1], px[2]]).collect();
        Ok(Self { width, height, pixels })
    }

    /// Decodes an encoded image file (PNG); `origin` names it in errors.
    pub fn decode(origin: &str, bytes: &[u8]) -> Result<Self, ImageError> {
        let decoded = image::load_from_memory(bytes)
            .map_err(|e| ImageError::Decode { origin: origin.to_string(), reason: e.to_string() })?
            .into_rgb8();
        let (width, height) = (decoded.width() as usize, decoded.height() as usize);
        Self::from_interleaved(width, height, 3, decoded.as_raw())
    }

    /// The normalised `[1, 3, H, W]` input: `(v / 255 - mean) / std` per channel, in float32
    /// and in that order, as torchvision's ToTensor and Normalize compute it.
    pub fn to_input(&self, device: &Device) -> Tensor<4> {
        let plane = self.width * self.height;
        let mut chw = vec![0f32; 3 * plane];
        for (i, px) in self.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * plane + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        Tensor::from_data(TensorData::new(chw, [1, 3, self.height, self.width]), device)
    }
}
