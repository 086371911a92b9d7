//! What the page reads from a result: a pixel's classes and probabilities, the thresholded mask,
//! and metrics against a ground-truth mask (with its errors). The two heads score differently
//! everywhere, so an answer about the wrong head fails.

use rpl_web::analysis::{AnalysisError, ImageScores, ObjectChange, PixelReport};
use rpl_web::inference::Head;
use rpl_web::metrics::{OodMetrics, OodScorePool};

/// Ground truth of the 3x2 image: pixels 4 and 5 are OoD, pixel 2 is ignored.
const MASK: [u8; 6] = [0, 0, 255, 0, 1, 1];

/// out1 ranks the inlier pixel 3 above both OoD pixels; out2 ranks every OoD pixel first.
fn scores() -> ImageScores {
    ImageScores::new(3, 2, [vec![0.1, 0.2, 0.3, 0.7, 0.5, 0.6], vec![0.0, 0.1, 0.2, 0.3, 0.9, 1.0]]).unwrap()
}

fn metrics_of(scores: &[f32]) -> OodMetrics {
    let mut pool = OodScorePool::new();
    pool.add(scores, &MASK).unwrap();
    pool.metrics().unwrap()
}

#[test]
fn a_pixel_reads_back_each_heads_class_probabilities_and_score() {
    let s = scores();
    assert_eq!(s.at(2, 1).unwrap(), [0.6, 1.0]);
    assert_eq!(s.at(0, 1).unwrap(), [0.7, 0.3]);
    assert_eq!(s.at(3, 0), Err(AnalysisError::OutsideImage { x: 3, y: 0, width: 3, height: 2 }));
    assert_eq!(s.at(0, 2), Err(AnalysisError::OutsideImage { x: 0, y: 2, width: 3, height: 2 }));

    // Three classes at one pixel: out1 says class 0, out2 (the RPL block) class 2.
    let report = PixelReport::new(&[vec![2.0, 0.0, 1.0], vec![0.0, 1.0, 4.0]], [0.6, 1.0]);
    assert_eq!(report.class, [0, 2]);
    assert_eq!(report.score, [0.6, 1.0]);
    let e = |v: f32| v.exp();
    let expected = [e(2.0) / (e(2.0) + e(0.0) + e(1.0)), e(4.0) / (e(0.0) + e(1.0) + e(4.0))];
    assert!((report.probabilities[0][0] - expected[0]).abs() < 1e-6, "{:?}", report.probabilities);
    assert!((report.probabilities[1][2] - expected[1]).abs() < 1e-6, "{:?}", report.probabilities);
    for probabilities in &report.probabilities {
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    // Ties go to the first class, as the page's class maps do.
    assert_eq!(PixelReport::new(&[vec![1.0, 1.0], vec![0.0, 0.0]], [0.0; 2]).class, [0, 0]);
}

#[test]
fn the_threshold_marks_the_chosen_heads_pixels() {
    let s = scores();
    assert_eq!(s.threshold(Head::Out2, 0.5), (2.0 / 6.0, vec![false, false, false, false, true, true]));
    assert_eq!(s.threshold(Head::Out1, 0.5), (2.0 / 6.0, vec![false, false, false, true, false, true]));
    assert_eq!(s.threshold(Head::Out2, 0.05).0, 5.0 / 6.0);
    assert_eq!(s.threshold(Head::Out1, 0.05).0, 1.0);
}

#[test]
fn ground_truth_gives_each_heads_own_metrics() {
    let s = scores();
    let [closed, rpl] = s.evaluate(&MASK, 3, 2).unwrap();
    assert_eq!(closed.metrics, metrics_of(s.head(Head::Out1)));
    assert_eq!(rpl.metrics, metrics_of(s.head(Head::Out2)));
    assert_eq!((rpl.metrics.auroc, rpl.metrics.ap, rpl.metrics.fpr95), (1.0, 1.0, 0.0));
    // out1: 4 of the 6 (OoD, inlier) pairs are ordered right; one inlier of three stays above
    // the threshold that finds every OoD pixel.
    assert!((closed.metrics.auroc - 4.0 / 6.0).abs() < 1e-9, "out1 AUROC {}", closed.metrics.auroc);
    assert!((closed.metrics.fpr95 - 1.0 / 3.0).abs() < 1e-9, "out1 FPR95 {}", closed.metrics.fpr95);
    assert!(closed.metrics.ap < 1.0);
    assert_eq!(*rpl.curves.roc.last().unwrap(), [1.0, 1.0]);
    assert_ne!(closed.curves, rpl.curves);
}

#[test]
fn bad_masks_and_score_arrays_are_named() {
    let s = scores();
    assert_eq!(s.evaluate(&MASK, 2, 3), Err(AnalysisError::MaskSize { mask_width: 2, mask_height: 3, width: 3, height: 2 }));
    assert_eq!(s.evaluate(&[0, 7, 255, 0, 1, 9], 3, 2), Err(AnalysisError::MaskValues { values: vec![7, 9] }));
    assert!(matches!(s.evaluate(&[0; 6], 3, 2), Err(AnalysisError::Metrics(_))), "a mask without OoD pixels has no AP");
    let short = ImageScores::new(3, 2, [vec![0.0; 6], vec![0.0; 5]]);
    assert_eq!(short, Err(AnalysisError::ScoreCount { head: "out2", values: 5, width: 3, height: 2 }));
    assert_eq!(short.unwrap_err().to_string(), "the out2 scores have 5 values, the 3x2 image has 6 pixels");
}

/// Before and after an object pasted on pixels 4 and 5: each head's means on it and elsewhere,
/// and what out1 labelled it (two classes: logits `[classes, H, W]`).
#[test]
fn an_objects_change_is_each_heads_means_on_it_and_elsewhere_and_out1s_label() {
    let before = ImageScores::new(3, 2, [vec![0.0; 6], vec![0.0, 0.0, 0.0, 0.0, 1.0, 3.0]]).unwrap();
    let after = scores();
    let object = [0, 0, 0, 0, 1, 1];
    // Pixel 4: class 1 (logit 3 against 0); pixel 5: class 1 (2 against 1); elsewhere class 0.
    let logits = [[5.0, 5.0, 5.0, 5.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 3.0, 2.0]].concat();
    // out2 keeps out1's class on three of the four other pixels.
    let (out1_classes, out2_classes) = ([0u8, 0, 0, 0, 1, 1], [0u8, 0, 2, 0, 3, 1]);
    let classes = [&out1_classes[..], &out2_classes[..]];
    let change = after.object_change(&before, &object, &logits, classes, None).unwrap();
    let softmax_top = |a: f64, b: f64| a.exp().max(b.exp()) / (a.exp() + b.exp());
    let expected = ObjectChange {
        pixels: 2,
        inside: [[0.0, (0.5f32 as f64 + 0.6f32 as f64) / 2.0], [2.0, (0.9f32 as f64 + 1.0) / 2.0]],
        outside: [[0.0, [0.1f32, 0.2, 0.3, 0.7].iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0], [0.0, [0.0f32, 0.1, 0.2, 0.3].iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0]],
        out1_class: 1,
        out1_class_share: 1.0,
        out1_confidence: (softmax_top(3.0, 0.0) + softmax_top(2.0, 1.0)) / 2.0,
        same_class_on_inliers: 0.75,
    };
    assert_eq!(
        (change.pixels, change.inside, change.outside, change.out1_class, change.out1_class_share, change.same_class_on_inliers),
        (expected.pixels, expected.inside, expected.outside, 1, 1.0, 0.75)
    );
    assert!((change.out1_confidence - expected.out1_confidence).abs() < 1e-6, "{change:?}");

    // A tie between two classes goes to the lower train id; an object on every pixel has no elsewhere.
    let tie = after.object_change(&before, &[1, 0, 0, 0, 1, 0], &logits, classes, None).unwrap();
    assert_eq!((tie.out1_class, tie.out1_class_share), (0, 0.5));
    let everywhere = after.object_change(&before, &[1; 6], &logits, classes, None).unwrap();
    assert!(everywhere.outside[0][1].is_nan() && everywhere.same_class_on_inliers.is_nan());
    // With a ground truth only its inliers count: pixel 2 (out2's class 2) is OoD, pixel 3 ignored.
    let truth = [0u8, 0, 1, 255, 1, 1];
    let known = after.object_change(&before, &object, &logits, classes, Some(&truth)).unwrap();
    assert_eq!(known.same_class_on_inliers, 1.0);
    let wrong = after.object_change(&before, &object, &logits, classes, Some(&truth[..5]));
    assert_eq!(wrong, Err(AnalysisError::MaskSize { mask_width: 3, mask_height: 2, width: 3, height: 2 }));

    assert_eq!(after.object_change(&before, &[0; 6], &logits, classes, None), Err(AnalysisError::EmptyObject { width: 3, height: 2 }));
    assert_eq!(after.object_change(&before, &[1; 5], &logits, classes, None), Err(AnalysisError::ObjectSize { values: 5, width: 3, height: 2 }));
    let other = ImageScores::new(2, 3, [vec![0.0; 6], vec![0.0; 6]]).unwrap();
    assert_eq!(
        after.object_change(&other, &object, &logits, classes, None),
        Err(AnalysisError::BeforeSize { before_width: 2, before_height: 3, width: 3, height: 2 })
    );
    assert!(matches!(after.object_change(&before, &object, &logits[..7], classes, None), Err(AnalysisError::ScoreCount { .. })));
    let short = [&out1_classes[..], &out2_classes[..5]];
    assert_eq!(after.object_change(&before, &object, &logits, short, None), Err(AnalysisError::ScoreCount { head: "out2", values: 5, width: 3, height: 2 }));
}
