//! The `rpl` command as a user runs it: outputs on the fixture images match the reference.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{FIXTURE_F16_TOLERANCE, FLOAT32_TOLERANCE, ReferenceCase, argmax_with_margin, assert_close, fixture};
use rpl_web::npy;

fn rpl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpl")).args(args).output().expect("rpl runs")
}

/// A palette PNG's raw indices (the train ids) and its palette (RGB triples).
fn read_indexed_png(path: &Path, w: usize, h: usize) -> (Vec<u8>, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Indexed, png::BitDepth::Eight), "{}", path.display());
    assert_eq!((info.width as usize, info.height as usize), (w, h));
    let palette = info.palette.as_ref().expect("an indexed PNG has a palette").to_vec();
    let mut ids = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut ids).unwrap();
    (ids, palette)
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

        let (ids, palette) = read_indexed_png(&file("classes.png"), w, h);
        let reference = argmax_with_margin(&case.f32("out1"), classes, 1e-3);
        let agree = ids.iter().zip(&reference).filter(|(ours, r)| r.is_none_or(|r| r == **ours)).count();
        assert_eq!(agree, w * h, "{}: class map is the argmax of out1", case.name);
        // Shown in the Cityscapes colours: the same file is the ids and their picture.
        for (id, colour) in rpl_web::visualize::CITYSCAPES_PALETTE.iter().enumerate() {
            assert_eq!(&palette[3 * id..3 * id + 3], colour, "palette entry of train id {id}");
        }
        let shown = image::open(file("classes.png")).unwrap().into_rgb8();
        let first = usize::from(ids[0]);
        assert_eq!(shown.get_pixel(0, 0).0, rpl_web::visualize::CITYSCAPES_PALETTE[first], "a viewer shows the class colour");

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
    // The permissions any new file gets here (not the 0600 of a private temporary file).
    let usual = std::fs::File::create(dir.path().join("any_new_file")).unwrap().metadata().unwrap().permissions();
    assert_eq!(std::fs::metadata(&converted).unwrap().permissions(), usual);

    let case = ReferenceCase::load("case_64x128");
    let out = dir.path().join("out");
    let output = rpl(&[
        "infer", "--backend", "wgpu", "--model", converted.to_str().unwrap(), "--out", out.to_str().unwrap(),
        case.png().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("on wgpu"));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "stderr is for our own messages (none here), not the graphics stack's");
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
    assert_eq!(stderr.matches(not_an_image.to_str().unwrap()).count(), 1, "the file is named once: {stderr}");
    assert!(dir.path().join("case_64x128_score.npy").exists(), "the good image is still processed");
}

#[test]
fn two_images_with_the_same_stem_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for folder in [&a, &b] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::copy(fixture("rpl_w8/case_64x128.png"), folder.join("street.png")).unwrap();
    }
    let out = dir.path().join("out");
    let model = fixture("rpl_w8/rpl_w8.pth");
    let (first, second) = (a.join("street.png"), b.join("street.png"));
    let output = rpl(&["infer", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), first.to_str().unwrap(), second.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(first.to_str().unwrap()) && stderr.contains(second.to_str().unwrap()) && stderr.contains("street_*"), "{stderr}");
    assert!(!out.exists(), "nothing was written");
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

/// A box of OoD (1) in an inlier (0) label, its first row ignored (255).
fn box_label(w: usize, h: usize) -> Vec<u8> {
    (0..w * h)
        .map(|i| match (i / w, i % w) {
            (0, _) => 255,
            (y, x) if (h / 4..h / 2).contains(&y) && (w / 3..w / 2).contains(&x) => 1,
            _ => 0,
        })
        .collect()
}

