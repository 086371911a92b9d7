//! Checkpoint formats and the mapping of their keys onto the network.
//!
//! A checkpoint is read as a [`TensorSource`] (PyTorch `.pth` natively, safetensors anywhere);
//! [`load_network`] recognises the width from the shapes, checks every entry strictly, then
//! fills a lazily built [`RplNetwork`] one tensor at a time.

pub mod byte_source;
mod error;
mod layout;
pub mod pickle_guard;
#[cfg(not(target_arch = "wasm32"))]
pub mod pth;
pub mod safetensors;
mod torch_pickle;
pub mod torch_zip;

use std::collections::{BTreeMap, HashSet};

use burn::tensor::Device;

pub use error::{MismatchReport, ShapeMismatch, WeightsError};
pub use layout::{ParamEntry, expected_entries};
#[cfg(feature = "train")] // only training writes checkpoints from outside this module
pub(crate) use layout::commit_running_statistics;

use crate::model::{RplConfig, RplNetwork, config::released};

/// The first parameter of the network: its presence and shape identify an RPL checkpoint.
pub const ANCHOR_KEY: &str = "branch1.mod1.conv1.weight";
/// The logit layer: its first dimension is the number of classes.
pub(crate) const CLASSIFIER_KEY: &str = "branch1.final.6.weight";
/// Keys under which training scripts nest the state dict.
const WRAPPER_KEYS: [&str; 3] = ["model", "model_state", "state_dict"];
/// BatchNorm's step counter: saved by PyTorch, meaningless at inference.
const IGNORED_SUFFIX: &str = ".num_batches_tracked";

/// How a checkpoint stores its floating-point numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatEncoding {
    F32,
    F16,
    BF16,
    F64,
}

impl FloatEncoding {
    /// Little-endian bytes to float32 (every format we read is little-endian).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Self::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Self::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Self::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
                .collect(),
        }
    }
}

/// A checkpoint's tensors, by their state-dict names (wrapper and `module.` prefixes removed).
pub trait TensorSource {
    /// The file name or URL, for error messages.
    fn origin(&self) -> &str;
    /// Every tensor name, prefixes removed.
    fn tensor_names(&self) -> Vec<String>;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor's values as float32, whatever float type the checkpoint stores.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError>;
}

/// A network's own tensors as a checkpoint, under the reference's names: how trained weights
/// are saved (through [`safetensors::write_safetensors`]).
pub struct NetworkTensors {
    origin: String,
    entries: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl NetworkTensors {
    pub fn new(origin: impl Into<String>, network: &RplNetwork) -> Self {
        let entries = layout::read_network(network).into_iter().map(|(k, shape, values)| (k, (shape, values))).collect();
        Self { origin: origin.into(), entries }
    }
}

impl TensorSource for NetworkTensors {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn tensor_names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(|e| e.0.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        self.entries.get(name).map(|e| e.1.clone()).ok_or_else(|| WeightsError::TensorData {
            origin: self.origin.clone(),
            key: name.to_string(),
            reason: "no such tensor".into(),
        })
    }
}

/// The prefix in front of the state dict's keys: "", "module.", "model.", "model.module.", ...
/// Found from the anchor key, so that other top-level entries (epoch, optimizer) are left out.
pub(crate) fn state_dict_prefix<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut allowed = vec![String::new(), "module.".to_string()];
    for wrapper in WRAPPER_KEYS {
        allowed.push(format!("{wrapper}."));
        allowed.push(format!("{wrapper}.module."));
    }
    let found: Vec<&str> = names.into_iter().filter_map(|name| name.strip_suffix(ANCHOR_KEY)).collect();
    allowed.into_iter().find(|prefix| found.contains(&prefix.as_str()))
}

/// The names of a checkpoint under `prefix`, stripped of it.
pub(crate) fn strip_prefix_map<T>(entries: impl IntoIterator<Item = (String, T)>, prefix: &str) -> BTreeMap<String, T> {
    entries
        .into_iter()
        .filter_map(|(name, value)| name.strip_prefix(prefix).map(|n| (n.to_string(), value)))
        .collect()
}

/// A short list of names for "found instead" hints.
pub(crate) fn sample_names(names: &[String]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort();
    let shown: Vec<&str> = sorted.iter().take(5).map(String::as_str).collect();
    if shown.is_empty() { "no tensors at all".to_string() } else { format!("e.g. {}", shown.join(", ")) }
}

