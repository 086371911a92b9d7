//! The evaluation metrics against the paper's `eval_ood_measure`, and the pooled (streaming)
//! computation against sorting every pixel at once.

mod common;

use rpl_web::metrics::{ConfusionMatrix, MetricsError, OodScorePool};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

fn metrics_case(name: &str) -> (Vec<f32>, Vec<u8>) {
    let bytes = std::fs::read(common::fixture(&format!("metrics/{name}"))).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let scores = tensors.tensor("scores").unwrap();
    let labels = tensors.tensor("labels").unwrap();
    assert_eq!((scores.dtype(), labels.dtype()), (Dtype::F32, Dtype::U8));
    let scores = scores.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (scores, labels.data().to_vec())
}

#[test]
fn metrics_equal_the_papers_eval_ood_measure() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("metrics/expected.json")).unwrap()).unwrap();
    for (name, want) in expected["cases"].as_object().unwrap() {
        let (scores, labels) = metrics_case(name);
        let mut pool = OodScorePool::new();
        pool.add(&scores, &labels).unwrap();
        let got = pool.metrics().unwrap();
        assert_eq!(got.n_inlier, want["n_in"].as_u64().unwrap(), "{name}: inlier pixels");
        assert_eq!(got.n_ood, want["n_out"].as_u64().unwrap(), "{name}: OoD pixels");
        assert_eq!(pool.n_ignored(), want["n_ignore"].as_u64().unwrap(), "{name}: ignored pixels");
        for (what, value, key) in [("AUROC", got.auroc, "AUROC"), ("AP", got.ap, "AUPRC"), ("FPR95", got.fpr95, "FPR95")] {
            let reference = want[key].as_f64().unwrap();
            assert!((value - reference).abs() <= 1e-9, "{name}: {what} {value} != reference {reference}");
        }
    }
}

/// Case B's tied scores: the nearest-to-0.95 rule gives 0.7368, the first cut at or above 0.95
/// would give 0.8125.
#[test]
fn fpr95_takes_the_cut_nearest_to_095_recall() {
    let (scores, labels) = metrics_case("case_B.safetensors");
    let mut pool = OodScorePool::new();
    pool.add(&scores, &labels).unwrap();
    let fpr95 = pool.metrics().unwrap().fpr95;
    assert!((fpr95 - 0.7367808219178082).abs() < 1e-12, "FPR95 {fpr95}");
}

