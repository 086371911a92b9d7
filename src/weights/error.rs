//! What can be wrong with a checkpoint, in words that name the file, the key and the shapes.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use super::{ParamEntry, TensorSource, is_ignored};

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes): not a checkpoint")]
    EmptyFile { path: String },
    #[error(
        "{path} is not a checkpoint: neither its first bytes ({first_bytes}) nor its name say \
         safetensors or PyTorch (.pth)"
    )]
    UnknownFormat { path: String, first_bytes: String },
    #[error("{path} is not a readable PyTorch checkpoint ({reason})")]
    Pth { path: String, reason: String },
    #[error("{origin} is not a readable safetensors file ({reason})")]
    Safetensors { origin: String, reason: String },
    #[error(
        "{origin} holds no RPL network: it has no tensor `branch1.mod1.conv1.weight` \
         (with or without a `model.` or `module.` prefix); found {found}"
    )]
    NotAnRplCheckpoint { origin: String, found: String },
    #[error(
        "{origin}: `{key}` has shape {shape:?}, which is no RPL width \
         (expected [64/d, 3, 3, 3] for a divisor d of 16)"
    )]
    UnknownWidth { origin: String, key: String, shape: Vec<usize> },
    #[error("{origin} does not match the {expected} RPL network{}:\n{report}",
        found.as_ref().map(|f| format!(" (it looks like the {f} one)")).unwrap_or_default())]
    Mismatch { origin: String, expected: String, found: Option<String>, report: MismatchReport },
    #[error("{origin}: tensor `{key}` is stored as {dtype}; only float32, float16, bfloat16 and float64 weights can be loaded")]
    UnsupportedDtype { origin: String, key: String, dtype: String },
    #[error("{origin}: tensor `{key}` holds {count} NaN or infinite values (of {total}): the checkpoint is damaged")]
    NonFinite { origin: String, key: String, count: usize, total: usize },
    #[error(
        "{origin} is truncated: it ends inside tensor `{key}` ({present} of its {needed} bytes are there); \
         download or copy it again"
    )]
    Truncated { origin: String, key: String, present: u64, needed: u64 },
    #[error(
        "{name} was saved by PyTorch before 1.6 (a tar archive or bare pickles), which this page does not read: \
         convert it once with `rpl convert {name} model.safetensors`, or save it again with a current torch.save"
    )]
    LegacyPth { name: String },
    #[error("{origin} is {size_mb} MB: more than this browser can read ({limit_mb} MB); no RPL checkpoint is that large")]
    TooLarge { origin: String, size_mb: u64, limit_mb: u64 },
    #[error("{origin}: cannot read tensor `{key}` ({reason})")]
    TensorData { origin: String, key: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub key: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// Every difference between the network's parameters and a checkpoint's tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MismatchReport {
    /// The network needs these; the checkpoint lacks them.
    pub missing: Vec<String>,
    /// The checkpoint has these; the network has no place for them.
    pub unexpected: Vec<String>,
    pub wrong_shape: Vec<ShapeMismatch>,
}

impl MismatchReport {
    pub fn compare(expected: &[ParamEntry], source: &dyn TensorSource) -> Self {
        let wanted: BTreeMap<&str, &[usize]> = expected.iter().map(|e| (e.key.as_str(), e.shape.as_slice())).collect();
        let mut report = Self::default();
        for entry in expected {
            match source.shape(&entry.key) {
                None => report.missing.push(entry.key.clone()),
                Some(found) if found != entry.shape => report.wrong_shape.push(ShapeMismatch {
                    key: entry.key.clone(),
                    expected: entry.shape.clone(),
                    found,
                }),
                Some(_) => {}
            }
        }
        let mut names = source.tensor_names();
        names.sort();
        report.unexpected = names.into_iter().filter(|n| !wanted.contains_key(n.as_str()) && !is_ignored(n)).collect();
        report
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

/// Lists at most this many keys of each kind; the rest are counted.
const LISTED: usize = 12;

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = |f: &mut fmt::Formatter<'_>, title: &str, lines: Vec<String>| -> fmt::Result {
            if lines.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {title}:", lines.len())?;
            for line in lines.iter().take(LISTED) {
                writeln!(f, "    {line}")?;
            }
            if lines.len() > LISTED {
                writeln!(f, "    ... and {} more", lines.len() - LISTED)?;
            }
            Ok(())
        };
        let shapes = self
            .wrong_shape
            .iter()
            .map(|m| format!("{}: the network expects {:?}, the checkpoint has {:?}", m.key, m.expected, m.found))
            .collect();
        section(f, "with a different shape", shapes)?;
        section(f, "missing from the checkpoint", self.missing.clone())?;
        section(f, "unexpected in the checkpoint", self.unexpected.clone())
    }
}
