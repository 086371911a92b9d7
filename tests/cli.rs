//! The `rpl` command as a user runs it: outputs on the fixture images match the reference.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{FLOAT32_TOLERANCE, ReferenceCase, argmax_with_margin, assert_close, fixture};
use rpl_web::npy;

fn rpl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpl")).args(args).output().expect("rpl runs")
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn infer_writes_classes_scores_overlay_and_logits_that_match_the_reference() {
    let out = tempfile::tempdir().unwrap();
    let cases = [ReferenceCase::load("case_64x128"), ReferenceCase::load("case_97x161")];
    let model = fixture("rpl_w8/rpl_w8_wrapped.pth");
    let pngs: Vec<String> = cases.iter().map(|c| c.png().display().to_string()).collect();
    let mut args = vec!["infer", "--model", model.to_str().unwrap(), "--out", out.path().to_str().unwrap(), "--save-logits"];
    args.extend(pngs.iter().map(String::as_str));
    let output = rpl(&args);
    assert!(output.status.success(), "rpl infer failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("width 1/8"));

    for case in &cases {
        let [_, classes, h, w] = case.shape("out1")[..] else { panic!("out1 is 4-D") };
        let file = |suffix: &str| out.path().join(format!("{}_{suffix}", case.name));

        let (shape, score) = read_npy(&file("score.npy"));
        assert_eq!(shape, vec![h, w]);
        assert_close(&format!("{} score.npy", case.name), &score, &case.f32("energy"), FLOAT32_TOLERANCE);
        for head in ["out1", "out2"] {
            let (shape, logits) = read_npy(&file(&format!("{head}.npy")));
            assert_eq!(shape, vec![classes, h, w]);
            assert_close(&format!("{} {head}.npy", case.name), &logits, &case.f32(head), FLOAT32_TOLERANCE);
        }

        let class_map = image::open(file("classes.png")).unwrap().into_luma8();
        assert_eq!((class_map.width() as usize, class_map.height() as usize), (w, h));
        let reference = argmax_with_margin(&case.f32("out1"), classes, 1e-3);
        let agree = class_map.as_raw().iter().zip(&reference).filter(|(ours, r)| r.is_none_or(|r| r == **ours)).count();
        assert_eq!(agree, w * h, "{}: class map is the argmax of out1", case.name);

        let overlay = image::open(file("overlay.png")).unwrap().into_rgb8();
        assert_eq!((overlay.width() as usize, overlay.height() as usize), (w, h));
    }
}

/// Also runs the converted model on wgpu (natively: lavapipe where there is no GPU).
#[test]
fn convert_writes_a_loadable_half_size_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("w8_f16.safetensors");
    let output = rpl(&["convert", fixture("rpl_w8/rpl_w8.pth").to_str().unwrap(), converted.to_str().unwrap(), "--f16"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("width 1/8"));

    let case = ReferenceCase::load("case_64x128");
    let out = dir.path().join("out");
    let output = rpl(&[
        "infer", "--backend", "wgpu", "--model", converted.to_str().unwrap(), "--out", out.to_str().unwrap(),
        case.png().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("on wgpu"));
    let (_, score) = read_npy(&out.join("case_64x128_score.npy"));
    assert_close("float16 model score", &score, &case.f32("energy"), 2e-2);
}

#[test]
fn a_bad_model_or_image_fails_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pth");
    std::fs::write(&bogus, b"this is not a checkpoint at all").unwrap();
    let png = fixture("rpl_w8/case_64x128.png");
    let output = rpl(&["infer", "--model", bogus.to_str().unwrap(), "--out", dir.path().to_str().unwrap(), png.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bogus.pth"));

    let not_an_image = dir.path().join("notes.png");
    std::fs::write(&not_an_image, b"plain text").unwrap();
    let model = fixture("rpl_w8/rpl_w8.pth");
    let output = rpl(&[
        "infer", "--model", model.to_str().unwrap(), "--out", dir.path().to_str().unwrap(),
        not_an_image.to_str().unwrap(), png.to_str().unwrap(),
    ]);
    assert!(!output.status.success(), "one failed image makes the run fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("notes.png") && stderr.contains("1 of 2 images failed"), "{stderr}");
    assert!(dir.path().join("case_64x128_score.npy").exists(), "the good image is still processed");
}

#[test]
fn scenes_writes_images_labels_masks_and_a_manifest_the_same_every_time() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let output = rpl(&["scenes", "--out", dir.path().to_str().unwrap(), "--count", "2", "--size", "128x64", "--outliers", "any"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    for name in ["scene_0000.png", "scene_0001_labels.png", "scene_0001_ood.png", "index.json"] {
        let [a, b] = [0, 1].map(|i| std::fs::read(dirs[i].path().join(name)).unwrap());
        assert_eq!(a, b, "{name} is deterministic");
    }
    let labels = image::open(dirs[0].path().join("scene_0000_labels.png")).unwrap().into_luma8();
    let ood = image::open(dirs[0].path().join("scene_0000_ood.png")).unwrap().into_luma8();
    assert_eq!(labels.dimensions(), (128, 64));
    for (l, o) in labels.pixels().zip(ood.pixels()) {
        let expected = match l.0[0] {
            254 => 1,
            255 => 255,
            _ => 0,
        };
        assert_eq!(o.0[0], expected, "the OoD mask follows the labels (254 outliers)");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dirs[0].path().join("index.json")).unwrap()).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2);
    assert_eq!(manifest[0]["ood"], "scene_0000_ood.png");
}

#[test]
fn eval_names_an_unknown_dataset_and_a_missing_model() {
    let output = rpl(&["eval", "--dataset", "cityscapes", "--model", "x.safetensors"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown dataset `cityscapes`"));
    let output = rpl(&["eval", "--model", "no/such/model.safetensors", "--count", "1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no/such/model.safetensors"), "{}", String::from_utf8_lossy(&output.stderr));
}
