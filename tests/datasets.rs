//! The benchmark folders as the paper's loaders read them: each layout on a tiny folder built
//! here, the label convention (PIL's `convert('L')`, 0 inlier, 1 OoD, the rest ignored), and the
//! streamed evaluation of saved score maps against the exact pooled metric.

use std::path::{Path, PathBuf};

use image::{ExtendedColorType, ImageFormat};
use rpl_web::datasets::{DatasetError, DatasetKind, decode_label, list_dataset, read_label};
use rpl_web::evaluation::{DatasetOptions, ScoreSource, evaluate_dataset};
use rpl_web::metrics::OodScorePool;
use rpl_web::npy;

const W: usize = 24;
const H: usize = 16;

fn save(path: &Path, w: usize, h: usize, colour: ExtendedColorType, data: &[u8], format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::save_buffer_with_format(path, data, w as u32, h as u32, colour, format).unwrap();
}

/// A small RGB picture that differs per `seed`.
fn picture(seed: u8) -> Vec<u8> {
    (0..W * H * 3).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

/// A label: OoD in a seed-dependent box, ignored (255) in the first row, inlier elsewhere.
fn label(seed: usize) -> Vec<u8> {
    (0..W * H)
        .map(|i| {
            let (y, x) = (i / W, i % W);
            if y == 0 {
                255
            } else if (4 + seed % 5..10 + seed % 5).contains(&x) && (5..12).contains(&y) {
                1
            } else {
                0
            }
        })
        .collect()
}

fn grey(path: &Path, values: &[u8]) {
    save(path, W, H, ExtendedColorType::L8, values, ImageFormat::Png);
}

fn names(dir: &Path, kind: DatasetKind) -> Vec<String> {
    list_dataset(kind, dir).unwrap().samples.iter().map(|s| s.name.clone()).collect()
}

#[test]
fn road_anomaly_pairs_original_jpgs_with_label_pngs_and_reports_an_image_without_label() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in ["b", "a", "c"].iter().enumerate() {
        save(&dir.path().join(format!("original/{name}.jpg")), W, H, ExtendedColorType::Rgb8, &picture(i as u8), ImageFormat::Jpeg);
        if *name != "c" {
            grey(&dir.path().join(format!("labels/{name}.png")), &label(i));
        }
    }
    // Not the layout's image type: the paper's loader ignores it too.
    grey(&dir.path().join("original/notes.png"), &label(0));
    let listing = list_dataset(DatasetKind::RoadAnomaly, dir.path()).unwrap();
    let names: Vec<&str> = listing.samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "sorted, as the loader sorts");
    assert_eq!(listing.samples[0].ood_label, dir.path().join("labels/a.png"));
    assert_eq!(listing.skipped.len(), 1);
    assert_eq!(listing.skipped[0].file, dir.path().join("original/c.jpg"));
    assert!(listing.skipped[0].reason.contains("labels/c.png"), "{}", listing.skipped[0].reason);
}

#[test]
fn fishyscapes_reads_its_split_from_the_root_or_from_the_split_folder() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["LostAndFound", "Static"] {
        for name in ["0001", "0000"] {
            let root = dir.path().join(split);
            save(&root.join(format!("original/{name}.png")), W, H, ExtendedColorType::Rgb8, &picture(1), ImageFormat::Png);
            grey(&root.join(format!("labels/{name}.png")), &label(1));
        }
    }
    assert_eq!(names(dir.path(), DatasetKind::FishyscapesLostAndFound), ["0000", "0001"]);
    assert_eq!(names(&dir.path().join("Static"), DatasetKind::FishyscapesStatic), ["0000", "0001"]);
    let listing = list_dataset(DatasetKind::FishyscapesStatic, dir.path()).unwrap();
    assert_eq!(listing.root, dir.path().join("Static"));

    // Only Static present: asking for Lost & Found names the folder it needs.
    let only_static = tempfile::tempdir().unwrap();
    grey(&only_static.path().join("Static/original/x.png"), &label(0));
    let error = list_dataset(DatasetKind::FishyscapesLostAndFound, only_static.path()).unwrap_err();
    assert!(matches!(error, DatasetError::MissingFolder { .. }));
    assert!(error.to_string().contains("LostAndFound/original"), "{error}");
}