/// Recognises the network's width and class count from the checkpoint's shapes.
pub fn detect_config(source: &dyn TensorSource) -> Result<RplConfig, WeightsError> {
    let Some(stem) = source.shape(ANCHOR_KEY) else {
        return Err(WeightsError::NotAnRplCheckpoint {
            origin: source.origin().to_string(),
            found: sample_names(&source.tensor_names()),
        });
    };
    let unknown_width = || WeightsError::UnknownWidth {
        origin: source.origin().to_string(),
        key: ANCHOR_KEY.to_string(),
        shape: stem.clone(),
    };
    let stem_channels = match stem.as_slice() {
        [c, 3, 3, 3] if *c > 0 && released::STEM % c == 0 => *c,
        _ => return Err(unknown_width()),
    };
    let num_classes = source.shape(CLASSIFIER_KEY).and_then(|s| s.first().copied()).unwrap_or(19);
    let config = RplConfig { width_divisor: released::STEM / stem_channels, num_classes };
    if config.is_valid() { Ok(config) } else { Err(unknown_width()) }
}

/// Loads a checkpoint of any RPL width (recognised from its shapes) onto `device`.
pub fn load_network(source: &dyn TensorSource, device: &Device) -> Result<RplNetwork, WeightsError> {
    let config = detect_config(source)?;
    load_network_as(source, config, device)
}

/// Loads a checkpoint that must be of the given width; anything else is an error naming
/// every missing key, unexpected key and shape difference.
pub fn load_network_as(
    source: &dyn TensorSource,
    config: RplConfig,
    device: &Device,
) -> Result<RplNetwork, WeightsError> {
    let mut load = StagedLoad::new(source, config, device)?;
    load.step(u64::MAX, device, &mut |_, _| {})?;
    Ok(load.finish())
}

/// A checkpoint loaded in steps, for a caller that shows progress and may stop between them
/// (the page): checked strictly once, then filled a few tensors at a time, in module order.
pub struct StagedLoad<'a> {
    source: &'a dyn TensorSource,
    network: RplNetwork,
    entries: Vec<ParamEntry>,
    /// Entries filled so far, and their float32 bytes; all entries' float32 bytes.
    done: usize,
    done_bytes: u64,
    total_bytes: u64,
}

impl<'a> StagedLoad<'a> {
    pub fn new(source: &'a dyn TensorSource, config: RplConfig, device: &Device) -> Result<Self, WeightsError> {
        let mut network = checked_network(source, config, device)?;
        let entries = expected_entries(&mut network);
        let total_bytes = entries.iter().map(ParamEntry::float32_bytes).sum();
        Ok(Self { source, network, entries, done: 0, done_bytes: 0, total_bytes })
    }

    /// Every entry, in the order they are filled.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Entries filled so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// The float32 bytes of the entries filled so far.
    pub fn done_bytes(&self) -> u64 {
        self.done_bytes
    }

    /// The float32 bytes of every entry.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Fills the next entries until about `max_bytes` of float32 values are read (at least one
    /// entry), each shown to `on_values` first. Returns whether every entry is now filled.
    pub fn step(&mut self, max_bytes: u64, device: &Device, on_values: &mut dyn FnMut(&str, &[f32])) -> Result<bool, WeightsError> {
        let mut bytes = 0u64;
        let mut keys = HashSet::new();
        for entry in &self.entries[self.done..] {
            if !keys.is_empty() && bytes >= max_bytes {
                break;
            }
            bytes += entry.float32_bytes();
            keys.insert(entry.key.as_str());
        }
        layout::fill_entries(&mut self.network, self.source, device, &keys, on_values)?;
        self.done += keys.len();
        self.done_bytes += bytes;
        Ok(self.done == self.entries.len())
    }

    /// The filled network.
    pub fn finish(self) -> RplNetwork {
        debug_assert_eq!(self.done, self.entries.len(), "finish before every entry was filled");
        self.network
    }
}

/// Checks a checkpoint strictly against the width it declares, without reading its tensors.
pub fn validate(source: &dyn TensorSource, device: &Device) -> Result<RplConfig, WeightsError> {
    let config = detect_config(source)?;
    checked_network(source, config, device)?;
    Ok(config)
}

