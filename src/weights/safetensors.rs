//! safetensors: the browser's weight format (float32 or float16), and the converter's output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, TensorInfo, TensorView};
use safetensors::SafeTensors;

use super::{CLASSIFIER_KEY, FloatEncoding, TensorSource, WeightsError, is_ignored, sample_names, state_dict_prefix, validate};
use crate::model::RplConfig;

/// Bytes of the little-endian header length that opens every safetensors file.
const HEADER_LEN_BYTES: usize = 8;
/// An int8 convolution weight `NAME` has its float32 per-output-channel scales under this name.
pub const INT8_SCALE_SUFFIX: &str = ".int8_scale";

/// A safetensors file held in memory.
pub struct SafetensorsCheckpoint {
    origin: String,
    bytes: Vec<u8>,
    /// Offset of the data section in `bytes`.
    data_start: usize,
    /// Tensors by state-dict name (prefix removed), int8 scales left out.
    tensors: BTreeMap<String, TensorInfo>,
    /// The scales of int8 tensors, by the tensor's name.
    int8_scales: BTreeMap<String, TensorInfo>,
}

impl SafetensorsCheckpoint {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: origin.clone(), source })?;
        Self::from_bytes(origin, bytes)
    }

    /// `origin` names the bytes in error messages (a file name or URL).
    pub fn from_bytes(origin: impl Into<String>, bytes: Vec<u8>) -> Result<Self, WeightsError> {
        let origin = origin.into();
        if bytes.is_empty() {
            return Err(WeightsError::EmptyFile { path: origin });
        }
        // A .pth (a zip archive) where safetensors is expected: say how to convert it.
        if bytes.starts_with(b"PK\x03\x04") {
            return Err(WeightsError::Safetensors {
                origin,
                reason: "it is a PyTorch .pth checkpoint: convert it once with `rpl convert FILE.pth FILE.safetensors --f16`".into(),
            });
        }
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| WeightsError::Safetensors { origin: origin.clone(), reason: e.to_string() })?;
        let all = entries(&metadata);
        let Some(prefix) = state_dict_prefix(all.keys().map(String::as_str)) else {
            let names: Vec<String> = all.into_keys().collect();
            return Err(WeightsError::NotAnRplCheckpoint { origin, found: sample_names(&names) });
        };
        let (scales, tensors): (BTreeMap<_, _>, BTreeMap<_, _>) =
            super::strip_prefix_map(all, &prefix).into_iter().partition(|(name, _)| name.ends_with(INT8_SCALE_SUFFIX));
        let int8_scales = scales.into_iter().map(|(name, info)| (name.trim_end_matches(INT8_SCALE_SUFFIX).to_string(), info)).collect();
        Ok(Self { origin, bytes, data_start: HEADER_LEN_BYTES + header_len, tensors, int8_scales })
    }
}

fn entries(metadata: &Metadata) -> BTreeMap<String, TensorInfo> {
    metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect()
}

