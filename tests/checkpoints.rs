//! Checkpoint loading: the released layout, strictness, conversion, and clear errors.

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use common::{FLOAT32_TOLERANCE, ReferenceCase, assert_close, fixture};
use rpl_web::backend::BackendKind;
use rpl_web::preprocess::RgbImage;
use rpl_web::scoring::{ScoreMode, anomaly_score};
use rpl_web::weights::pth::PthCheckpoint;
use rpl_web::weights::safetensors::{SafetensorsCheckpoint, StorageType, write_safetensors};
use rpl_web::weights::{TensorSource, WeightsError, expected_entries, load_network, load_network_as, open_checkpoint};
use rpl_web::{RplConfig, RplNetwork};
use safetensors::tensor::{Dtype, TensorView};

fn cpu() -> Device {
    BackendKind::Ndarray.device().unwrap()
}

fn fixture_pth() -> PthCheckpoint {
    PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn released_preset_maps_one_to_one_onto_the_official_state_dict() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("official_state_dict.json")).unwrap()).unwrap();
    let official: Vec<(String, Vec<usize>)> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (e["key"].as_str().unwrap().to_string(), shape)
        })
        .filter(|(key, _)| !key.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(official.len(), 302 - 48);

    // Parameters are lazy: building the 168M-parameter network allocates none of its weights.
    let mut network = RplNetwork::new(RplConfig::RELEASED, &cpu());
    let ours: Vec<(String, Vec<usize>)> = expected_entries(&mut network).into_iter().map(|e| (e.key, e.shape)).collect();
    for (i, (a, b)) in ours.iter().zip(&official).enumerate() {
        assert_eq!(a, b, "entry {i} differs from the official state dict");
    }
    assert_eq!(ours.len(), official.len());

    let learnable: usize = ours.iter().filter(|(k, _)| !k.contains("running_")).map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(learnable as u64, json["total_parameters"].as_u64().unwrap());
}

/// Runs the 64x128 case through a loaded network; returns (out1, out2, energy).
fn run_small_case(network: &RplNetwork, device: &Device) -> [Vec<f32>; 3] {
    let case = ReferenceCase::load("case_64x128");
    let image = RgbImage::decode(case.name, &std::fs::read(case.png()).unwrap()).unwrap();
    let logits = network.forward(image.to_input(device));
    let energy = anomaly_score(logits.out2.clone(), ScoreMode::Energy);
    [logits.out1, logits.out2].map(|t| t.into_data().try_into_vec::<f32>().unwrap()).into_iter().chain([energy.into_data().try_into_vec::<f32>().unwrap()]).collect::<Vec<_>>().try_into().unwrap()
}

fn assert_matches_small_case(outputs: &[Vec<f32>; 3], tolerance: f32, label: &str) {
    let case = ReferenceCase::load("case_64x128");
    for (values, key) in outputs.iter().zip(["out1", "out2", "energy"]) {
        assert_close(&format!("{label} {key}"), values, &case.f32(key), tolerance);
    }
}

#[test]
fn converted_safetensors_reproduce_the_reference_in_float32_and_float16() {
    let device = cpu();
    let dir = temp_dir();
    let (f32_path, f16_path) = (dir.path().join("w8.safetensors"), dir.path().join("w8_f16.safetensors"));
    let source = fixture_pth();
    assert_eq!(write_safetensors(&source, StorageType::F32, &f32_path, &device).unwrap(), RplConfig::FIXTURE_W8);
    write_safetensors(&source, StorageType::F16, &f16_path, &device).unwrap();

    let from_file = load_network(&SafetensorsCheckpoint::open(&f32_path).unwrap(), &device).unwrap();
    assert_matches_small_case(&run_small_case(&from_file, &device), FLOAT32_TOLERANCE, "float32 safetensors");

    // The browser hands over bytes, not a path.
    let bytes = std::fs::read(&f16_path).unwrap();
    let from_bytes = load_network(&SafetensorsCheckpoint::from_bytes("w8_f16", bytes).unwrap(), &device).unwrap();
    assert_matches_small_case(&run_small_case(&from_bytes, &device), 2e-2, "float16 safetensors");

    let (size32, size16) = (std::fs::metadata(&f32_path).unwrap().len(), std::fs::metadata(&f16_path).unwrap().len());
    assert!(size16 * 100 <= size32 * 51, "float16 file {size16} B should be half of {size32} B");
}

