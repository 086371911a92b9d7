//! The scene generator: deterministic, labelled with Cityscapes train ids, outliers where they belong.

use rpl_web::synthetic::{Context, LABEL_OUTLIER, OutlierKind, OutlierSet, generate_scene, outlier_source};

#[test]
fn a_seed_gives_the_same_bytes_and_seeds_differ() {
    let a = generate_scene(42, 256, 128, OutlierSet::Training);
    let b = generate_scene(42, 256, 128, OutlierSet::Training);
    assert_eq!(a.rgb8, b.rgb8);
    assert_eq!(a.labels, b.labels);
    let c = generate_scene(43, 256, 128, OutlierSet::Training);
    assert_ne!(a.rgb8, c.rgb8);
    let s1 = outlier_source(7, 96, 64, &OutlierKind::TRAINING);
    let s2 = outlier_source(7, 96, 64, &OutlierKind::TRAINING);
    assert_eq!((s1.rgb8, s1.object), (s2.rgb8, s2.object));
}

#[test]
fn scenes_use_cityscapes_ids_and_both_contexts() {
    let mut contexts = [0usize; 2];
    let mut seen = [false; 256];
    for seed in 0..40 {
        let scene = generate_scene(seed, 256, 128, OutlierSet::None);
        assert_eq!(scene.rgb8.len(), 256 * 128 * 3);
        contexts[usize::from(scene.context == Context::City)] += 1;
        for &l in &scene.labels {
            seen[usize::from(l)] = true;
        }
    }
    assert!(contexts[0] > 5 && contexts[1] > 5, "city and countryside both drawn: {contexts:?}");
    let drawn: Vec<usize> = (0..256).filter(|&l| seen[l]).collect();
    // road, sidewalk, building, pole, light, sign, vegetation, terrain, sky, person, car, truck, bicycle
    assert_eq!(drawn, vec![0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13, 14, 18], "inlier scenes hold only these train ids");
}

#[test]
fn outliers_are_labelled_254_and_held_out_kinds_stay_out_of_training() {
    let mut with_outliers = 0;
    for seed in 0..30 {
        let scene = generate_scene(seed, 256, 128, OutlierSet::Training);
        assert!(scene.outliers.iter().all(|k| !k.is_held_out()), "training scenes hold training kinds only");
        let count = scene.labels.iter().filter(|&&l| l == LABEL_OUTLIER).count();
        with_outliers += usize::from(count > 0);
        let mask = scene.ood_mask();
        assert_eq!(mask.iter().filter(|&&m| m == 1).count(), count);
        let held_out = generate_scene(seed, 256, 128, OutlierSet::HeldOut);
        assert!(held_out.outliers.iter().all(|k| k.is_held_out()));
    }
    assert!(with_outliers >= 25, "most scenes show their outliers: {with_outliers} of 30");
    assert!(generate_scene(1, 256, 128, OutlierSet::None).labels.iter().all(|&l| l != LABEL_OUTLIER));
}

/// Thin things are drawn where the network can resolve them at output stride 8: the horizontal
/// runs of pole pixels in 512x256 scenes are mostly at least 5 pixels wide.
#[test]
fn poles_are_wide_enough_to_learn() {
    const POLE: u8 = 5;
    let mut runs = Vec::new();
    for seed in 0..30 {
        let scene = generate_scene(seed, 512, 256, OutlierSet::None);
        for row in scene.labels.chunks_exact(512) {
            let mut run = 0;
            for &label in row.iter().chain([&0]) {
                if label == POLE {
                    run += 1;
                } else if run > 0 {
                    runs.push(run);
                    run = 0;
                }
            }
        }
    }
    runs.sort_unstable();
    let median = runs[runs.len() / 2];
    assert!(runs.len() > 1000 && median >= 5, "{} pole runs, median width {median} px", runs.len());
}
