//! Training the demo model: both stages learn, stage 2 leaves the frozen network untouched, and
//! a run resumes from its checkpoints.

use burn::module::Module;
use burn::tensor::Device;
use rpl_web::RplConfig;
use rpl_web::backend::BackendKind;
use rpl_web::synthetic::{OutlierSet, SceneRng};
use rpl_web::training::data::{BatchSpec, training_batch};
use rpl_web::training::{ResidualStage, SegmentationStage, TrainConfig, train};
use rpl_web::preprocess::RgbImage;
use rpl_web::synthetic::generate_scene;
use rpl_web::training::save_network;
use rpl_web::weights::safetensors::StorageType;
use rpl_web::weights::{NetworkTensors, TensorSource, load_network, open_checkpoint};

const TINY: RplConfig = RplConfig { width_divisor: 16, num_classes: 19 };

fn autodiff_cpu() -> Device {
    BackendKind::Flex.device().unwrap().autodiff()
}

fn spec(outliers: OutlierSet, with_sources: bool) -> BatchSpec {
    BatchSpec { scene: [64, 128], crop: [48, 96], batch: 2, outliers, with_sources }
}

/// Stage 1 for `steps` steps on one batch; the cross-entropy before the first and the last step.
fn segmentation_steps(stage: &mut SegmentationStage, steps: usize, device: &Device) -> (f32, f32) {
    let batch = || training_batch(&spec(OutlierSet::None, false), 3, 0, device);
    let first = stage.step(batch(), 2e-3)[0].1;
    let mut last = first;
    for _ in 1..steps {
        last = stage.step(batch(), 2e-3)[0].1;
    }
    (first, last)
}

#[test]
fn stage_one_lowers_the_segmentation_loss() {
    let device = autodiff_cpu();
    let mut stage = SegmentationStage::new(TINY, &[1.0; 19], 0.0, &device);
    let (first, last) = segmentation_steps(&mut stage, 25, &device);
    println!("stage 1 cross-entropy {first} -> {last}");
    assert!(first.is_finite() && last < 0.7 * first, "cross-entropy {first} -> {last}");
    // The image-pooling BatchNorm trains as a fixed affine map: its statistics stay at their
    // initial values while its affine terms learn; the branches' BatchNorms track their batches.
    let tensors = NetworkTensors::new("network", &stage.network);
    let read = |key: &str| tensors.read_f32(&format!("branch1.aspp.{key}")).unwrap();
    assert!(read("img_conv.1.running_mean").iter().all(|&m| m == 0.0));
    assert!(read("img_conv.1.running_var").iter().all(|&v| v == 1.0));
    assert!(read("img_conv.1.weight").iter().any(|&g| g != 1.0), "the affine terms train");
    assert!(read("features.0.1.running_mean").iter().any(|&m| m != 0.0), "the other BatchNorms track statistics");
}

#[test]
fn training_crops_hold_a_class_drawn_uniformly_among_those_present() {
    use rpl_web::synthetic::train_id::{ROAD, TRAFFIC_SIGN};
    use rpl_web::synthetic::{LABEL_OUTLIER, LABEL_VOID};
    use rpl_web::training::data::crop_focus;
    // Road everywhere but a void band and one 4x4 sign: the sign is the focus of half the crops
    // (it covers 0.2 % of the scene), void never.
    let width = 128;
    let mut labels = vec![ROAD; 64 * width];
    labels[..8 * width].fill(LABEL_VOID);
    let sign: Vec<usize> = (30..34).flat_map(|y| (60..64).map(move |x| y * width + x)).collect();
    for &i in &sign {
        labels[i] = TRAFFIC_SIGN;
    }
    let mut rng = SceneRng::new(3);
    let draws = 400;
    let mut on_sign = 0;
    for _ in 0..draws {
        let focus = crop_focus(&labels, &mut rng);
        let class = labels[focus[0]];
        assert!(focus.iter().all(|&i| labels[i] == class), "one class per focus");
        assert_eq!(focus.len(), if class == TRAFFIC_SIGN { 16 } else { 56 * width - 16 }, "every pixel of the class");
        assert!(class == ROAD || class == TRAFFIC_SIGN, "focus on class {class}");
        on_sign += usize::from(class == TRAFFIC_SIGN);
    }
    // Binomial(400, 1/2): 0.40..0.60 is four standard deviations either side.
    let share = on_sign as f64 / draws as f64;
    assert!((0.40..=0.60).contains(&share), "the sign is the focus of {share} of the crops");
    // With an outlier in the scene (stage 2), the focus is its pixels.
    labels[40 * width + 10] = LABEL_OUTLIER;
    assert_eq!(crop_focus(&labels, &mut rng), vec![40 * width + 10]);
    assert!(crop_focus(&vec![LABEL_VOID; 16], &mut rng).is_empty(), "nothing to centre on");
}

