//! PyTorch checkpoints (`torch.save`), read without executing any pickle code.

use std::collections::BTreeMap;
use std::path::Path;

use pytorch_reader::{DType, PytorchReader, Tensor};

use super::{FloatEncoding, pickle_guard, TensorSource, WeightsError, sample_names, state_dict_prefix, strip_prefix_map};

/// A `.pth` file: a plain state dict, or one nested under `model`, `model_state` or
/// `state_dict`, keys with or without `module.`.
pub struct PthCheckpoint {
    origin: String,
    tensors: BTreeMap<String, Tensor>,
}

impl PthCheckpoint {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let origin = path.display().to_string();
        let size = std::fs::metadata(path).map_err(|source| WeightsError::Io { path: origin.clone(), source })?.len();
        if size == 0 {
            return Err(WeightsError::EmptyFile { path: origin });
        }
        // The reader never executes pickle code; a pickle that names anything but data-building
        // callables is refused before the reader sees it.
        let file = std::fs::File::open(path).map_err(|source| WeightsError::Io { path: origin.clone(), source })?;
        pickle_guard::check_checkpoint(std::io::BufReader::new(file))
            .map_err(|refusal| WeightsError::Pth { path: origin.clone(), reason: refusal.to_string() })?;
        let reader = PytorchReader::new(path).map_err(|e| WeightsError::Pth { path: origin.clone(), reason: e.to_string() })?;
        let tensors = reader.into_tensors();
        let Some(prefix) = state_dict_prefix(tensors.keys().map(String::as_str)) else {
            let names: Vec<String> = tensors.keys().cloned().collect();
            return Err(WeightsError::NotAnRplCheckpoint { origin, found: sample_names(&names) });
        };
        Ok(Self { tensors: strip_prefix_map(tensors, &prefix), origin })
    }
}

impl TensorSource for PthCheckpoint {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape().to_vec())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        let tensor = self.tensors.get(name).ok_or_else(|| WeightsError::TensorData {
            origin: self.origin.clone(),
            key: name.to_string(),
            reason: "no such tensor".into(),
        })?;
        let encoding = match tensor.dtype() {
            DType::F32 => FloatEncoding::F32,
            DType::F16 => FloatEncoding::F16,
            DType::BF16 => FloatEncoding::BF16,
            DType::F64 => FloatEncoding::F64,
            other => {
                return Err(WeightsError::UnsupportedDtype {
                    origin: self.origin.clone(),
                    key: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let bytes = tensor.read().map_err(|e| WeightsError::TensorData {
            origin: self.origin.clone(),
            key: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(encoding.decode(&bytes))
    }
}
