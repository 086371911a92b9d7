//! The float16 path (`--dtype f16`): wgpu computing in half precision on an adapter with
//! shader-f16 (lavapipe here) stays within its own tolerance of the float32 results.

mod common;

use std::sync::OnceLock;

use burn::tensor::{DType, Device, FloatDType, Tensor};
use common::{CASES, FIXTURE_F16_TOLERANCE, ReferenceCase, assert_close, fixture};
use rpl_web::backend::{BackendKind, Precision};
use rpl_web::evaluation::HeldOutSet;
use rpl_web::model::convolution::{GpuConvolution, arrange_weights, convolutions_run, set_gpu_convolution};
use rpl_web::preprocess::RgbImage;
use rpl_web::scoring::{ScoreMode, anomaly_score};
use rpl_web::synthetic::OutlierSet;
use rpl_web::weights::pth::PthCheckpoint;
use rpl_web::weights::{load_network, open_checkpoint};

/// The trained demo model amplifies far less (measured: 0.3 to 0.6 % of the largest value).
const DEMO_F16_TOLERANCE: f32 = 0.01;

/// One float16 wgpu device for the whole test binary: burn fixes a device's float type once.
fn half_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| BackendKind::Wgpu.device_with(Precision::F16).expect("lavapipe offers shader-f16")).clone()
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.cast(FloatDType::F32).into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn float16_matches_the_reference_outputs_within_its_tolerance() {
    let device = half_device();
    let network = load_network(&PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap(), &device).unwrap().fold_batch_norms();
    // burn's kernel, then our tile kernels (the choice is process-wide: the other test here may
    // run on any, and all are checked here).
    for choice in [GpuConvolution::Direct, GpuConvolution::RegisterTiles, GpuConvolution::StagedTiles] {
        set_gpu_convolution(choice);
        let network = arrange_weights(network.clone());
        for name in CASES {
            let case = ReferenceCase::load(name);
            let image = RgbImage::decode(case.name, &std::fs::read(case.png()).unwrap()).unwrap();
            let before = convolutions_run();
            let logits = network.forward(image.to_input(&device));
            assert_eq!(logits.out1.dtype(), DType::F16, "the network computes in float16");
            let tiles = convolutions_run()[4] - before[4];
            assert_eq!(tiles > 0, choice != GpuConvolution::Direct, "{}: {tiles} convolutions on our tile kernels", choice.name());
            let energy = values(anomaly_score(logits.out2.clone(), ScoreMode::Energy));
            for (key, ours) in [("out1", values(logits.out1)), ("out2", values(logits.out2)), ("energy", energy)] {
                let error = assert_close(&format!("f16 {} {name} {key}", choice.name()), &ours, &case.f32(key), FIXTURE_F16_TOLERANCE);
                println!("f16 {} {name} {key}: relative error {error:.4}", choice.name());
            }
        }
    }
    set_gpu_convolution(GpuConvolution::Direct);
}

#[test]
fn float16_stays_within_one_percent_of_float32_on_the_bundled_model() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rpl-demo.safetensors");
    let checkpoint = open_checkpoint(&path).unwrap();
    let (half, full) = (half_device(), BackendKind::Flex.device().unwrap());
    // Float16 as inference runs it (BatchNorms folded) against the float32 network as loaded.
    let half_network = load_network(checkpoint.as_ref(), &half).unwrap().fold_batch_norms();
    let full_network = load_network(checkpoint.as_ref(), &full).unwrap();
    let set = HeldOutSet { count: 3, size: [256, 512], outliers: OutlierSet::HeldOut };
    for index in 0..set.count {
        let scene = set.scene(index);
        let image = RgbImage { width: scene.width, height: scene.height, pixels: scene.rgb8 };
        let (ours, reference) = (half_network.forward(image.to_input(&half)), full_network.forward(image.to_input(&full)));
        assert_eq!(ours.out1.dtype(), DType::F16, "the network computes in float16");
        let classes = |t: Tensor<4>| t.argmax(1).into_data().iter::<i64>().collect::<Vec<_>>();
        let (our_classes, reference_classes) = (classes(ours.out1.clone()), classes(reference.out1.clone()));
        let agreement = our_classes.iter().zip(&reference_classes).filter(|(a, b)| a == b).count() as f64 / our_classes.len() as f64;
        assert!(agreement >= 0.99, "scene {index}: argmax(out1) agrees with float32 on {agreement}");
        let energy = |t: Tensor<4>| values(anomaly_score(t, ScoreMode::Energy));
        let pairs = [
            ("out1", values(ours.out1.clone()), values(reference.out1.clone())),
            ("out2", values(ours.out2.clone()), values(reference.out2.clone())),
            ("energy", energy(ours.out2), energy(reference.out2)),
        ];
        for (key, a, b) in pairs {
            let error = assert_close(&format!("f16 scene {index} {key}"), &a, &b, DEMO_F16_TOLERANCE);
            println!("f16 scene {index} {key}: relative error {error:.4}, class agreement {agreement:.4}");
        }
    }
}