#[test]
fn wrapped_and_plain_checkpoints_hold_the_same_tensors_under_the_same_names() {
    let plain = fixture_pth();
    let wrapped = PthCheckpoint::open(&fixture("rpl_w8/rpl_w8_wrapped.pth")).unwrap();
    assert_eq!(plain.tensor_names(), wrapped.tensor_names());
    assert!(plain.tensor_names().iter().all(|n| n.starts_with("branch1.")));
    let key = "branch1.final.6.weight";
    assert_eq!(plain.read_f32(key).unwrap(), wrapped.read_f32(key).unwrap());
}

fn expect_error(result: Result<impl Sized, WeightsError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_truncated_and_random_files_are_refused_with_a_message() {
    let dir = temp_dir();
    let pth = std::fs::read(fixture("rpl_w8/rpl_w8.pth")).unwrap();
    let mut random = vec![0u8; 4096];
    let mut state = 0x2545F4914F6CDD1Du64;
    for byte in random.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let converted = dir.path().join("ok.safetensors");
    write_safetensors(&fixture_pth(), StorageType::F32, &converted, &cpu()).unwrap();
    let safetensors = std::fs::read(&converted).unwrap();

    // A damaged safetensors header: the file still claims to be safetensors by its name.
    let mut damaged = safetensors.clone();
    damaged[8..16].copy_from_slice(b"PyTorch?");

    let cases: [(&str, &[u8], &str); 8] = [
        ("empty.pth", &[], "empty"),
        ("truncated.pth", &pth[..pth.len() / 2], "is truncated: it ends inside tensor `branch1."),
        ("random.bin", &random, "not a readable PyTorch checkpoint"),
        ("random.dat", &random, "is not a checkpoint: neither its first bytes"),
        ("random.safetensors", &random, "not a readable safetensors"),
        ("damaged.safetensors", &damaged, "not a readable safetensors"),
        ("empty.safetensors", &[], "empty"),
        ("truncated.safetensors", &safetensors[..safetensors.len() / 2], "not a readable safetensors"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let message = expect_error(open_checkpoint(&path));
        assert!(message.contains(name), "{name}: the message names the file: {message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
    // Bytes in memory (the browser's path) are checked the same way.
    let message = expect_error(SafetensorsCheckpoint::from_bytes("upload.safetensors", random));
    assert!(message.contains("upload.safetensors") && message.contains("not a readable safetensors"), "{message}");
}

#[test]
fn a_checkpoint_of_the_other_preset_is_named_as_such() {
    let message = expect_error(load_network_as(&fixture_pth(), RplConfig::RELEASED, &cpu()));
    assert!(message.contains("released") && message.contains("width 1/8"), "{message}");
    assert!(
        message.contains("branch1.mod1.conv1.weight: the network expects [64, 3, 3, 3], the checkpoint has [8, 3, 3, 3]"),
        "{message}"
    );
}

/// A safetensors file made from the fixture's tensors, changed by `edit`.
fn edited_checkpoint(
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) -> Result<SafetensorsCheckpoint, WeightsError> {
    let source = fixture_pth();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = source
        .tensor_names()
        .into_iter()
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .map(|n| {
            let bytes = source.read_f32(&n).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), (source.shape(&n).unwrap(), bytes))
        })
        .collect();
    edit(&mut tensors);
    let views = tensors.iter().map(|(n, (shape, bytes))| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap()));
    SafetensorsCheckpoint::from_bytes("edited.safetensors", safetensors::serialize(views, None).unwrap())
}

#[test]
fn missing_unexpected_and_misshapen_entries_are_each_named() {
    let device = cpu();
    let missing = edited_checkpoint(|t| {
        t.remove("branch1.aspp.features.2.1.running_var");
    })
    .unwrap();
    let message = expect_error(load_network(&missing, &device));
    assert!(message.contains("missing from the checkpoint") && message.contains("branch1.aspp.features.2.1.running_var"), "{message}");

    let unexpected = edited_checkpoint(|t| {
        t.insert("branch1.extra_head.weight".into(), (vec![1], vec![0; 4]));
    })
    .unwrap();
    let message = expect_error(load_network(&unexpected, &device));
    assert!(message.contains("unexpected in the checkpoint") && message.contains("branch1.extra_head.weight"), "{message}");

    let misshapen = edited_checkpoint(|t| {
        let entry = t.get_mut("branch1.bot_fine.weight").unwrap();
        entry.0 = vec![6, 16, 1, 1, 1];
    })
    .unwrap();
    let message = expect_error(load_network(&misshapen, &device));
    assert!(
        message.contains("branch1.bot_fine.weight: the network expects [6, 16, 1, 1], the checkpoint has [6, 16, 1, 1, 1]"),
        "{message}"
    );

    let message = expect_error(edited_checkpoint(|t| t.retain(|k, _| k.starts_with("branch1.aspp"))));
    assert!(message.contains("holds no RPL network"), "{message}");
}