/// Every frozen entry (all but the residual block's trained parts), read from the network.
fn frozen_entries(network: &rpl_web::RplNetwork) -> Vec<(String, Vec<f32>)> {
    let tensors = NetworkTensors::new("network", network);
    let trained = ["atten_aspp.", "bot_atten_aspp.", "proj_head."];
    tensors
        .tensor_names()
        .into_iter()
        .filter(|k| !trained.iter().any(|t| k.contains(&format!("residual_block.{t}"))))
        .map(|k| {
            let values = tensors.read_f32(&k).unwrap();
            (k, values)
        })
        .collect()
}

/// The file written from the training network (through the exporter) computes what the
/// eval-mode network computes in memory (through burn's own modules, no exporter involved).
#[test]
fn exported_batch_norm_statistics_include_the_last_training_update() {
    let device = autodiff_cpu();
    let mut stage = SegmentationStage::new(TINY, &[1.0; 19], 0.0, &device);
    segmentation_steps(&mut stage, 2, &device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.safetensors");
    let cpu = BackendKind::Flex.device().unwrap();
    save_network(&stage.network, &path, StorageType::F32, &device).unwrap();
    let exported = load_network(open_checkpoint(&path).unwrap().as_ref(), &cpu).unwrap();
    let evaluated = stage.network.clone().valid();

    let image = generate_scene(1, 96, 48, OutlierSet::None);
    let image = RgbImage { width: image.width, height: image.height, pixels: image.rgb8 };
    let values = |t: burn::tensor::Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
    let (ours, reference) = (exported.forward(image.to_input(&cpu)), evaluated.forward(image.to_input(&cpu)));
    for (head, a, b) in [("out1", ours.out1, reference.out1), ("out2", ours.out2, reference.out2)] {
        let (a, b) = (values(a), values(b));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{head}: the exported network differs from the evaluated one by {worst}");
    }
}

#[test]
fn stage_two_lowers_the_rpl_losses_and_leaves_the_segmentation_network_alone() {
    let device = autodiff_cpu();
    // Seeded: unseeded starts made the fall range from 13 % to 36 % between runs (a flaky bound).
    device.seed(3);
    // A segmentation network that has learned something, for the residual block to preserve.
    let mut stage1 = SegmentationStage::new(TINY, &[1.0; 19], 0.0, &device);
    segmentation_steps(&mut stage1, 15, &device);
    let segmentation = stage1.network;
    let before = frozen_entries(&segmentation.clone().valid());
    let mut stage = ResidualStage::new(segmentation, 2, 64);
    let batch = || training_batch(&spec(OutlierSet::Training, true), 5, 0, &device);
    let mut rng = SceneRng::new(1);
    // 30 steps from a seeded start: the same figures every run.
    let first = stage.step(batch(), 2e-3, &mut rng);
    let mut last = first.clone();
    for _ in 0..29 {
        last = stage.step(batch(), 2e-3, &mut rng);
    }
    println!("first {first:?}\nlast {last:?}");
    let part = |parts: &[(&str, f32)], name: &str| parts.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap();
    for (name, value) in &first {
        assert!(value.is_finite(), "{name} is {value}");
    }
    // After 15 steps of stage 1, out1 is still near uniform, so the inlier cross-entropy to its
    // argmax stays near log(19) whatever the residual does; the total falls (by 18 %: 7.65 ->
    // 6.28). CoroCL's InfoNCE cannot fall below its floor (the mean log of the positives per
    // anchor, about 4.1 here), and the run starts within 1-2 of it: it must close half that gap.
    assert!(part(&last, "loss") < 0.85 * part(&first, "loss"), "loss: {first:?} -> {last:?}");
    let floor = part(&first, "contrast_floor");
    assert!(floor > 3.0 && floor == part(&last, "contrast_floor"), "the same sample counts every step: {floor}");
    let [start, end] = [part(&first, "contrast"), part(&last, "contrast")];
    assert!(end - floor < 0.5 * (start - floor), "contrast {start} -> {end}, floor {floor}");
    assert!(first.iter().any(|(n, v)| *n == "energy" && *v > 0.0), "the batch has outlier pixels: {first:?}");
    let after = frozen_entries(&stage.network.clone().valid());
    assert_eq!(before.len(), after.len());
    for ((key, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{key} changed in stage 2 (weights and BatchNorm statistics stay frozen)");
    }
}

#[test]
fn a_run_writes_checkpoints_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let device = autodiff_cpu();
    let config = TrainConfig {
        config: TINY,
        scene: [64, 128],
        crop: [48, 96],
        batch: 2,
        stage1_steps: 2,
        context_steps: 1,
        context_crop: [64, 64],
        context_batch: 1,
        stage2_steps: 0,
        checkpoint_every: 1,
        contrast_samples: 32,
        ..TrainConfig::default()
    };
    let mut steps = Vec::new();
    let network = train(&config, dir.path(), &device, |r| steps.push((r.stage, r.step))).unwrap();
    assert_eq!(steps, vec![(1, 1), (1, 2), (1, 3)], "two steps on crops, one on context crops");
    // Stage 2 starts from what stage 1 saved, BatchNorm statistics included, in a fresh run as in
    // a resumed one (burn commits a running statistic's last update lazily).
    let saved = rpl_web::weights::open_checkpoint(&dir.path().join("stage1.safetensors")).unwrap();
    let trained = NetworkTensors::new("network", &network);
    for key in trained.tensor_names() {
        assert_eq!(trained.read_f32(&key).unwrap(), saved.read_f32(&key).unwrap(), "{key}");
    }
    // So does the resumable checkpoint of the last step: a run resumed from it loses no update.
    let resumable = rpl_web::RplNetwork::new(TINY, &device).try_load_file(dir.path().join("stage1.model.bpk")).unwrap();
    let resumable = NetworkTensors::new("network", &resumable);
    for key in trained.tensor_names() {
        assert_eq!(resumable.read_f32(&key).unwrap(), saved.read_f32(&key).unwrap(), "{key}");
    }
    // A longer second stage resumes: stage 1 is not trained again.
    let config = TrainConfig { stage2_steps: 2, ..config };
    let mut steps = Vec::new();
    let network = train(&config, dir.path(), &device, |r| steps.push((r.stage, r.step))).unwrap();
    assert_eq!(steps, vec![(2, 1), (2, 2)]);
    assert_eq!(network.config, TINY);
    let config = TrainConfig { stage2_steps: 3, ..config };
    let mut steps = Vec::new();
    train(&config, dir.path(), &device, |r| steps.push((r.stage, r.step))).unwrap();
    assert_eq!(steps, vec![(2, 3)], "resumed after the saved step 2");
}

/// Training resizes by matrix products (burn's GPU and ndarray backends lack bilinear
/// interpolation's backward): the same values as the interpolation, and gradients on ndarray.
#[test]
fn resizing_by_matrix_products_equals_bilinear_interpolation_and_has_a_gradient() {
    use burn::tensor::{Distribution, Tensor};
    use rpl_web::model::{resize_by_matmul, resize_to};
    let device = rpl_web::backend::BackendKind::Ndarray.device().unwrap();
    for ([h, w], size) in [([4, 6], [16, 24]), ([7, 5], [29, 20]), ([1, 3], [5, 7]), ([9, 9], [4, 3])] {
        let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let direct: Vec<f32> = resize_to(x.clone(), size).into_data().try_into_vec::<f32>().unwrap();
        let product: Vec<f32> = resize_by_matmul(x, size).into_data().try_into_vec::<f32>().unwrap();
        let worst = direct.iter().zip(&product).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{h}x{w} -> {size:?}: differ by {worst}");
    }
    // On an autodiff device resize_to takes the matrix path: each output pixel's weights sum to
    // one, so the gradient of the output's sum sums to the output's pixel count.
    let autodiff = device.autodiff();
    let x = Tensor::<4>::random([1, 2, 5, 6], Distribution::Normal(0.0, 1.0), &autodiff).require_grad();
    let grads = resize_to(x.clone(), [17, 13]).sum().backward();
    let total: f32 = x.grad(&grads).expect("x has a gradient").sum().into_scalar();
    assert!((total - (2 * 17 * 13) as f32).abs() < 1e-3, "gradient total {total}");
}

#[test]
fn stage_one_cross_entropy_is_the_class_weighted_mean_over_labelled_pixels_only() {
    use burn::tensor::{Int, Tensor, TensorData};
    use rpl_web::training::losses::segmentation_cross_entropy;
    let device = BackendKind::Flex.device().unwrap();
    // Three classes, four pixels in a row, channel-major: pixel 1 is void, pixel 3 an outlier;
    // class 1 labels no pixel, so its weight must not count.
    let logits = [[2.0, 0.0, 1.0, 9.0], [0.0, 9.0, 1.0, 0.0], [0.0, 0.0, 0.0, 9.0]];
    let logits = Tensor::<4>::from_data(TensorData::new(logits.concat(), [1, 3, 1, 4]), &device);
    let labels = Tensor::<3, Int>::from_data(TensorData::new(vec![0i64, 255, 2, 254], [1, 1, 4]), &device);
    let weights = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 5.0, 3.0], [3]), &device);
    let e = std::f64::consts::E;
    let pixel0 = -(e * e / (e * e + 2.0)).ln();
    let pixel2 = -(1.0 / (2.0 * e + 1.0)).ln();
    // PyTorch's weighted mean: the weights of the labelled pixels' classes divide.
    let expected = (pixel0 + 3.0 * pixel2) / 4.0;
    let loss = f64::from(segmentation_cross_entropy(logits, labels, weights).into_scalar::<f32>());
    assert!((loss - expected).abs() < 1e-5, "cross-entropy {loss}, expected {expected}");
}

