//! Every bad input of tests/BAD_INPUTS.md on the command line (and the decoder under it): each
//! gets a readable error naming the problem, or is read correctly; nothing panics.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixture;
use rpl_web::preprocess::RgbImage;

fn bad(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs").join(name)
}

fn rpl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpl")).args(args).output().expect("rpl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rpl infer` with the fixture model on one image: (success, stderr, out dir).
fn infer(image: &Path, extra: &[&str]) -> (bool, String, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let model = fixture("rpl_w8/rpl_w8.pth");
    let mut args = vec!["infer", "--model", model.to_str().unwrap(), "--out", out.path().to_str().unwrap()];
    args.extend(extra);
    args.push(image.to_str().unwrap());
    let output = rpl(&args);
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{}: rpl panicked: {stderr}", image.display());
    (output.status.success(), stderr, out)
}

fn decode(name: &str) -> RgbImage {
    RgbImage::decode(name, &std::fs::read(bad(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn pixel(image: &RgbImage, x: usize, y: usize) -> [u8; 3] {
    let i = 3 * (y * image.width + x);
    [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]]
}

fn output_size(out: &Path, stem: &str) -> (u32, u32) {
    image::image_dimensions(out.join(format!("{stem}_classes.png"))).unwrap()
}

#[test]
fn files_that_are_no_image_fail_by_name_and_the_other_images_still_run() {
    for (name, expected) in [
        ("not_an_image.png", "not a PNG, JPEG or WebP file"),
        ("truncated.jpg", "cannot decode the image"),
        ("empty.png", "the file is empty (0 bytes)"),
    ] {
        let (ok, stderr, _) = infer(&bad(name), &[]);
        assert!(!ok, "{name} fails");
        assert!(stderr.contains(name) && stderr.contains(expected), "{name}: {stderr}");
    }
    // One bad file among good ones: the good one is still written.
    let out = tempfile::tempdir().unwrap();
    let model = fixture("rpl_w8/rpl_w8.pth");
    let output = rpl(&[
        "infer", "--model", model.to_str().unwrap(), "--out", out.path().to_str().unwrap(),
        bad("truncated.jpg").to_str().unwrap(), bad("scene_64x48.png").to_str().unwrap(),
    ]);
    assert!(text(&output.stderr).contains("1 of 2 images failed"));
    assert_eq!(output_size(out.path(), "scene_64x48"), (64, 48));
}

#[test]
fn tiny_images_run_at_their_own_size() {
    for (name, size) in [("one_pixel.png", (1, 1)), ("three_pixels.png", (3, 3))] {
        let (ok, stderr, out) = infer(&bad(name), &[]);
        assert!(ok, "{name}: {stderr}");
        assert_eq!(output_size(out.path(), name.trim_end_matches(".png")), size);
        let (shape, score) = rpl_web::npy::read_f32(std::fs::File::open(out.path().join(format!("{}_score.npy", name.trim_end_matches(".png")))).unwrap()).unwrap();
        assert_eq!(shape, vec![size.1 as usize, size.0 as usize]);
        assert!(score.iter().all(|v| v.is_finite()), "{name}: finite scores");
    }
}

#[test]
fn grey_alpha_palette_16_bit_and_cmyk_images_read_as_the_same_rgb_picture() {
    let reference = decode("scene_64x48.png");
    let max_diff = |image: &RgbImage| {
        assert_eq!((image.width, image.height), (64, 48));
        image.pixels.iter().zip(&reference.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap()
    };
    assert_eq!(max_diff(&decode("alpha.png")), 0, "alpha is dropped");
    assert_eq!(max_diff(&decode("palette.png")), 0, "palette entries are looked up");
    assert_eq!(max_diff(&decode("rgb16.png")), 0, "16-bit values v*257 read as v");
    // JPEG in CMYK: lossy, so close rather than equal; a wrong conversion is off by ~200.
    assert!(max_diff(&decode("cmyk.jpg")) <= 24, "CMYK converted to RGB: off by {}", max_diff(&decode("cmyk.jpg")));
    let grey = decode("grey.png");
    for (g, px) in grey.pixels.chunks_exact(3).zip(reference.pixels.chunks_exact(3)) {
        assert!(g[0] == g[1] && g[1] == g[2], "grey stays grey");
        let luma = (299 * px[0] as u32 + 587 * px[1] as u32 + 114 * px[2] as u32) / 1000;
        assert!(g[0].abs_diff(luma as u8) <= 1);
    }
    for name in ["grey.png", "alpha.png", "palette.png", "rgb16.png", "cmyk.jpg"] {
        let (ok, stderr, out) = infer(&bad(name), &[]);
        assert!(ok, "{name}: {stderr}");
        assert_eq!(output_size(out.path(), Path::new(name).file_stem().unwrap().to_str().unwrap()), (64, 48));
    }
}

#[test]
fn exif_rotation_is_honoured() {
    // Stored 64x48 (red left half, blue right half, green top band) with orientation 6: shown
    // turned 90 degrees clockwise, so red is on top, blue at the bottom, green on the right.
    let image = decode("exif_rotated.jpg");
    assert_eq!((image.width, image.height), (48, 64));
    let near = |got: [u8; 3], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 40);
    assert!(near(pixel(&image, 4, 4), [200, 30, 30]), "top left red: {:?}", pixel(&image, 4, 4));
    assert!(near(pixel(&image, 4, 60), [30, 30, 200]), "bottom left blue: {:?}", pixel(&image, 4, 60));
    assert!(near(pixel(&image, 45, 4), [30, 200, 30]), "top right green: {:?}", pixel(&image, 45, 4));
    let (ok, stderr, out) = infer(&bad("exif_rotated.jpg"), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(output_size(out.path(), "exif_rotated"), (48, 64));
}

#[test]
fn a_12000x9000_image_is_shrunk_with_a_notice() {
    let (ok, stderr, out) = infer(&bad("huge_12000x9000.png"), &["--max-side", "1024"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("12000x9000 shrunk to 1024x768 (--max-side 1024)"), "{stderr}");
    assert_eq!(output_size(out.path(), "huge_12000x9000"), (1024, 768));
    // The default keeps the longer side at 2048, without running the network to check.
    let image = decode("huge_12000x9000.png");
    let small = image.fit_within(2048).expect("shrunk");
    assert_eq!((small.width, small.height), (2048, 1536));
    // The checkerboard survives: 1000-pixel squares become ~171-pixel ones, white then black.
    assert_eq!(pixel(&small, 80, 80), [255, 255, 255]);
    assert_eq!(pixel(&small, 250, 80), [0, 0, 0]);
}

#[test]
fn an_image_past_the_decoding_cap_is_refused_before_its_pixels_are_allocated() {
    // A 20000x20000 grey PNG header with a tiny body: 400 megapixels, refused by its size.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.png");
    let row = vec![0u8; 20000 / 8 + 1];
    let mut encoder = png_encoder(&path, 20000, 20000);
    for _ in 0..20000 {
        encoder.write_all(&row).unwrap();
    }
    drop(encoder);
    let (ok, stderr, _) = infer(&path, &[]);
    assert!(!ok);
    assert!(stderr.contains("bomb.png is 20000x20000 pixels: larger than the 200 megapixels"), "{stderr}");
}

/// A 1-bit grey PNG written by hand (row filter bytes included by the caller).
fn png_encoder(path: &Path, width: u32, height: u32) -> impl std::io::Write {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.write_header().unwrap().into_stream_writer().unwrap()
}

use std::io::Write;

/// The demo model with one value of `key` set to NaN (float16 0x7e00), at `path`.
fn model_with_nan(path: &Path, key: &str) {
    let mut bytes = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/rpl-demo.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[key];
    assert_eq!(entry["dtype"], "F16", "the demo model stores float16");
    let offset = 8 + header_len + entry["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[offset..offset + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_model_with_nan_weights_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.safetensors");
    model_with_nan(&model, "branch1.aspp.features.0.0.weight");
    let output = rpl(&[
        "infer", "--model", model.to_str().unwrap(), "--out", dir.path().to_str().unwrap(), bad("scene_64x48.png").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("nan.safetensors: tensor `branch1.aspp.features.0.0.weight` holds 1 NaN or infinite values"),
        "{stderr}"
    );
}

#[test]
fn a_pth_whose_pickle_calls_a_function_is_refused_and_nothing_runs() {
    let marker = Path::new("/tmp/rpl-pwned");
    let _ = std::fs::remove_file(marker);
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["convert".to_string(), bad("calls_os_system.pth").to_str().unwrap().to_string(), dir.path().join("x.safetensors").to_str().unwrap().to_string()],
        vec![
            "infer".into(), "--model".into(), bad("calls_os_system.pth").to_str().unwrap().into(), "--out".into(),
            dir.path().to_str().unwrap().into(), bad("scene_64x48.png").to_str().unwrap().into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = rpl(&args);
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(stderr.contains("calls_os_system.pth") && stderr.contains("calls `posix.system`") && stderr.contains("refused"), "{stderr}");
    }
    assert!(!marker.exists(), "the pickle's command never ran");
}

#[test]
fn the_pickle_guard_follows_stack_global_names_through_the_memo() {
    use rpl_web::weights::pickle_guard::{PickleRefusal, scan_pickle};
    // Protocol 4: SHORT_BINUNICODE module, MEMOIZE, SHORT_BINUNICODE name, MEMOIZE, STACK_GLOBAL.
    let stack_global = |module: &str, name: &str| {
        let mut p = vec![0x80, 4];
        for s in [module, name] {
            p.push(0x8c);
            p.push(s.len() as u8);
            p.extend(s.as_bytes());
            p.push(0x94);
        }
        p.extend([0x93, b')', b'R', b'.']);
        p
    };
    assert!(scan_pickle(&stack_global("collections", "OrderedDict")).is_ok());
    assert_eq!(scan_pickle(&stack_global("builtins", "eval")), Err(PickleRefusal::Callable("builtins.eval".into())));
    // The name fetched back from the memo (BINGET) is still known.
    let mut reused = stack_global("collections", "OrderedDict");
    reused.pop();
    reused.extend([b'h', 0, b'h', 1, 0x93, b'.']);
    assert!(scan_pickle(&reused).is_ok());
    // Names that are computed (here: after a POP) cannot be checked: refused.
    let computed = [0x80, 4, 0x8c, 2, b'o', b's', 0x8c, 6, b's', b'y', b's', b't', b'e', b'm', b'N', b'0', 0x93, b'.'];
    assert!(matches!(scan_pickle(&computed), Err(PickleRefusal::Unverifiable(_))));
    // The fixtures' own pickles pass.
    for name in ["rpl_w8/rpl_w8.pth", "rpl_w8/rpl_w8_wrapped.pth"] {
        rpl_web::weights::pickle_guard::check_checkpoint(std::fs::File::open(fixture(name)).unwrap()).unwrap();
    }
}

#[test]
fn ground_truth_of_another_size_is_skipped_and_unknown_values_are_ignored_like_255() {
    use rpl_web::evaluation::{DatasetOptions, ScoreSource, evaluate_dataset};
    use rpl_web::datasets::{DatasetKind, list_dataset};
    // An fs-static folder with one image and a mask of the wrong size.
    let root = tempfile::tempdir().unwrap();
    let split = root.path().join("Static");
    for sub in ["original", "labels"] {
        std::fs::create_dir_all(split.join(sub)).unwrap();
    }
    std::fs::copy(bad("scene_64x48.png"), split.join("original/a.png")).unwrap();
    std::fs::copy(bad("mask_wrong_size.png"), split.join("labels/a.png")).unwrap();
    let model = fixture("rpl_w8/rpl_w8.pth");
    let output = rpl(&["eval", "--dataset", "fs-static", root.path().to_str().unwrap(), "--model", model.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("labels/a.png") && stderr.contains("32x24"), "{stderr}");

    // Values other than 0 / 1 (the 7s) count as ignored, as in the paper's evaluation: the same
    // figures as the mask with 255 there. Scores come from a saved map to isolate the labels.
    let scores = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..64 * 48).map(|i| ((i * 37) % 101) as f32).collect();
    let file = std::fs::File::create(scores.path().join("a.npy")).unwrap();
    rpl_web::npy::write_f32(std::io::BufWriter::new(file), &[48, 64], &values).unwrap();
    let mut figures = Vec::new();
    for replace_with in [7u8, 255] {
        let mask = image::open(bad("mask_unknown_values.png")).unwrap().into_luma8();
        let mask: Vec<u8> = mask.into_raw().into_iter().map(|v| if v == 7 { replace_with } else { v }).collect();
        image::save_buffer(split.join("labels/a.png"), &mask, 64, 48, image::ExtendedColorType::L8).unwrap();
        let listing = list_dataset(DatasetKind::FishyscapesStatic, root.path()).unwrap();
        let report = evaluate_dataset(&listing, &ScoreSource::Saved(scores.path()), DatasetOptions::default(), |_, _, _| {}).unwrap();
        let m = report.rpl;
        figures.push((m.auroc, m.ap, m.fpr95, m.n_inlier, m.n_ood));
    }
    assert_eq!(figures[0], figures[1]);
}

#[test]
fn every_test_named_in_the_bad_inputs_table_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("tests/BAD_INPUTS.md")).unwrap();
    let read_all = |dir: &Path, ext: &str| -> String {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    };
    let rust = read_all(&root.join("tests"), "rs");
    let browser = read_all(&root.join("tests/browser"), "mjs");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| Input") && !l.starts_with("|---")).collect();
    assert!(rows.len() >= 18, "the table has a row per bad input");
    for row in rows {
        let tests = row.trim_end_matches('|').rsplit('|').next().unwrap();
        // Test names are the code spans: the odd pieces between backticks.
        let names: Vec<&str> = tests.split('`').enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, name)| name).collect();
        assert!(!names.is_empty() || tests.contains("the same"), "a row names its tests: {row}");
        for name in names {
            let found = if name.contains(' ') { browser.contains(&format!("test('{name}")) } else { rust.contains(&format!("fn {name}(")) };
            assert!(found, "the table names a test that does not exist: {name}");
        }
    }
}

/// `rpl infer`'s closing line: "N images in S s, peak memory M MB".
fn peak_memory_mb(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.contains("peak memory")).unwrap_or_else(|| panic!("no memory line: {stdout}"));
    line.rsplit("peak memory ").next().unwrap().trim_end_matches(" MB").parse().unwrap()
}

#[test]
fn two_hundred_images_in_one_run_take_no_more_memory_than_twenty() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<String> = (0..200)
        .map(|i| {
            let path = dir.path().join(format!("image_{i:03}.png"));
            std::fs::copy(bad("scene_64x48.png"), &path).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let model = fixture("rpl_w8/rpl_w8.pth");
    let out = dir.path().join("out");
    let peak = |count: usize| {
        let mut args = vec!["infer", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(images[..count].iter().map(String::as_str));
        let output = rpl(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        println!("{}", stdout.lines().last().unwrap_or_default());
        peak_memory_mb(&stdout)
    };
    let (twenty, two_hundred) = (peak(20), peak(200));
    // Ten times the images: a leak of even 100 kB per image would add 18 MB.
    assert!(two_hundred <= twenty + 8, "peak memory {twenty} MB after 20 images, {two_hundred} MB after 200");
}
