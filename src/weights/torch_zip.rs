//! PyTorch checkpoints in `torch.save`'s zip format (PyTorch 1.6 and later), read in pieces from
//! any [`ByteSource`]: the zip directory, the pickle (checked by the pickle guard before anything
//! is built), then each tensor's bytes only when asked for. The page reads the released `.pth`
//! this way from the visitor's `File`; natively the same files go through `pytorch-reader`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use super::byte_source::{ByteSource, SourceReader};
use super::pickle_guard::scan_pickle;
use super::torch_pickle::{StorageDtype, TensorRecord, read_state_dict};
use super::{FloatEncoding, TensorSource, WeightsError, sample_names, state_dict_prefix, strip_prefix_map};

/// The largest pickle read (pytorch-reader's limit too): a state dict's is tens of kB.
const MAX_PICKLE_BYTES: u64 = 100 << 20;
/// `PK\x03\x04`: a zip entry's local header.
const LOCAL_HEADER: &[u8; 4] = b"PK\x03\x04";
const LOCAL_HEADER_BYTES: usize = 30;

/// Where a storage's bytes lie in the file.
#[derive(Debug, Clone, Copy)]
struct StorageBytes {
    start: u64,
    len: u64,
}

pub struct TorchZipCheckpoint {
    origin: String,
    source: Box<dyn ByteSource>,
    /// Tensors by state-dict name (wrapper and `module.` prefixes removed).
    tensors: BTreeMap<String, TensorRecord>,
    /// Uncompressed storages by key (`data/KEY` in the archive).
    storages: HashMap<String, StorageBytes>,
}

impl TorchZipCheckpoint {
    pub fn open(origin: impl Into<String>, source: Box<dyn ByteSource>) -> Result<Self, WeightsError> {
        let origin = origin.into();
        if source.is_empty() {
            return Err(WeightsError::EmptyFile { path: origin });
        }
        let refused = |reason: String| WeightsError::Pth { path: origin.clone(), reason };
        let (entries, pickle_name, pickle) = match zip::ZipArchive::new(std::io::BufReader::new(SourceReader::new(source.as_ref()))) {
            Ok(mut archive) => read_directory(&mut archive).map_err(refused)?,
            // torch.save writes the directory last: without it the file was cut short.
            Err(error) => return Err(diagnose_truncated(&origin, source.as_ref(), &error.to_string())),
        };
        let root = pickle_name.trim_end_matches("data.pkl").to_string();
        let records = checked_state_dict(&pickle).map_err(refused)?;
        let storages = entries
            .into_iter()
            .filter_map(|(name, bytes)| Some((name.strip_prefix(&root)?.strip_prefix("data/")?.to_string(), bytes)))
            .collect();
        let Some(prefix) = state_dict_prefix(records.iter().map(|(name, _)| name.as_str())) else {
            let names: Vec<String> = records.into_iter().map(|(name, _)| name).collect();
            return Err(WeightsError::NotAnRplCheckpoint { origin, found: sample_names(&names) });
        };
        Ok(Self { tensors: strip_prefix_map(records, &prefix), storages, origin, source })
    }
}

/// Every uncompressed entry's bytes by name, the pickle's name and the pickle.
type Directory = (HashMap<String, StorageBytes>, String, Vec<u8>);

fn read_directory<R: std::io::Read + std::io::Seek>(archive: &mut zip::ZipArchive<R>) -> Result<Directory, String> {
    let mut entries = HashMap::new();
    let mut pickle_name = None;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(|e| format!("zip entry {index}: {e}"))?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        if name == "data.pkl" || name.ends_with("/data.pkl") {
            pickle_name.get_or_insert(name.clone());
        }
        let stored = entry.compression() == zip::CompressionMethod::Stored;
        if let (true, Some(start)) = (stored, entry.data_start()) {
            entries.insert(name, StorageBytes { start, len: entry.compressed_size() });
        }
    }
    let Some(pickle_name) = pickle_name else {
        return Err("a zip archive without data.pkl: not a PyTorch checkpoint".into());
    };
    let mut pickle = Vec::new();
    archive
        .by_name(&pickle_name)
        .map_err(|e| format!("{pickle_name}: {e}"))?
        .take(MAX_PICKLE_BYTES)
        .read_to_end(&mut pickle)
        .map_err(|e| format!("{pickle_name}: {e}"))?;
    Ok((entries, pickle_name, pickle))
}

/// The pickle's tensors, once the pickle guard has found no callable outside the allow-list.
fn checked_state_dict(pickle: &[u8]) -> Result<Vec<(String, TensorRecord)>, String> {
    scan_pickle(pickle).map_err(|refusal| refusal.to_string())?;
    read_state_dict(pickle).map_err(|refusal| refusal.to_string())
}

