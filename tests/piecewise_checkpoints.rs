//! Checkpoints read in pieces (the page's loader): `torch.save`'s zip format through our own
//! pickle machine, safetensors header first, loads in steps, and the float32 file the page keeps.

mod common;

use std::collections::HashMap;

use burn::tensor::Device;
use common::fixture;
use rpl_web::backend::BackendKind;
use rpl_web::weights::byte_source::FileBytes;
use rpl_web::weights::pth::PthCheckpoint;
use rpl_web::weights::safetensors::{Float32Layout, SafetensorsCheckpoint, StorageType, write_safetensors};
use rpl_web::weights::torch_zip::TorchZipCheckpoint;
use rpl_web::weights::{StagedLoad, TensorSource, WeightsError, detect_config};

fn cpu() -> Device {
    BackendKind::Ndarray.device().unwrap()
}

fn open_zip(path: &std::path::Path) -> Result<TorchZipCheckpoint, WeightsError> {
    TorchZipCheckpoint::open(path.display().to_string(), Box::new(FileBytes::open(path).unwrap()))
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_zip_reader_gives_pytorch_readers_tensors_bit_for_bit_plain_and_wrapped() {
    for name in ["rpl_w8/rpl_w8.pth", "rpl_w8/rpl_w8_wrapped.pth"] {
        let reference = PthCheckpoint::open(&fixture(name)).unwrap();
        let ours = open_zip(&fixture(name)).unwrap();
        let mut names = ours.tensor_names();
        names.sort();
        let mut expected = reference.tensor_names();
        expected.sort();
        assert_eq!(names, expected, "{name}: tensor names");
        // The step counters are int64: the state dict has them, no loader reads them as floats.
        let floats: Vec<&String> = names.iter().filter(|n| !n.ends_with("num_batches_tracked")).collect();
        assert_eq!(floats.len(), 302 - 48, "{name}");
        for tensor in floats {
            assert_eq!(ours.shape(tensor), reference.shape(tensor), "{name}: {tensor}");
            assert_eq!(bits(&ours.read_f32(tensor).unwrap()), bits(&reference.read_f32(tensor).unwrap()), "{name}: {tensor}");
        }
    }
}

/// Where each zip entry's data starts and how long it is, from the zip crate.
fn entry_spans(path: &std::path::Path) -> HashMap<String, (u64, u64)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let entry = archive.by_index_raw(i).unwrap();
            (entry.name().unwrap().into_owned(), (entry.data_start().unwrap(), entry.compressed_size()))
        })
        .collect()
}

#[test]
fn a_truncated_pth_names_the_tensor_the_file_ends_in() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("rpl_w8/rpl_w8.pth")).unwrap();
    let spans = entry_spans(&fixture("rpl_w8/rpl_w8.pth"));
    let reference = PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap();
    // The largest storage: a cut in its middle must name its tensor and count its bytes.
    let (storage, &(start, len)) = spans.iter().filter(|(n, _)| n.contains("/data/")).max_by_key(|(_, (_, len))| *len).unwrap();
    let tensor = reference
        .tensor_names()
        .into_iter()
        .find(|t| !t.ends_with("num_batches_tracked") && reference.shape(t).unwrap().iter().product::<usize>() as u64 * 4 == len)
        .unwrap();
    for cut in [start + 1, start + len / 2, start + len - 1] {
        let path = dir.path().join("cut.pth");
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        match open_zip(&path) {
            Err(WeightsError::Truncated { key, present, needed, .. }) => {
                assert_eq!((key.as_str(), present, needed), (tensor.as_str(), cut - start, len), "cut at {cut} in {storage}");
            }
            other => panic!("cut at {cut}: expected a truncation naming {tensor}, got {:?}", other.err()),
        }
    }
    let message = open_zip(&dir.path().join("cut.pth")).err().unwrap().to_string();
    assert!(message.contains("is truncated") && message.contains(&tensor), "{message}");
}

#[test]
fn a_zip_without_a_checkpoint_and_a_pickle_that_calls_a_function_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photos.pth");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    writer.start_file("holiday/readme.txt", zip::write::SimpleFileOptions::default()).unwrap();
    std::io::Write::write_all(&mut writer, b"not weights").unwrap();
    writer.finish().unwrap();
    let message = open_zip(&path).err().unwrap().to_string();
    assert!(message.contains("without data.pkl") && message.contains("photos.pth"), "{message}");

    let message = open_zip(&fixture("../bad_inputs/calls_os_system.pth")).err().unwrap().to_string();
    assert!(message.contains("calls `posix.system`") && message.contains("refused"), "{message}");
}

#[test]
fn a_load_in_steps_writes_the_float32_file_the_converter_writes() {
    let device = cpu();
    let dir = tempfile::tempdir().unwrap();
    let source = open_zip(&fixture("rpl_w8/rpl_w8_wrapped.pth")).unwrap();
    let config = detect_config(&source).unwrap();
    let mut load = StagedLoad::new(&source, config, &device).unwrap();
    let layout = Float32Layout::new(load.entries(), config).unwrap();
    let mut file = vec![0u8; layout.len as usize];
    file[..layout.header.len()].copy_from_slice(&layout.header);
    let mut steps = 0;
    let mut write = |key: &str, values: &[f32]| {
        let at = layout.offsets[key] as usize;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        file[at..at + bytes.len()].copy_from_slice(&bytes);
    };
    while !load.step(1 << 20, &device, &mut write).unwrap() {
        steps += 1;
    }
    assert!(steps > 3, "1 MiB steps over a 10 MB checkpoint: {steps}");
    assert_eq!(load.done(), load.entries().len());

    // The file the page keeps is valid safetensors and holds the converter's values bit for bit.
    safetensors::SafeTensors::deserialize(&file).unwrap();
    let kept = SafetensorsCheckpoint::from_bytes("kept", file).unwrap();
    let converted_path = dir.path().join("converted.safetensors");
    write_safetensors(&PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap(), StorageType::F32, &converted_path, &device).unwrap();
    let converted = SafetensorsCheckpoint::open(&converted_path).unwrap();
    assert_eq!(kept.tensor_names(), converted.tensor_names());
    for name in converted.tensor_names() {
        assert_eq!(bits(&kept.read_f32(&name).unwrap()), bits(&converted.read_f32(&name).unwrap()), "{name}");
    }
}

#[test]
fn a_truncated_safetensors_file_says_so_before_reading_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap(), StorageType::F16, &path, &cpu()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 1000);
    let message = SafetensorsCheckpoint::from_bytes("model.safetensors", bytes).err().unwrap().to_string();
    assert!(message.contains("model.safetensors") && message.contains("it is truncated"), "{message}");
}

#[test]
fn cut_or_corrupted_pth_files_are_refused_without_a_panic() {
    let full = std::fs::read(fixture("rpl_w8/rpl_w8_wrapped.pth")).unwrap();
    let open = |bytes: Vec<u8>| {
        if let Ok(checkpoint) = TorchZipCheckpoint::open("damaged.pth", Box::new(bytes)) {
            let _ = detect_config(&checkpoint);
            for name in checkpoint.tensor_names() {
                let _ = checkpoint.read_f32(&name);
            }
        }
    };
    for cut in (0..full.len()).step_by(full.len() / 300) {
        open(full[..cut].to_vec());
    }
    // Every 13th byte of the pickle (its first 36 kB), each changed to three values in turn.
    for at in (0..36_000.min(full.len())).step_by(13) {
        for value in [0x00, 0xff, b'q'] {
            let mut bytes = full.clone();
            bytes[at] = value;
            open(bytes);
        }
    }
}