impl TensorSource for SafetensorsCheckpoint {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|info| info.shape.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        let info = self.tensors.get(name).ok_or_else(|| WeightsError::TensorData {
            origin: self.origin.clone(),
            key: name.to_string(),
            reason: "no such tensor".into(),
        })?;
        if info.dtype == Dtype::I8 {
            return self.read_int8(name, info);
        }
        let encoding = match info.dtype {
            Dtype::F32 => FloatEncoding::F32,
            Dtype::F16 => FloatEncoding::F16,
            Dtype::BF16 => FloatEncoding::BF16,
            Dtype::F64 => FloatEncoding::F64,
            other => {
                return Err(WeightsError::UnsupportedDtype {
                    origin: self.origin.clone(),
                    key: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(encoding.decode(self.data(info)))
    }
}

impl SafetensorsCheckpoint {
    fn data(&self, info: &TensorInfo) -> &[u8] {
        // read_metadata has checked that the offsets lie inside the buffer.
        let (start, end) = info.data_offsets;
        &self.bytes[self.data_start + start..self.data_start + end]
    }

    /// An int8 tensor times its per-output-channel scales (see [`quantize_per_output_channel`]).
    fn read_int8(&self, name: &str, info: &TensorInfo) -> Result<Vec<f32>, WeightsError> {
        let damaged = |reason: String| WeightsError::TensorData { origin: self.origin.clone(), key: name.to_string(), reason };
        let scale_info = self.int8_scales.get(name).ok_or_else(|| damaged(format!("an int8 tensor needs its scales `{name}{INT8_SCALE_SUFFIX}`")))?;
        let channels = info.shape.first().copied().unwrap_or(0);
        if scale_info.dtype != Dtype::F32 || scale_info.shape != [channels] {
            return Err(damaged(format!(
                "its scales are {:?} {:?}; expected float32 [{channels}], one per output channel",
                scale_info.dtype, scale_info.shape
            )));
        }
        let scales = FloatEncoding::F32.decode(self.data(scale_info));
        let quantized = self.data(info);
        let per_channel = quantized.len() / channels.max(1);
        Ok(quantized.iter().enumerate().map(|(i, &q)| f32::from(q as i8) * scales[i / per_channel]).collect())
    }
}

/// Symmetric int8 per output channel (the first dimension): each channel's largest magnitude maps
/// to 127. Returns the int8 values and one scale per channel (value = int8 x scale).
pub fn quantize_per_output_channel(values: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per_channel = values.len() / channels.max(1);
    let scales: Vec<f32> = values.chunks(per_channel.max(1)).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0).collect();
    let quantized = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let scale = scales[i / per_channel];
            if scale > 0.0 { (v / scale).round().clamp(-127.0, 127.0) as i8 } else { 0 }
        })
        .collect();
    (quantized, scales)
}

/// How the converter stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F32,
    /// Half the size; within about 1e-3 relative of float32.
    F16,
    /// Convolution weights as int8 with float32 scales per output channel, the rest float32:
    /// about a quarter of the size.
    Int8,
}

/// Writes every tensor of a valid RPL checkpoint as safetensors, under the state-dict names
/// without prefixes and without BatchNorm's step counters. The checkpoint is checked strictly first.
pub fn write_safetensors(
    source: &dyn TensorSource,
    storage: StorageType,
    path: &Path,
    device: &burn::tensor::Device,
) -> Result<RplConfig, WeightsError> {
    let config = validate(source, device)?;
    let write_error = |reason: String| WeightsError::Write { path: path.display().to_string(), reason };
    let mut stored: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let float32 = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    for name in source.tensor_names().into_iter().filter(|n| !is_ignored(n)) {
        let values = source.read_f32(&name)?;
        let shape = source.shape(&name).unwrap_or_default();
        match storage {
            StorageType::F32 => stored.push((name, Dtype::F32, shape, float32(&values))),
            StorageType::F16 => {
                let bytes = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
                stored.push((name, Dtype::F16, shape, bytes));
            }
            // Every convolution's weight is 4-D; BatchNorm and bias vectors stay float32, and so
            // does the classifier (the logits' 1x1 convolution, 0.05 % of the released weights):
            // int8 there moves the energies enough to cost RPL's AP 0.011 on the demo model.
            StorageType::Int8 if shape.len() == 4 && name != CLASSIFIER_KEY => {
                let (quantized, scales) = quantize_per_output_channel(&values, shape[0]);
                stored.push((format!("{name}{INT8_SCALE_SUFFIX}"), Dtype::F32, vec![shape[0]], float32(&scales)));
                stored.push((name, Dtype::I8, shape, quantized.iter().map(|&q| q as u8).collect()));
            }
            StorageType::Int8 => stored.push((name, Dtype::F32, shape, float32(&values))),
        }
    }
    let views = stored
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view)).map_err(|e| write_error(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("rpl_config".to_string(), config.describe())]);
    // safetensors writes a private temporary file (mode 0600) and renames it over `path`: the
    // result gets the permissions a file created here normally has.
    let usual = std::fs::File::create(path).and_then(|f| f.metadata()).map_err(|e| write_error(e.to_string()))?.permissions();
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| write_error(e.to_string()))?;
    std::fs::set_permissions(path, usual).map_err(|e| write_error(e.to_string()))?;
    Ok(config)
}
