//! safetensors: the browser's weight format (float32 or float16), and the converter's output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, TensorInfo, TensorView};
use safetensors::SafeTensors;

use super::{FloatEncoding, TensorSource, WeightsError, is_ignored, sample_names, state_dict_prefix, validate};
use crate::model::RplConfig;

/// Bytes of the little-endian header length that opens every safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// A safetensors file held in memory.
pub struct SafetensorsCheckpoint {
    origin: String,
    bytes: Vec<u8>,
    /// Offset of the data section in `bytes`.
    data_start: usize,
    /// Tensors by state-dict name (prefix removed).
    tensors: BTreeMap<String, TensorInfo>,
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
        let tensors = super::strip_prefix_map(all, &prefix);
        Ok(Self { origin, bytes, data_start: HEADER_LEN_BYTES + header_len, tensors })
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
        // read_metadata has checked that the offsets lie inside the buffer.
        let (start, end) = info.data_offsets;
        Ok(encoding.decode(&self.bytes[self.data_start + start..self.data_start + end]))
    }
}

/// How the converter stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F32,
    /// Half the size; within about 1e-3 relative of float32.
    F16,
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
    let mut stored: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in source.tensor_names().into_iter().filter(|n| !is_ignored(n)) {
        let values = source.read_f32(&name)?;
        let bytes = match storage {
            StorageType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StorageType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        };
        let shape = source.shape(&name).unwrap_or_default();
        stored.push((name, shape, bytes));
    }
    let dtype = match storage {
        StorageType::F32 => Dtype::F32,
        StorageType::F16 => Dtype::F16,
    };
    let views = stored
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes).map(|view| (name.clone(), view)).map_err(|e| write_error(e.to_string()))
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