fn save_grey(path: &Path, w: usize, h: usize, values: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::save_buffer_with_format(path, values, w as u32, h as u32, image::ExtendedColorType::L8, image::ImageFormat::Png).unwrap();
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Fishyscapes Static and SMIYC ObstacleTrack folders holding the fixture images (PNG, and
/// lossless WebP: the same pixels): the saved score maps are the reference's energies, the
/// pooled figures are those of the saved maps, and `--scores` gives them back without a model.
#[test]
fn eval_scores_benchmark_folders_like_the_reference_and_reevaluates_saved_scores() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [ReferenceCase::load("case_64x128"), ReferenceCase::load("case_97x161")];
    let static_root = dir.path().join("fishyscapes/Static");
    let obstacle = dir.path().join("smiyc/dataset_ObstacleTrack");
    for (i, case) in cases.iter().enumerate() {
        let picture = image::open(case.png()).unwrap().into_rgb8();
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        std::fs::create_dir_all(static_root.join("original")).unwrap();
        std::fs::copy(case.png(), static_root.join(format!("original/{}.png", case.name))).unwrap();
        save_grey(&static_root.join(format!("labels/{}.png", case.name)), w, h, &box_label(w, h));
        std::fs::create_dir_all(obstacle.join("images")).unwrap();
        picture.save_with_format(obstacle.join(format!("images/validation_{i}.webp")), image::ImageFormat::WebP).unwrap();
        save_grey(&obstacle.join(format!("labels_masks/validation_{i}_labels_semantic.png")), w, h, &box_label(w, h));
    }
    // A damaged image with its label: skipped by name, the run goes on.
    std::fs::write(static_root.join("original/damaged.png"), b"\x89PNG truncated").unwrap();
    save_grey(&static_root.join("labels/damaged.png"), 8, 8, &[0; 64]);

    let model = fixture("rpl_w8/rpl_w8.pth");
    for (kind, root, names) in [
        ("fs-static", dir.path().join("fishyscapes"), ["case_64x128", "case_97x161"]),
        ("smiyc-obstacle", dir.path().join("smiyc"), ["validation_0", "validation_1"]),
    ] {
        let scores = dir.path().join(format!("{kind}-scores"));
        let report = dir.path().join(format!("{kind}.json"));
        let output = rpl(&[
            "eval", "--dataset", kind, root.to_str().unwrap(), "--model", model.to_str().unwrap(), "--backend", "ndarray",
            "--save-scores", scores.to_str().unwrap(), "--json", report.to_str().unwrap(),
        ]);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{kind}: {stderr}");
        assert!(stdout.contains("AUROC") && stdout.contains("FPR95"), "{stdout}");
        let first = json(&report);

        let mut pool = rpl_web::metrics::OodScorePool::new();
        for (case, name) in cases.iter().zip(names) {
            let (shape, score) = read_npy(&scores.join(format!("{name}.npy")));
            let [_, _, h, w] = case.shape("out1")[..] else { panic!("out1 is 4-D") };
            assert_eq!(shape, vec![h, w]);
            assert_close(&format!("{kind} {name}.npy"), &score, &case.f32("energy"), FLOAT32_TOLERANCE);
            pool.add(&score, &box_label(w, h)).unwrap();
        }
        let expected = pool.metrics().unwrap();
        for (key, value) in [("auroc", expected.auroc), ("ap", expected.ap), ("fpr95", expected.fpr95)] {
            // The file holds the shortest exact decimal; serde_json's default parser may land one
            // ulp away (its exact parser is a feature that would rebuild burn for the tests).
            let read = first["rpl"][key].as_f64().unwrap();
            assert!((read - value).abs() <= 2.0 * f64::EPSILON * value.abs(), "{kind} pooled {key}: {read} vs {value}");
        }
        assert_eq!(first["per_image"].as_array().unwrap().len(), 2);
        assert_eq!(first["per_image"][1]["name"], names[1]);
        assert!(first["baseline"]["ap"].as_f64().is_some(), "the closed-set row is there when the network ran");
        if kind == "fs-static" {
            assert!(stderr.contains("damaged.png"), "{stderr}");
            assert_eq!(first["skipped"].as_array().unwrap().len(), 1);
            assert!(stdout.contains("1 files skipped"), "{stdout}");
        }

        // The saved maps, evaluated again without a model: the same pooled figures.
        let again = dir.path().join(format!("{kind}-again.json"));
        let output = rpl(&["eval", "--dataset", kind, root.to_str().unwrap(), "--scores", scores.to_str().unwrap(), "--json", again.to_str().unwrap()]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let second = json(&again);
        assert_eq!(second["rpl"], first["rpl"]);
        assert!(second["baseline"].is_null());
    }
}

/// A folder written by `rpl scenes` evaluates to the same figures as the generated set it holds,
/// in the score mode asked for (entropy here: a generated set scored in energy would differ).
#[test]
fn eval_of_a_scenes_folder_equals_eval_of_the_generated_scenes_in_the_score_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("scenes");
    let output = rpl(&["scenes", "--out", scenes.to_str().unwrap(), "--count", "2", "--outliers", "held-out"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/rpl-demo.safetensors");
    let [folder, generated] = [dir.path().join("folder.json"), dir.path().join("generated.json")];
    let model = model.to_str().unwrap();
    let output = rpl(&["eval", "--dataset", "synthetic", scenes.to_str().unwrap(), "--model", model, "--score", "entropy", "--json", folder.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = rpl(&["eval", "--dataset", "synthetic", "--count", "2", "--model", model, "--score", "entropy", "--json", generated.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("entropy of out2 (RPL)") && stdout.contains("entropy of out1 (closed set)") && !stdout.contains("energy"), "{stdout}");
    let [folder, generated] = [json(&folder), json(&generated)];
    assert_eq!((folder["score"].as_str(), generated["score"].as_str()), (Some("entropy"), Some("entropy")));
    for head in ["rpl", "baseline"] {
        for key in ["auroc", "ap", "fpr95", "n_ood", "n_inlier"] {
            assert_eq!(folder[head][key], generated[head][key], "{head} {key}");
        }
    }
    let (a, b) = (folder["miou_out1"].as_f64().unwrap(), generated["miou_out1"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-12, "mIoU {a} vs {b}");
}

#[test]
fn eval_names_a_missing_folder_and_a_dataset_given_without_one() {
    let model = fixture("rpl_w8/rpl_w8.pth");
    let output = rpl(&["eval", "--dataset", "road-anomaly", "no/such/road_anomaly", "--model", model.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no/such/road_anomaly") && stderr.contains("original/NAME.jpg"), "{stderr}");
    let output = rpl(&["eval", "--dataset", "smiyc-anomaly", "--model", model.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs its folder"));
    // On a folder that exists, so that only the conflict can fail the run.
    let dir = tempfile::tempdir().unwrap();
    let (folder, scores) = (dir.path().to_str().unwrap(), dir.path().join("scores"));
    let output = rpl(&["eval", "--dataset", "fs-static", folder, "--model", model.to_str().unwrap(), "--scores", scores.to_str().unwrap()]);
    assert!(!output.status.success(), "a model and saved scores together are refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be used with") && stderr.contains("--scores") && stderr.contains("--model"), "{stderr}");
    // Flags that would be ignored are refused: a score mode or backend for saved score maps
    // (scored when saved), the generated set's flags with a folder.
    let saved = ["eval", "--dataset", "fs-static", folder, "--scores", scores.to_str().unwrap()];
    let with_folder = ["eval", "--dataset", "synthetic", folder, "--model", model.to_str().unwrap()];
    let cases = [
        (saved, ["--score", "entropy"], "--scores"),
        (saved, ["--backend", "ndarray"], "--scores"),
        (with_folder, ["--count", "3"], "DIR"),
        (with_folder, ["--outliers", "any"], "DIR"),
    ];
    for (args, flag, conflicting) in cases {
        let output = rpl(&[&args[..], &flag[..]].concat());
        assert!(!output.status.success(), "{flag:?} with {conflicting} is refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot be used with") && stderr.contains(flag[0]) && stderr.contains(conflicting), "{stderr}");
    }
}

/// Without flags the benchmark runs the demo model's width on the CPU at 512x256: it finishes
/// anywhere, GPU or not.
/// The source hash as build.rs documents it, recomputed by the shell's sha256sum (not our code).
fn source_hash_by_sha256sum() -> String {
    let listing = "find Cargo.toml Cargo.lock build.rs src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12";
    let output = Command::new("sh").args(["-c", listing]).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("sh runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().expect("a hash").to_owned()
}

#[test]
fn version_names_the_sources_and_reports_name_the_model_by_its_sha256() {
    let output = rpl(&["--version"]);
    let expected = format!("rpl {} (source {})", env!("CARGO_PKG_VERSION"), source_hash_by_sha256sum());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected, "the binary was built from the sources checked out");

    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rpl-demo.safetensors");
    let report = dir.path().join("eval.json");
    let output = rpl(&["eval", "--count", "1", "--model", model.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = sha256sum(&model);
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("sha256 {hash}")), "{}", String::from_utf8_lossy(&output.stdout));
    let provenance = &json(&report)["provenance"];
    assert_eq!(provenance["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(provenance["source"], source_hash_by_sha256sum().as_str());
    let size = std::fs::metadata(&model).unwrap().len();
    assert_eq!(provenance["model"], serde_json::json!({"name": "rpl-demo.safetensors", "bytes": size, "sha256": hash}));
}

#[test]
fn bench_defaults_to_the_demo_width_on_the_cpu_at_one_small_size() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let output = rpl(&["bench", "--reps", "1", "--json", report.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json(&report);
    assert_eq!((report["backend"].as_str(), report["width_divisor"].as_u64()), (Some("flex"), Some(8)));
    // Random weights: the report names the build, and no model.
    assert_eq!((report["provenance"]["version"].as_str(), report["provenance"]["model"].is_null()), (Some(env!("CARGO_PKG_VERSION")), true));
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 1);
    assert_eq!((sizes[0]["width"].as_u64(), sizes[0]["height"].as_u64()), (Some(512), Some(256)));
    let help = String::from_utf8_lossy(&rpl(&["bench", "--help"]).stdout).into_owned();
    for default in ["[default: 8]", "[default: 512x256]", "[default: flex]"] {
        assert!(help.contains(default), "the help says {default}: {help}");
    }
}

#[test]
fn bench_prints_and_writes_each_sizes_stages_and_refuses_a_width_that_does_not_divide_or_a_cpu_convolution_choice() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let output = rpl(&["bench", "--width-divisor", "16", "--sizes", "64x32,96x48", "--backend", "ndarray", "--reps", "1", "--json", report.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("median ms"));
    let report = json(&report);
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    assert_eq!((sizes[1]["width"].as_u64(), sizes[1]["height"].as_u64()), (Some(96), Some(48)));
    for stage in ["trunk", "aspp", "residual block", "decoder", "score"] {
        assert!(sizes[0]["stages_ms"][stage].as_f64().is_some_and(|ms| ms >= 0.0), "{stage} timed");
    }
    assert!(sizes[0]["tflop_per_s"].is_null(), "TFLOP/s only for the released width, whose cost is known");
    assert_eq!(report["gpu_convolution"].as_str(), Some("direct"), "the default convolution is recorded");
    assert_eq!(report["dtype"].as_str(), Some("f32"), "the default float type is recorded");
    assert_eq!(report["autotune"].as_bool(), Some(cfg!(feature = "autotune")), "whether burn's autotune was built in is recorded");
    let output = rpl(&["bench", "--width-divisor", "3", "--backend", "ndarray"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("width divisor 3"));
    let output = rpl(&["bench", "--backend", "ndarray", "--gpu-convolution", "products"]);
    assert!(!output.status.success(), "matrix-product convolutions are a wgpu choice");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--backend wgpu only"), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `--layers` times every convolution by kind: the released width's cost is theirs (the
/// reference's 3.76 TFLOP per 512x1024 frame, scaled to the pixels), and each ASPP dilation
/// runs twice (the network's ASPP and the residual block's).
#[test]
fn bench_layers_accounts_for_the_released_networks_cost_by_convolution_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let output = rpl(&["bench", "--width-divisor", "1", "--sizes", "64x32", "--reps", "1", "--layers", "--json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("convolutions per frame") && stdout.contains("GFLOP/s"), "{stdout}");
    let report = json(&path);
    let kinds = report["sizes"][0]["layers"].as_array().unwrap();
    let kind = |name: &str| kinds.iter().find(|k| k["kind"] == name).unwrap_or_else(|| panic!("no {name} in {kinds:?}"));
    for rate in [12, 24, 36] {
        assert_eq!(kind(&format!("3x3 dilation {rate}"))["calls"].as_u64(), Some(2), "ASPP rate {rate}");
    }
    assert!(kinds.iter().all(|k| k["ms"].as_f64().is_some_and(|ms| ms > 0.0)), "{kinds:?}");
    let flop: f64 = kinds.iter().map(|k| k["flop"].as_f64().unwrap()).sum();
    let expected = rpl_web::benchmark::RELEASED_TFLOP_AT_512X1024 * 1e12 * (64.0 * 32.0) / (512.0 * 1024.0);
    assert!((flop / expected - 1.0).abs() < 0.02, "{flop:e} FLOP against {expected:e}");
    let plain = rpl(&["bench", "--sizes", "64x32", "--reps", "1", "--json", path.to_str().unwrap()]);
    assert!(plain.status.success());
    assert!(json(&path)["sizes"][0]["layers"].is_null(), "no convolution is timed without --layers");
}

/// On wgpu the benchmark counts one frame's kernel launches: with implicit products every one of
/// the network's 63 convolutions is one matrix-product launch (none falls back to burn's
/// convolution kernel, which then runs only what the score needs), and a CPU frame launches none.
#[test]
fn bench_counts_a_frames_kernel_launches_on_wgpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let launches = |backend: &str, convolution: &str| {
        let mut args = vec!["bench", "--backend", backend, "--sizes", "32x32", "--reps", "1", "--json", path.to_str().unwrap()];
        if backend == "wgpu" {
            args.extend(["--gpu-convolution", convolution]);
        }
        let output = rpl(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report = json(&path);
        // What the kernels were compiled to, on wgpu only (this build has no `vulkan` feature).
        let compiler = if backend == "wgpu" { serde_json::json!("wgpu<wgsl>") } else { serde_json::Value::Null };
        assert_eq!(report["shader_compiler"], compiler, "{report}");
        (String::from_utf8_lossy(&output.stdout).into_owned(), report["sizes"][0]["launches"].clone())
    };
    let kernel = |launches: &serde_json::Value, name: &str| {
        let by_kernel = launches["by_kernel"].as_array().unwrap();
        by_kernel.iter().find(|k| k[0] == name).map_or(0, |k| k[1].as_u64().unwrap())
    };
    let (stdout, direct) = launches("wgpu", "direct");
    assert!(stdout.contains("on wgpu (wgpu<wgsl>), convolutions: direct"), "{stdout}");
    let total = direct["total"].as_u64().unwrap();
    assert!(stdout.contains(&format!("kernel launches per frame: {total} (")), "{stdout}");
    let sum: u64 = direct["by_kernel"].as_array().unwrap().iter().map(|k| k[1].as_u64().unwrap()).sum();
    assert_eq!(sum, total, "{direct}");
    // Width 1/8's 63 convolutions: all on matrix products but the 3 whose input channels the
    // implicit routine cannot load 4 at a time (the stem's 3; 6 + 32 in each decoder pass).
    let (_, implicit) = launches("wgpu", "implicit");
    assert_eq!(kernel(&implicit, "MatmulEntry"), 60, "{implicit}");
    assert_eq!(kernel(&direct, "DirectConv2dKernel") - kernel(&implicit, "DirectConv2dKernel"), 60, "{direct}\n{implicit}");
    // Our tile kernels run all 63, each its own kernel (burn's still runs the score's blur).
    for (choice, name) in [("tiles", "RegisterTileConv2d"), ("staged", "StagedTileConv2d")] {
        let (_, tiles) = launches("wgpu", choice);
        assert_eq!(kernel(&tiles, name), 63, "{tiles}");
        assert_eq!(kernel(&direct, "DirectConv2dKernel") - kernel(&tiles, "DirectConv2dKernel"), 63, "{direct}\n{tiles}");
    }
    let (stdout, flex) = launches("flex", "");
    assert!(flex.is_null() && !stdout.contains("kernel launches"), "{flex}");
}

#[test]
fn bench_with_a_peer_prints_onnx_runtimes_figures_and_the_ratio_or_says_what_is_missing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("net.onnx");
    std::fs::write(&onnx, b"not really ONNX").unwrap();
    // A stand-in for the peer's Python: it answers as ONNX Runtime's would, with the thread count
    // it was given (its arguments: -c, the script, the file, height, width, threads): its first
    // run, then for each line N it reads, N runs (each 8 ms, but the third 7 ms), and it logs the
    // lines it read and when (nanoseconds), so that its runs and ours are seen to alternate.
    let stand_in = dir.path().join("python");
    let log = dir.path().join("asked");
    let script = format!(
        r#"#!/bin/sh
echo '{{"version": "9.9-test", "threads": '$6', "first_ms": 40}}'
runs=0
while read n; do
  echo "$n $(date +%s%N)" >> '{}'
  runs=$((runs + n))
  if [ $runs -eq 3 ]; then echo '{{"times_ms": [7]}}'; else echo '{{"times_ms": [8]}}'; fi
done
"#,
        log.display()
    );
    std::fs::write(&stand_in, script).unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = dir.path().join("bench.json");
    let args = ["bench", "--width-divisor", "16", "--sizes", "64x32", "--reps", "4", "--peer", onnx.to_str().unwrap(), "--json", report.to_str().unwrap()];
    // ONNX Runtime gets as many threads as flex's pool has, one here.
    let output = Command::new(env!("CARGO_BIN_EXE_rpl")).args(args).env("RPL_PEER_PYTHON", &stand_in).env("RAYON_NUM_THREADS", "1").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json(&report);
    let size = &report["sizes"][0];
    // One run of its asked for after each of our four, with a pause before and after each (the
    // runtimes' threads settle): its median and fastest of those.
    let asked: Vec<(u32, u128)> = std::fs::read_to_string(&log).unwrap().lines().map(|l| {
        let (runs, at) = l.split_once(' ').unwrap();
        (runs.parse().unwrap(), at.parse().unwrap())
    }).collect();
    assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 1, 1, 1], "asked one run at a time");
    assert!(asked.windows(2).all(|w| w[1].1 - w[0].1 >= 200_000_000), "one of our runs and two pauses between its runs: {asked:?}");
    assert_eq!((size["peer"]["median_ms"].as_f64(), size["peer"]["min_ms"].as_f64(), size["peer"]["first_ms"].as_f64()), (Some(8.0), Some(7.0), Some(40.0)));
    let ratio = format!("ours / theirs = {:.2}", size["median_ms"].as_f64().unwrap() / 8.0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ONNX Runtime 9.9-test (1 threads") && stdout.contains(&ratio), "{ratio} in: {stdout}");
    // And to the logits alone, as the peer stops there: every stage but the score.
    let stages = size["stages_ms"].as_object().unwrap();
    assert!(stages.contains_key("score"), "{stages:?}");
    let logits_ms: f64 = stages.iter().filter(|(name, _)| *name != "score").map(|(_, ms)| ms.as_f64().unwrap()).sum();
    let logits_ratio = format!("(to our logits, the stages but the score: {:.2})", logits_ms / 8.0);
    assert!(stdout.contains(&logits_ratio), "{logits_ratio} in: {stdout}");

    // A Python without onnxruntime (or one that cannot read the file) and a missing file: said.
    let output = Command::new(env!("CARGO_BIN_EXE_rpl")).args(&args[..9]).env("RPL_PEER_PYTHON", "python3").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("the ONNX Runtime peer (python3)"), "{stderr}");
    assert!(stderr.contains("pip install onnxruntime numpy") || stderr.contains("cannot open"), "{stderr}");
    let output = rpl(&["bench", "--peer", "missing.onnx"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.onnx: no such ONNX file (--peer)"));
}

#[test]
fn infer_in_float16_runs_on_wgpu_and_an_unknown_dtype_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, image) = (fixture("rpl_w8/rpl_w8.pth"), fixture("rpl_w8/case_64x128.png"));
    let args = ["infer", "--model", model.to_str().unwrap(), "--out", dir.path().to_str().unwrap(), "--backend", "wgpu"];
    let output = rpl(&[&args[..], &["--dtype", "f16", image.to_str().unwrap()]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("on wgpu, f16"), "{}", String::from_utf8_lossy(&output.stdout));
    let (shape, score) = read_npy(&dir.path().join("case_64x128_score.npy"));
    assert_eq!(shape, vec![64, 128]);
    let case = ReferenceCase::load("case_64x128");
    assert_close("float16 score.npy", &score, &case.f32("energy"), FIXTURE_F16_TOLERANCE);
    let output = rpl(&[&args[..], &["--dtype", "f64", image.to_str().unwrap()]].concat());
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown dtype `f64`"), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn train_refuses_crops_larger_than_the_scenes() {
    let dir = tempfile::tempdir().unwrap();
    let output = rpl(&["train", "--out", dir.path().to_str().unwrap(), "--crop", "1024x256", "--stage1-steps", "1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("512x256 scenes"), "{}", String::from_utf8_lossy(&output.stderr));
}