#[test]
fn smiyc_tracks_name_their_images_after_the_labels_digits_and_skip_colour_masks() {
    let dir = tempfile::tempdir().unwrap();
    let anomaly = dir.path().join("dataset_AnomalyTrack");
    let obstacle = dir.path().join("dataset_ObstacleTrack");
    for n in ["0000", "0001"] {
        grey(&anomaly.join(format!("labels_masks/validation_{n}_labels_semantic.png")), &label(2));
        save(&anomaly.join(format!("labels_masks/validation_{n}_labels_semantic_color.png")), W, H, ExtendedColorType::Rgb8, &picture(0), ImageFormat::Png);
        save(&anomaly.join(format!("images/validation{n}.jpg")), W, H, ExtendedColorType::Rgb8, &picture(2), ImageFormat::Jpeg);
    }
    for n in ["1", "12"] {
        grey(&obstacle.join(format!("labels_masks/validation_{n}_labels_semantic.png")), &label(3));
        save(&obstacle.join(format!("images/validation_{n}.webp")), W, H, ExtendedColorType::Rgb8, &picture(3), ImageFormat::WebP);
    }
    // A label whose image is missing.
    grey(&obstacle.join("labels_masks/validation_30_labels_semantic.png"), &label(3));

    assert_eq!(names(dir.path(), DatasetKind::SmiycAnomaly), ["validation0000", "validation0001"]);
    let listing = list_dataset(DatasetKind::SmiycObstacle, &obstacle).unwrap();
    let images: Vec<PathBuf> = listing.samples.iter().map(|s| s.image.clone()).collect();
    assert_eq!(images, [obstacle.join("images/validation_1.webp"), obstacle.join("images/validation_12.webp")]);
    assert_eq!(listing.skipped.len(), 1);
    assert!(listing.skipped[0].reason.contains("validation_30.webp"), "{}", listing.skipped[0].reason);

    // The other track's folder: its labels name images that are not there.
    let error = list_dataset(DatasetKind::SmiycObstacle, &anomaly).unwrap_err();
    assert!(matches!(error, DatasetError::Empty { .. }) && error.to_string().contains("validation_0000.webp"), "{error}");
    let error = list_dataset(DatasetKind::SmiycObstacle, &obstacle.join("images")).unwrap_err();
    assert!(error.to_string().contains("labels_masks"), "{error}");
}

#[test]
fn synthetic_folders_pair_scenes_with_their_ood_and_class_labels() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["scene_0001", "scene_0000"] {
        save(&dir.path().join(format!("{name}.png")), W, H, ExtendedColorType::Rgb8, &picture(0), ImageFormat::Png);
        grey(&dir.path().join(format!("{name}_ood.png")), &label(0));
        grey(&dir.path().join(format!("{name}_labels.png")), &label(0));
    }
    let listing = list_dataset(DatasetKind::Synthetic, dir.path()).unwrap();
    assert_eq!(listing.samples.len(), 2);
    assert_eq!(listing.samples[0].name, "scene_0000");
    assert_eq!(listing.samples[0].class_label.as_deref(), Some(dir.path().join("scene_0000_labels.png").as_path()));
}

#[test]
fn a_missing_or_empty_folder_is_an_error_naming_it_and_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let error = list_dataset(DatasetKind::RoadAnomaly, &missing).unwrap_err();
    assert!(error.to_string().contains("no-such-folder") && error.to_string().contains("original/NAME.jpg"), "{error}");
    std::fs::create_dir_all(dir.path().join("original")).unwrap();
    std::fs::create_dir_all(dir.path().join("labels")).unwrap();
    let error = list_dataset(DatasetKind::RoadAnomaly, dir.path()).unwrap_err();
    assert!(matches!(error, DatasetError::Empty { .. }), "{error}");
}

#[test]
fn labels_are_read_as_pil_converts_them_to_grey() {
    let dir = tempfile::tempdir().unwrap();
    // Grey: as stored.
    let path = dir.path().join("grey.png");
    grey(&path, &label(0));
    assert_eq!(read_label(&path, W, H).unwrap(), label(0));
    // Colour: ITU-R 601 luma with PIL's rounding; pure red is 76, (1, 1, 1) stays 1.
    let rgb: Vec<u8> = [[255, 0, 0], [1, 1, 1], [0, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]].concat();
    let path = dir.path().join("rgb.png");
    save(&path, 6, 1, ExtendedColorType::Rgb8, &rgb, ImageFormat::Png);
    let (w, h, values) = decode_label(&path, &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((w, h), (6, 1));
    assert_eq!(values, [76, 1, 0, 150, 29, 255]);
    // 16-bit and undecodable labels are refused, naming the file.
    let path16 = dir.path().join("deep.png");
    let deep: Vec<u8> = vec![0; W * H * 2];
    save(&path16, W, H, ExtendedColorType::L16, &deep, ImageFormat::Png);
    assert!(matches!(read_label(&path16, W, H), Err(DatasetError::Label16Bit { .. })));
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let error = read_label(&junk, W, H).unwrap_err();
    assert!(error.to_string().contains("junk.png"), "{error}");
    // Another size than the image's.
    let error = read_label(&dir.path().join("grey.png"), W + 1, H).unwrap_err();
    assert!(matches!(error, DatasetError::SizeMismatch { label_width: W, .. }), "{error}");
}

fn write_scores(path: &Path, h: usize, w: usize, values: &[f32]) {
    npy::write_f32(std::fs::File::create(path).unwrap(), &[h, w], values).unwrap();
}

/// Scores with ties and some separation between OoD and inlier pixels.
fn scores_for(labels: &[u8], seed: u32) -> Vec<f32> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let noise = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 28) as f32 / 4.0;
            noise + if l == 1 { 2.0 } else { 0.0 }
        })
        .collect()
}