/// Why a zip checkpoint has no directory: walks its entries from the start, the pickle first,
/// and names the tensor whose bytes the file ends in.
fn diagnose_truncated(origin: &str, source: &dyn ByteSource, zip_error: &str) -> WeightsError {
    let damaged = || WeightsError::Pth {
        path: origin.to_string(),
        reason: format!("its zip directory is unreadable ({zip_error}): the file is damaged or truncated"),
    };
    let Some((name, pickle_start)) = local_entry(source, 0) else { return damaged() };
    if !name.ends_with("data.pkl") {
        return damaged();
    }
    let root = name.trim_end_matches("data.pkl").to_string();
    let Ok(pickle) = source.read_at(pickle_start, MAX_PICKLE_BYTES as usize) else { return damaged() };
    let pickle_len = match scan_pickle(&pickle) {
        Ok(len) => len,
        Err(refusal) => return WeightsError::Pth { path: origin.to_string(), reason: refusal.to_string() },
    };
    let Ok(records) = read_state_dict(&pickle[..pickle_len]) else { return damaged() };
    // Each storage's size, and the first tensor that reads it (the one named).
    let mut storages: HashMap<String, (u64, String)> = HashMap::new();
    for (tensor, record) in &records {
        let bytes = record.storage_elements.saturating_mul(record.storage_type.element_bytes()) as u64;
        storages.entry(record.storage_key.clone()).or_insert((bytes, tensor.clone()));
    }
    let mut position = pickle_start + pickle_len as u64;
    // The next entry follows within a data descriptor (at most 24 bytes) and any padding.
    while let Ok(window) = source.read_at(position, 4096) {
        let Some(found) = window.windows(4).position(|w| w == LOCAL_HEADER) else { break };
        let Some((name, data_start)) = local_entry(source, position + found as u64) else { break };
        position = data_start;
        let Some((needed, tensor)) = name.strip_prefix(&root).and_then(|n| n.strip_prefix("data/")).and_then(|key| storages.get(key))
        else {
            continue;
        };
        if data_start.saturating_add(*needed) > source.len() {
            let present = source.len().saturating_sub(data_start);
            let prefix = state_dict_prefix(records.iter().map(|(name, _)| name.as_str())).unwrap_or_default();
            let key = tensor.strip_prefix(&prefix).unwrap_or(tensor).to_string();
            return WeightsError::Truncated { origin: origin.to_string(), key, present, needed: *needed };
        }
        position = position.saturating_add(*needed);
    }
    damaged()
}

/// The name and data offset of the zip entry whose local header is at `offset`.
fn local_entry(source: &dyn ByteSource, offset: u64) -> Option<(String, u64)> {
    let header = source.read_at(offset, LOCAL_HEADER_BYTES).ok()?;
    if header.len() < LOCAL_HEADER_BYTES || !header.starts_with(LOCAL_HEADER) {
        return None;
    }
    let name_len = u16::from_le_bytes([header[26], header[27]]) as usize;
    let extra_len = u16::from_le_bytes([header[28], header[29]]) as u64;
    let name = source.read_at(offset + LOCAL_HEADER_BYTES as u64, name_len).ok()?;
    let data_start = offset + (LOCAL_HEADER_BYTES + name_len) as u64 + extra_len;
    Some((String::from_utf8_lossy(&name).into_owned(), data_start))
}

impl TensorSource for TorchZipCheckpoint {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|record| record.shape.clone())
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        let unreadable = |reason: String| WeightsError::TensorData { origin: self.origin.clone(), key: name.to_string(), reason };
        let record = self.tensors.get(name).ok_or_else(|| unreadable("no such tensor".into()))?;
        let encoding = match record.storage_type {
            StorageDtype::F32 => FloatEncoding::F32,
            StorageDtype::F16 => FloatEncoding::F16,
            StorageDtype::BF16 => FloatEncoding::BF16,
            StorageDtype::F64 => FloatEncoding::F64,
            other => {
                return Err(WeightsError::UnsupportedDtype { origin: self.origin.clone(), key: name.to_string(), dtype: other.name().into() });
            }
        };
        if !record.contiguous {
            return Err(unreadable("it is a strided view of its storage; save a state dict of contiguous tensors".into()));
        }
        let key = &record.storage_key;
        let storage = self.storages.get(key).ok_or_else(|| unreadable(format!("its storage data/{key} is missing from the archive")))?;
        let element = record.storage_type.element_bytes() as u64;
        let start = (record.offset as u64).saturating_mul(element);
        let needed = (record.elements() as u64).saturating_mul(element);
        if start.saturating_add(needed) > storage.len {
            return Err(unreadable(format!("it needs {needed} bytes from byte {start} of storage data/{key}, which holds {}", storage.len)));
        }
        let bytes = self.source.read_at(storage.start + start, needed as usize).map_err(|e| unreadable(e.to_string()))?;
        if (bytes.len() as u64) < needed {
            return Err(WeightsError::Truncated { origin: self.origin.clone(), key: name.to_string(), present: bytes.len() as u64, needed });
        }
        Ok(encoding.decode(&bytes))
    }
}