/// The lazily initialised network of `config`, once every checkpoint entry fits it.
fn checked_network(source: &dyn TensorSource, config: RplConfig, device: &Device) -> Result<RplNetwork, WeightsError> {
    let mut network = RplNetwork::new(config, device);
    let report = MismatchReport::compare(&expected_entries(&mut network), source);
    if report.is_empty() {
        return Ok(network);
    }
    let found = detect_config(source).ok().filter(|found| *found != config);
    Err(WeightsError::Mismatch {
        origin: source.origin().to_string(),
        expected: config.describe(),
        found: found.map(|c| c.describe()),
        report,
    })
}

/// How a checkpoint stores its tensors, as its first bytes (or else its name) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    Safetensors,
    /// `torch.save`'s zip archive (PyTorch 1.6 and later).
    TorchZip,
    /// `torch.save` before PyTorch 1.6: a tar archive or bare pickles.
    TorchLegacy,
}

/// Bytes [`checkpoint_format`] looks at: up to the tar magic of torch.save's oldest format.
pub const FORMAT_HEAD_BYTES: usize = 262;

/// The format of a checkpoint named `name` whose first bytes are `head`: by those bytes, else
/// by the extension, so that a damaged file is reported in the format it claims to be.
pub fn checkpoint_format(name: &str, head: &[u8]) -> Result<CheckpointFormat, WeightsError> {
    // safetensors opens with an 8-byte header length and a JSON object; torch.save writes a zip
    // archive, or before PyTorch 1.6 a pickle (protocol opcode 0x80) or a tar archive.
    let zip = head.starts_with(b"PK\x03\x04");
    let legacy = head.first() == Some(&0x80) || head.get(257..262) == Some(&b"ustar"[..]);
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    if head.is_empty() {
        Err(WeightsError::EmptyFile { path: name.to_string() })
    } else if head.get(8) == Some(&b'{') || (!zip && !legacy && extension == "safetensors") {
        Ok(CheckpointFormat::Safetensors)
    } else if zip || (!legacy && ["pth", "pt", "bin", "ckpt"].contains(&extension.as_str())) {
        Ok(CheckpointFormat::TorchZip)
    } else if legacy || extension == "tar" {
        Ok(CheckpointFormat::TorchLegacy)
    } else {
        let first_bytes = head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        Err(WeightsError::UnknownFormat { path: name.to_string(), first_bytes })
    }
}

/// A checkpoint in `format` from bytes read in pieces (a file natively, the page's `File` in the
/// browser): safetensors or `torch.save`'s zip format. The formats before PyTorch 1.6 are read
/// from files only ([`open_checkpoint`]).
pub fn open_source(origin: String, bytes: Box<dyn byte_source::ByteSource>, format: CheckpointFormat) -> Result<Box<dyn TensorSource>, WeightsError> {
    match format {
        CheckpointFormat::Safetensors => Ok(Box::new(safetensors::SafetensorsCheckpoint::from_source(origin, bytes)?)),
        CheckpointFormat::TorchZip => Ok(Box::new(torch_zip::TorchZipCheckpoint::open(origin, bytes)?)),
        CheckpointFormat::TorchLegacy => Err(WeightsError::LegacyPth { name: origin }),
    }
}

/// Opens a checkpoint file, safetensors or PyTorch `.pth` (every format `torch.save` has had),
/// reading its tensors only when asked for.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_checkpoint(path: &std::path::Path) -> Result<Box<dyn TensorSource>, WeightsError> {
    use std::io::Read;
    let origin = path.display().to_string();
    let mut head = Vec::with_capacity(FORMAT_HEAD_BYTES);
    std::fs::File::open(path)
        .and_then(|f| f.take(FORMAT_HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|source| WeightsError::Io { path: origin.clone(), source })?;
    match checkpoint_format(&origin, &head)? {
        // The formats before PyTorch 1.6 through pytorch-reader; the others through the page's
        // own readers (the zip one names the tensor a truncated file ends in).
        CheckpointFormat::TorchLegacy => Ok(Box::new(pth::PthCheckpoint::open(path)?)),
        format => {
            let bytes = byte_source::FileBytes::open(path).map_err(|source| WeightsError::Io { path: origin.clone(), source })?;
            open_source(origin, Box::new(bytes), format)
        }
    }
}

pub(crate) fn is_ignored(name: &str) -> bool {
    name.ends_with(IGNORED_SUFFIX)
}
