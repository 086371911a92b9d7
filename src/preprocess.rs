//! Images in: decoding, and 8-bit RGB(A) pixels to the network's normalised NCHW input.

use burn::tensor::{Device, Tensor, TensorData};
use thiserror::Error;

/// ImageNet statistics, as the reference normalises its input.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The largest image decoded: 200 megapixels (a 12000x9000 photo is 108).
pub const MAX_PIXELS: u64 = 200_000_000;
/// What the decoder may allocate: a 200-megapixel RGBA image at 16 bits per channel is 1.6 GB.
const MAX_DECODED_BYTES: u64 = 1_700_000_000;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{origin}: cannot decode the image ({reason})")]
    Decode { origin: String, reason: String },
    #[error("{width}x{height} pixels with {channels} channels need {expected} bytes, got {actual}")]
    BufferSize { width: usize, height: usize, channels: usize, expected: usize, actual: usize },
    #[error("an image must have 3 (RGB) or 4 (RGBA) channels, not {0}")]
    Channels(usize),
    #[error("{origin} is {width}x{height} pixels: larger than the {} megapixels this tool decodes", MAX_PIXELS / 1_000_000)]
    TooLarge { origin: String, width: usize, height: usize },
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

    /// Decodes an encoded image file (PNG, JPEG or WebP; grey, palette, 16-bit and CMYK are
    /// converted to 8-bit RGB, alpha dropped, EXIF rotation applied); `origin` names it in errors.
    pub fn decode(origin: &str, bytes: &[u8]) -> Result<Self, ImageError> {
        let failed = |e: image::ImageError| ImageError::Decode { origin: origin.to_string(), reason: e.to_string() };
        if bytes.is_empty() {
            return Err(ImageError::Decode { origin: origin.to_string(), reason: "the file is empty (0 bytes)".into() });
        }
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| failed(e.into()))?;
        if reader.format().is_none() {
            return Err(ImageError::Decode { origin: origin.to_string(), reason: "not a PNG, JPEG or WebP file".into() });
        }
        // The decoder refuses to allocate more than a megapixel cap allows (decompression bombs).
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODED_BYTES);
        reader.limits(limits);
        let mut decoder = reader.into_decoder().map_err(failed)?;
        let (width, height) = image::ImageDecoder::dimensions(&decoder);
        if width as u64 * height as u64 > MAX_PIXELS {
            return Err(ImageError::TooLarge { origin: origin.to_string(), width: width as usize, height: height as usize });
        }
        let orientation = image::ImageDecoder::orientation(&mut decoder).unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut decoded = image::DynamicImage::from_decoder(decoder).map_err(failed)?;
        decoded.apply_orientation(orientation);
        let rgb = decoded.into_rgb8();
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        Self::from_interleaved(width, height, 3, rgb.as_raw())
    }

    /// This image shrunk (never enlarged) so that its longer side is at most `max_side`,
    /// keeping the aspect ratio; `None` when it already fits.
    pub fn fit_within(&self, max_side: usize) -> Option<Self> {
        let side = self.width.max(self.height);
        if max_side == 0 || side <= max_side {
            return None;
        }
        let scale = max_side as f64 / side as f64;
        let width = ((self.width as f64 * scale).round() as usize).max(1);
        let height = ((self.height as f64 * scale).round() as usize).max(1);
        let buffer = image::RgbImage::from_raw(self.width as u32, self.height as u32, self.pixels.clone())?;
        let resized = image::imageops::resize(&buffer, width as u32, height as u32, image::imageops::FilterType::Triangle);
        Some(Self { width, height, pixels: resized.into_raw() })
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
