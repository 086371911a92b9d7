//! The bundled demo model (`models/rpl-demo.safetensors`) does what its model card says, on a
//! small held-out set: RPL finds outliers it never saw in training better than the closed-set
//! network, and leaves the segmentation alone.

use rpl_web::backend::BackendKind;
use rpl_web::evaluation::{HeldOutSet, evaluate_synthetic, nearest_mean_colour_miou};
use rpl_web::scoring::ScoreMode;
use rpl_web::synthetic::OutlierSet;
use rpl_web::weights::{load_network, open_checkpoint};

/// What the model card claims (measured on 100 held-out scenes), checked on the first 24.
const CARD_MIOU_OUT1: f64 = 0.703;
/// 24 scenes vary around the 100-scene figures by up to this much.
const SMALL_SET_MARGIN: f64 = 0.05;

#[test]
fn the_bundled_model_does_what_its_model_card_says_on_held_out_outliers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rpl-demo.safetensors");
    let device = BackendKind::Flex.device().unwrap();
    let network = load_network(open_checkpoint(&path).unwrap().as_ref(), &device).unwrap().fold_batch_norms();
    let set = HeldOutSet { count: 24, size: [256, 512], outliers: OutlierSet::HeldOut };
    let r = evaluate_synthetic(&network, &set, ScoreMode::Energy, &device, |_, _| {}).unwrap();
    let colour_only = nearest_mean_colour_miou(&set, 20, 19);
    println!(
        "mIoU out1 {:.3} out2 {:.3} colour-only {colour_only:.3}; agreement {:.4}; AUROC {:.3} vs {:.3}; AP {:.3} vs {:.3}; FPR95 {:.3} vs {:.3}",
        r.miou_out1, r.miou_out2, r.agreement, r.rpl.auroc, r.baseline.auroc, r.rpl.ap, r.baseline.ap, r.rpl.fpr95, r.baseline.fpr95
    );
    assert!((r.miou_out1 - CARD_MIOU_OUT1).abs() <= SMALL_SET_MARGIN, "mIoU of argmax(out1) {}", r.miou_out1);
    assert!(r.agreement >= 0.95, "RPL leaves the segmentation alone: argmax(out2) = argmax(out1) on {}", r.agreement);
    // RPL finds outliers it never saw better than the closed-set network: a higher AUROC, and the
    // card's targets (AP at least 0.20 higher, FPR95 at most half) within the small set's margin.
    assert!(r.rpl.auroc > r.baseline.auroc, "AUROC: RPL {} vs closed set {}", r.rpl.auroc, r.baseline.auroc);
    assert!(r.rpl.ap >= r.baseline.ap + 0.20 - SMALL_SET_MARGIN, "AP: RPL {} vs closed set {}", r.rpl.ap, r.baseline.ap);
    assert!(r.rpl.fpr95 <= r.baseline.fpr95 / 2.0 + SMALL_SET_MARGIN, "FPR95: RPL {} vs closed set {}", r.rpl.fpr95, r.baseline.fpr95);
    // The data teach something: colour alone does far worse, and the outliers are not trivial.
    assert!(colour_only <= r.miou_out1 - 0.25, "colour alone gives mIoU {colour_only}");
    assert!(r.baseline.ap < 0.60, "the closed-set baseline must not find the outliers easily: AP {}", r.baseline.ap);
}
