//! safetensors: the browser's weight format (float32 or float16), and the converter's output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, TensorInfo, TensorView};
use super::byte_source::ByteSource;
use super::{CLASSIFIER_KEY, FloatEncoding, ParamEntry, TensorSource, WeightsError, is_ignored, sample_names, state_dict_prefix, validate};
use crate::model::RplConfig;

/// Bytes of the little-endian header length that opens every safetensors file.
const HEADER_LEN_BYTES: usize = 8;
/// An int8 convolution weight `NAME` has its float32 per-output-channel scales under this name.
pub const INT8_SCALE_SUFFIX: &str = ".int8_scale";

/// A safetensors file, read a tensor at a time from wherever its bytes are.
pub struct SafetensorsCheckpoint {
    origin: String,
    bytes: Box<dyn ByteSource>,
    /// Offset of the data section in `bytes`.
    data_start: u64,
    /// Tensors by state-dict name (prefix removed), int8 scales left out.
    tensors: BTreeMap<String, TensorInfo>,
    /// The scales of int8 tensors, by the tensor's name.
    int8_scales: BTreeMap<String, TensorInfo>,
}

/// The largest header read: safetensors' own limit.
const MAX_HEADER_BYTES: u64 = 100_000_000;

impl SafetensorsCheckpoint {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let origin = path.display().to_string();
        let bytes = super::byte_source::FileBytes::open(path).map_err(|source| WeightsError::Io { path: origin.clone(), source })?;
        Self::from_source(origin, Box::new(bytes))
    }

    /// `origin` names the bytes in error messages (a file name or URL).
    pub fn from_bytes(origin: impl Into<String>, bytes: Vec<u8>) -> Result<Self, WeightsError> {
        Self::from_source(origin.into(), Box::new(bytes))
    }

    /// Reads the header only; tensors are read when asked for.
    pub fn from_source(origin: String, bytes: Box<dyn ByteSource>) -> Result<Self, WeightsError> {
        if bytes.is_empty() {
            return Err(WeightsError::EmptyFile { path: origin });
        }
        let damaged = |reason: String| WeightsError::Safetensors { origin: origin.clone(), reason };
        let read = |offset: u64, len: usize| bytes.read_at(offset, len).map_err(|e| damaged(e.to_string()));
        let head = read(0, HEADER_LEN_BYTES)?;
        // A .pth (a zip archive) where safetensors is expected: say how to convert it.
        if head.starts_with(b"PK\x03\x04") {
            return Err(damaged("it is a PyTorch .pth checkpoint: convert it once with `rpl convert FILE.pth FILE.safetensors --f16`".into()));
        }
        let Ok(head) = <[u8; HEADER_LEN_BYTES]>::try_from(head.as_slice()) else {
            return Err(damaged(format!("{} bytes, shorter than a header", bytes.len())));
        };
        let header_len = u64::from_le_bytes(head);
        let data_start = HEADER_LEN_BYTES as u64 + header_len;
        if header_len > MAX_HEADER_BYTES || data_start > bytes.len() {
            return Err(damaged(format!("its header claims {header_len} bytes; the file has {}", bytes.len())));
        }
        let header = read(HEADER_LEN_BYTES as u64, header_len as usize)?;
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| damaged(format!("header: {e}")))?;
        let data_len = metadata.tensors().values().map(|info| info.data_offsets.1 as u64).max().unwrap_or(0);
        if data_start + data_len != bytes.len() {
            return Err(damaged(format!(
                "its header describes {} bytes of tensors, the file holds {}: {}",
                data_len,
                bytes.len() - data_start,
                if data_start + data_len > bytes.len() { "it is truncated" } else { "it has trailing bytes" }
            )));
        }
        let all = entries(&metadata);
        let Some(prefix) = state_dict_prefix(all.keys().map(String::as_str)) else {
            let names: Vec<String> = all.into_keys().collect();
            return Err(WeightsError::NotAnRplCheckpoint { origin, found: sample_names(&names) });
        };
        let (scales, tensors): (BTreeMap<_, _>, BTreeMap<_, _>) =
            super::strip_prefix_map(all, &prefix).into_iter().partition(|(name, _)| name.ends_with(INT8_SCALE_SUFFIX));
        let int8_scales = scales.into_iter().map(|(name, info)| (name.trim_end_matches(INT8_SCALE_SUFFIX).to_string(), info)).collect();
        Ok(Self { origin, bytes, data_start, tensors, int8_scales })
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
        Ok(encoding.decode(&self.data(name, info)?))
    }
}

impl SafetensorsCheckpoint {
    fn data(&self, name: &str, info: &TensorInfo) -> Result<Vec<u8>, WeightsError> {
        // The header's offsets were checked against the file's length when it was opened.
        let (start, end) = info.data_offsets;
        let bytes = self.bytes.read_at(self.data_start + start as u64, end - start);
        match bytes {
            Ok(bytes) if bytes.len() == end - start => Ok(bytes),
            Ok(bytes) => Err(WeightsError::Truncated { origin: self.origin.clone(), key: name.to_string(), present: bytes.len() as u64, needed: (end - start) as u64 }),
            Err(e) => Err(WeightsError::TensorData { origin: self.origin.clone(), key: name.to_string(), reason: e.to_string() }),
        }
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
        let scales = FloatEncoding::F32.decode(&self.data(name, scale_info)?);
        let quantized = self.data(name, info)?;
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

/// A float32 safetensors file laid out before any value is read: its header, and where each
/// tensor's bytes go. The page writes the checkpoint it converts this way, one tensor at a time.
pub struct Float32Layout {
    /// The length prefix and the JSON header: the file's first bytes.
    pub header: Vec<u8>,
    /// Each tensor's offset in the file, by name.
    pub offsets: BTreeMap<String, u64>,
    /// The whole file's length.
    pub len: u64,
}

impl Float32Layout {
    /// `entries` in file order (the network's own order), the config in the metadata as
    /// [`write_safetensors`] records it.
    pub fn new(entries: &[ParamEntry], config: RplConfig) -> Result<Self, WeightsError> {
        let mut end = 0;
        let tensors = entries
            .iter()
            .map(|entry| {
                let start = end;
                end += entry.shape.iter().product::<usize>() * 4;
                (entry.key.clone(), TensorInfo { dtype: Dtype::F32, shape: entry.shape.clone(), data_offsets: (start, end) })
            })
            .collect::<Vec<_>>();
        let invalid = |reason: String| WeightsError::Write { path: "the float32 layout".into(), reason };
        let metadata = Metadata::new(Some(HashMap::from([("rpl_config".to_string(), config.describe())])), tensors.clone())
            .map_err(|e| invalid(e.to_string()))?;
        let mut json = serde_json::to_vec(&metadata).map_err(|e| invalid(e.to_string()))?;
        // Data starts 8-byte aligned, as safetensors writes it.
        json.resize(json.len().next_multiple_of(8), b' ');
        let data_start = (HEADER_LEN_BYTES + json.len()) as u64;
        let mut header = (json.len() as u64).to_le_bytes().to_vec();
        header.extend(json);
        let offsets = tensors.into_iter().map(|(name, info)| (name, data_start + info.data_offsets.0 as u64)).collect();
        Ok(Self { header, offsets, len: data_start + end as u64 })
    }
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