#[test]
fn saved_scores_pool_like_all_pixels_at_once_and_bad_files_are_skipped_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (data, scores) = (dir.path().join("fs"), dir.path().join("scores"));
    std::fs::create_dir_all(&scores).unwrap();
    let mut everything = (Vec::new(), Vec::new());
    for i in 0..6 {
        let name = format!("{i:04}");
        save(&data.join(format!("Static/original/{name}.png")), W, H, ExtendedColorType::Rgb8, &picture(i as u8), ImageFormat::Png);
        let mut labels = label(i);
        labels[W + 1] = 2; // neither 0 nor 1: ignored, as in the paper
        grey(&data.join(format!("Static/labels/{name}.png")), &labels);
        let s = scores_for(&labels, i as u32);
        match i {
            // No saved map for image 3; image 4's map has another size.
            3 => continue,
            4 => write_scores(&scores.join(format!("{name}.npy")), H, W - 1, &s[..H * (W - 1)]),
            // Image 5's map holds a NaN on an inlier pixel.
            5 => {
                let mut s = s;
                s[3 * W + 2] = f32::NAN;
                write_scores(&scores.join(format!("{name}.npy")), H, W, &s);
            }
            _ => {
                write_scores(&scores.join(format!("{name}.npy")), H, W, &s);
                everything.0.extend(s);
                everything.1.extend(labels);
            }
        }
    }
    let listing = list_dataset(DatasetKind::FishyscapesStatic, &data).unwrap();
    let options = DatasetOptions { limit: Some(5), save_scores: None };
    let mut seen = 0;
    let report = evaluate_dataset(&listing, &ScoreSource::Saved(&scores), options, |done, total, _| {
        assert_eq!(total, 5);
        seen = done;
    })
    .unwrap();
    assert_eq!(seen, 5);

    // Images 0, 1, 2 evaluated (the limit leaves out 5); 3 and 4 skipped, each named.
    let evaluated: Vec<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(evaluated, ["0000", "0001", "0002"]);
    let skipped: Vec<String> = report.skipped.iter().map(|s| s.file.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(skipped, ["0003.npy", "0004.png"]);
    assert!(report.skipped[1].reason.contains(&format!("{}x{}", W - 1, H)), "{}", report.skipped[1].reason);
    assert!(report.baseline.is_none() && report.miou_out1.is_none());

    // The streamed pool equals the metric over all evaluated pixels at once, exactly.
    let mut whole = OodScorePool::new();
    whole.add(&everything.0, &everything.1).unwrap();
    assert_eq!(report.rpl, whole.metrics().unwrap());
    let per_image = report.images[1].rpl.expect("image 1 has OoD and inlier pixels");
    let mut own = OodScorePool::new();
    own.add(&everything.0[W * H..2 * W * H], &everything.1[W * H..2 * W * H]).unwrap();
    assert_eq!(per_image, own.metrics().unwrap());
    assert_eq!(report.rpl.n_ood + report.rpl.n_inlier, 3 * (W * H - W - 1) as u64, "row 0 (255) and the 2s are ignored");

    // Without the limit, image 5's NaN cannot be ranked: that image is skipped, not the run.
    let report = evaluate_dataset(&listing, &ScoreSource::Saved(&scores), DatasetOptions::default(), |_, _, _| {}).unwrap();
    assert_eq!(report.images.len(), 3);
    let last = report.skipped.last().unwrap();
    assert!(last.file.ends_with("0005.png") && last.reason.contains("NaN"), "{last:?}");
    assert_eq!(report.rpl, whole.metrics().unwrap());
}