#[test]
fn logit_adjustment_shifts_each_class_by_tau_times_the_log_of_its_weight() {
    use burn::tensor::{Int, Tensor, TensorData};
    use rpl_web::training::losses::logit_adjusted_cross_entropy;
    let device = BackendKind::Flex.device().unwrap();
    // One pixel of class 0, equal logits. Class 1 (weight 4, tau 0.5) gains ln 2, so its
    // softmax share doubles: -ln(1 / (1 + 2 + 1)). Class 2 has weight 0 and is not shifted.
    let logits = Tensor::<4>::from_data(TensorData::new(vec![0.0f32; 3], [1, 3, 1, 1]), &device);
    let labels = Tensor::<3, Int>::from_data(TensorData::new(vec![0i64], [1, 1, 1]), &device);
    let weights = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 4.0, 0.0], [3]), &device);
    let loss = f64::from(logit_adjusted_cross_entropy(logits.clone(), labels.clone(), weights.clone(), 0.5).into_scalar::<f32>());
    assert!((loss - 4f64.ln()).abs() < 1e-5, "adjusted cross-entropy {loss}, expected ln 4");
    // tau 0 is the plain weighted cross-entropy.
    let plain = f64::from(logit_adjusted_cross_entropy(logits, labels, weights, 0.0).into_scalar::<f32>());
    assert!((plain - 3f64.ln()).abs() < 1e-5, "unadjusted cross-entropy {plain}, expected ln 3");
}
