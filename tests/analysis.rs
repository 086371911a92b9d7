//! What the page reads from a result: a pixel's classes and probabilities, the thresholded mask,
//! and metrics against a ground-truth mask (with its errors).

use rpl_web::analysis::{AnalysisError, HeadResults};
use rpl_web::metrics::OodScorePool;

/// A 3x2 image, 3 classes; out2 differs from out1 at pixel 5 only.
fn results() -> HeadResults {
    // [classes, H, W] flattened: class-major.
    let out1 = vec![
        5.0, 0.0, 0.0, 1.0, 0.0, 2.0, //
        0.0, 5.0, 0.0, 0.0, 1.0, 0.0, //
        0.0, 0.0, 5.0, 0.0, 0.0, 1.0,
    ];
    let mut out2 = out1.clone();
    out2[2 * 6 + 5] = 4.0;
    HeadResults {
        width: 3,
        height: 2,
        classes: 3,
        logits: [out1, out2],
        scores: [vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6], vec![0.0, 0.1, 0.2, 0.3, 0.9, 1.0]],
    }
}

#[test]
fn a_pixel_reads_back_its_classes_probabilities_and_scores() {
    let r = results();
    assert_eq!(r.class_map(0), vec![0, 1, 2, 0, 1, 0]);
    assert_eq!(r.class_map(1), vec![0, 1, 2, 0, 1, 2]);
    let p = r.pixel(2, 1).unwrap();
    assert_eq!(p.class, [0, 2]);
    assert_eq!(p.score, [0.6, 1.0]);
    let e = |v: f32| v.exp();
    let expected = e(2.0) / (e(2.0) + e(0.0) + e(1.0));
    assert!((p.probabilities[0][0] - expected).abs() < 1e-6);
    assert!((p.probabilities[1].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(r.pixel(3, 0), Err(AnalysisError::OutsideImage { x: 3, y: 0, width: 3, height: 2 }));
}

#[test]
fn the_threshold_sets_the_mask_share() {
    let r = results();
    assert_eq!(r.threshold(1, 0.5).0, 2.0 / 6.0);
    assert_eq!(r.threshold(1, 0.05).0, 5.0 / 6.0);
    assert_eq!(r.threshold(0, 0.45).1, vec![false, false, false, false, true, true]);
}

#[test]
fn ground_truth_gives_each_heads_metrics_and_bad_masks_are_named() {
    let r = results();
    let mask = [0, 0, 255, 0, 1, 1];
    let [closed, rpl] = r.evaluate(&mask, 3, 2).unwrap();
    let mut pool = OodScorePool::new();
    pool.add(&r.scores[1], &mask).unwrap();
    assert_eq!(rpl.metrics, pool.metrics().unwrap());
    assert_eq!((rpl.metrics.auroc, rpl.metrics.ap, rpl.metrics.fpr95), (1.0, 1.0, 0.0));
    assert_eq!(closed.metrics.auroc, 1.0);
    assert_eq!(*rpl.curves.roc.last().unwrap(), [1.0, 1.0]);
    assert_eq!(r.evaluate(&mask, 2, 3), Err(AnalysisError::MaskSize { mask_width: 2, mask_height: 3, width: 3, height: 2 }));
    assert_eq!(r.evaluate(&[0, 7, 255, 0, 1, 9], 3, 2), Err(AnalysisError::MaskValues { values: vec![7, 9] }));
    assert!(matches!(r.evaluate(&[0; 6], 3, 2), Err(AnalysisError::Metrics(_))), "a mask without OoD pixels has no AP");
}