/// A small deterministic generator, so that the test data are the same on every run.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The reference algorithm written out directly on the whole sorted array (sklearn's cumulative
/// counts at each distinct score, Hendrycks' FPR-at-recall), for comparison with the pool.
fn sorted_everything(scores: &[f32], labels: &[u8]) -> (f64, f64, f64) {
    let mut pixels: Vec<(f32, bool)> =
        scores.iter().zip(labels).filter(|(_, l)| **l <= 1).map(|(s, l)| (*s, *l == 1)).collect();
    pixels.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let (mut tps, mut fps) = (vec![], vec![]);
    let (mut tp, mut fp) = (0u64, 0u64);
    for (i, &(score, ood)) in pixels.iter().enumerate() {
        if ood { tp += 1 } else { fp += 1 }
        if i + 1 == pixels.len() || pixels[i + 1].0 != score {
            tps.push(tp as f64);
            fps.push(fp as f64);
        }
    }
    let (p, n) = (tp as f64, fp as f64);
    let mut tpr = vec![0.0];
    let mut fpr = vec![0.0];
    tpr.extend(tps.iter().map(|t| t / p));
    fpr.extend(fps.iter().map(|f| f / n));
    let auroc: f64 = (1..tpr.len()).map(|i| (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0).sum();
    let ap: f64 = (0..tps.len()).map(|i| (tpr[i + 1] - tpr[i]) * tps[i] / (tps[i] + fps[i])).sum();
    let last = tps.iter().position(|t| *t == p).unwrap();
    let recall: Vec<f64> = (0..=last).rev().map(|i| tps[i] / p).collect();
    let nearest = recall
        .iter()
        .enumerate()
        .fold((0, f64::INFINITY), |best, (i, r)| if (r - 0.95).abs() < best.1 { (i, (r - 0.95).abs()) } else { best })
        .0;
    (auroc, ap, fps[last - nearest] / n)
}

#[test]
fn pooling_images_one_by_one_equals_sorting_every_pixel() {
    let mut rng = SplitMix(7);
    // Few distinct values, so that many scores tie across images; some pixels ignored.
    let images: Vec<(Vec<f32>, Vec<u8>)> = (0..12)
        .map(|_| {
            (0..997)
                .map(|_| {
                    let r = rng.next();
                    let ood = r % 5 == 0;
                    let level = (r >> 8) % 40 + if ood { 12 } else { 0 };
                    let label = if (r >> 20) % 11 == 0 { 255 } else { u8::from(ood) };
                    (level as f32 * 0.25 - 3.0, label)
                })
                .unzip()
        })
        .collect();
    let mut pool = OodScorePool::new();
    for (scores, labels) in &images {
        pool.add(scores, labels).unwrap();
    }
    let all_scores: Vec<f32> = images.iter().flat_map(|i| i.0.clone()).collect();
    let all_labels: Vec<u8> = images.iter().flat_map(|i| i.1.clone()).collect();
    let mut whole = OodScorePool::new();
    whole.add(&all_scores, &all_labels).unwrap();
    // Split over two workers and merged: the same again.
    let (mut left, mut right) = (OodScorePool::new(), OodScorePool::new());
    for (i, (scores, labels)) in images.iter().enumerate() {
        if i % 2 == 0 { left.add(scores, labels) } else { right.add(scores, labels) }.unwrap();
    }
    left.merge(right);

    let pooled = pool.metrics().unwrap();
    assert_eq!(pooled, whole.metrics().unwrap());
    assert_eq!(pooled, left.metrics().unwrap());
    assert!(pool.distinct_scores() <= 52, "{} distinct scores held", pool.distinct_scores());
    let (auroc, ap, fpr95) = sorted_everything(&all_scores, &all_labels);
    assert!((pooled.auroc - auroc).abs() < 1e-12, "AUROC {} vs {auroc}", pooled.auroc);
    assert!((pooled.ap - ap).abs() < 1e-12, "AP {} vs {ap}", pooled.ap);
    assert_eq!(pooled.fpr95, fpr95);
    assert!(pooled.auroc > 0.6 && pooled.auroc < 1.0, "the data separate partly: {}", pooled.auroc);
}

#[test]
fn perfect_and_inverted_scores_give_the_extremes() {
    let labels = [0u8, 0, 0, 1, 1];
    let mut pool = OodScorePool::new();
    pool.add(&[0.1, 0.2, 0.3, 0.8, 0.9], &labels).unwrap();
    let m = pool.metrics().unwrap();
    assert_eq!((m.auroc, m.ap, m.fpr95), (1.0, 1.0, 0.0));
    let mut pool = OodScorePool::new();
    pool.add(&[0.9, 0.8, 0.7, 0.2, 0.1], &labels).unwrap();
    let m = pool.metrics().unwrap();
    assert_eq!((m.auroc, m.fpr95), (0.0, 1.0));
}

#[test]
fn bad_inputs_are_named() {
    let mut pool = OodScorePool::new();
    assert_eq!(pool.add(&[0.0, 1.0], &[0]), Err(MetricsError::SizeMismatch { scores: 2, labels: 1 }));
    assert_eq!(pool.add(&[0.0, f32::NAN], &[0, 1]), Err(MetricsError::NanScore { index: 1 }));
    pool.add(&[0.5, 0.7], &[0, 255]).unwrap();
    assert_eq!(pool.metrics(), Err(MetricsError::NoOodPixels));
}

#[test]
fn mean_iou_averages_the_classes_present() {
    let mut confusion = ConfusionMatrix::new(3);
    // class 0: 2 hits, 1 missed as 1; class 1: 1 hit, 1 false positive; class 2 absent; 255 ignored.
    confusion.add(&[0, 0, 1, 1, 2], &[0, 0, 0, 1, 255]).unwrap();
    let iou = confusion.iou_per_class();
    assert_eq!(iou, vec![Some(2.0 / 3.0), Some(0.5), None]);
    assert!((confusion.mean_iou() - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-15);
    assert!((confusion.pixel_accuracy() - 0.75).abs() < 1e-15);
}

#[test]
fn curves_run_from_the_origin_to_full_recall_and_thin_to_the_asked_size() {
    let (scores, labels) = metrics_case("case_A.safetensors");
    let mut pool = OodScorePool::new();
    pool.add(&scores, &labels).unwrap();
    let curves = pool.curves(50).unwrap();
    assert!(curves.roc.len() <= 51 && curves.roc.len() > 10, "{} ROC points", curves.roc.len());
    assert_eq!(curves.roc[0], [0.0, 0.0]);
    assert_eq!(*curves.roc.last().unwrap(), [1.0, 1.0]);
    assert!(curves.roc.windows(2).all(|w| w[1][0] >= w[0][0] && w[1][1] >= w[0][1]), "ROC is monotone");
    let [recall, precision] = *curves.precision_recall.last().unwrap();
    assert_eq!(recall, 1.0);
    let m = pool.metrics().unwrap();
    assert!((precision - m.n_ood as f64 / (m.n_ood + m.n_inlier) as f64).abs() < 1e-12, "at full recall precision is the OoD share");
    // The trapezoids under the thinned curve approach the exact AUROC.
    let area: f64 = curves.roc.windows(2).map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0).sum();
    assert!((area - m.auroc).abs() < 0.01, "thinned area {area} vs AUROC {}", m.auroc);
}
