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
