//! Training batches: crops of generated scenes (and outlier-source images), as tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use crate::synthetic::{LABEL_OUTLIER, LABEL_VOID, OutlierSet, Scene, SceneRng, TRAINING_SEED_BASE, generate_scene, outlier_source};

/// Normalised images `[N, 3, H, W]` and their labels `[N, H, W]`.
pub struct Batch {
    pub images: Tensor<4>,
    pub labels: Tensor<3, Int>,
    /// The labels on the host, row-major per image (for sampling CoroCL's pixels).
    pub host_labels: Vec<u8>,
}

/// Interleaved 8-bit RGB pixels into the network's normalised planar layout, appended to `out`.
pub fn normalise_into(rgb8: &[u8], out: &mut Vec<f32>) {
    let pixels = rgb8.len() / 3;
    let start = out.len();
    out.resize(start + 3 * pixels, 0.0);
    for (i, px) in rgb8.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[start + c * pixels + i] = (f32::from(px[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
}

/// The `[h, w]` window at `(top, left)` of an image `width` pixels wide with `channels` per pixel.
fn crop<T: Copy>(data: &[T], width: usize, channels: usize, top: usize, left: usize, size: [usize; 2]) -> Vec<T> {
    let mut out = Vec::with_capacity(size[0] * size[1] * channels);
    for y in top..top + size[0] {
        let row = (y * width + left) * channels;
        out.extend_from_slice(&data[row..row + size[1] * channels]);
    }
    out
}

/// A crop origin; with `focus` pixels given, one of them is inside the crop.
fn crop_origin(rng: &mut SceneRng, scene: [usize; 2], size: [usize; 2], focus: &[usize]) -> (usize, usize) {
    let (max_top, max_left) = (scene[0] - size[0], scene[1] - size[1]);
    let focus_pixel = (!focus.is_empty()).then(|| focus[rng.below(focus.len())]);
    let mut pick = |lo: usize, hi: usize| lo + rng.below(hi - lo + 1);
    let Some(pixel) = focus_pixel else {
        return (pick(0, max_top), pick(0, max_left));
    };
    let (py, px) = (pixel / scene[1], pixel % scene[1]);
    // Any origin that keeps the pixel inside: top in [py - h + 1, py], within the scene.
    let top = pick((py + 1).saturating_sub(size[0]).min(max_top), py.min(max_top));
    let left = pick((px + 1).saturating_sub(size[1]).min(max_left), px.min(max_left));
    (top, left)
}

/// What a batch holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    /// Generated scene size `[h, w]`; crops are taken from it at its own scale.
    pub scene: [usize; 2],
    pub crop: [usize; 2],
    pub batch: usize,
    pub outliers: OutlierSet,
    /// Also append `batch` outlier-source images (stage 2's contrast), after the scenes.
    pub with_sources: bool,
}

/// The pixels one of which a training crop must hold: in scenes with outliers, the outliers'
/// (stage 2 learns from them); in inlier scenes, those of one class drawn uniformly among the
/// classes present (class-uniform sampling), so that in a scene showing both a sign is as often
/// the focus as the road.
pub fn crop_focus(labels: &[u8], rng: &mut SceneRng) -> Vec<usize> {
    let pixels_of = |class: u8| labels.iter().enumerate().filter(|(_, l)| **l == class).map(|(i, _)| i).collect::<Vec<_>>();
    let outliers = pixels_of(LABEL_OUTLIER);
    if !outliers.is_empty() {
        return outliers;
    }
    let mut present = [false; 256];
    for &l in labels {
        present[usize::from(l)] = true;
    }
    let classes: Vec<u8> = (0..=255u8).filter(|&c| present[usize::from(c)] && is_inlier(c)).collect();
    if classes.is_empty() {
        return Vec::new();
    }
    pixels_of(classes[rng.below(classes.len())])
}

/// Training image `index` of the run seeded `seed`: its scene and crop origin.
fn training_crop(spec: &BatchSpec, seed: u64, index: usize, rng: &mut SceneRng) -> (Scene, (usize, usize)) {
    let scene = generate_scene(TRAINING_SEED_BASE + seed.wrapping_mul(1_000_003) + index as u64, spec.scene[1], spec.scene[0], spec.outliers);
    let focus = crop_focus(&scene.labels, rng);
    let origin = crop_origin(rng, spec.scene, spec.crop, &focus);
    (scene, origin)
}

/// The batch of training step `step`: a pure function of `(seed, step)`, so a resumed run sees
/// the same data.
pub fn training_batch(spec: &BatchSpec, seed: u64, step: usize, device: &Device) -> Batch {
    let mut rng = SceneRng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ step as u64);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for i in 0..spec.batch {
        let (scene, (top, left)) = training_crop(spec, seed, step * spec.batch + i, &mut rng);
        normalise_into(&crop(&scene.rgb8, scene.width, 3, top, left, spec.crop), &mut images);
        labels.extend(crop(&scene.labels, scene.width, 1, top, left, spec.crop));
    }
    let mut count = spec.batch;
    if spec.with_sources {
        for i in 0..spec.batch {
            let source = outlier_source(seed ^ ((step * spec.batch + i) as u64) << 20, spec.crop[1], spec.crop[0], spec.outliers.kinds());
            normalise_into(&source.rgb8, &mut images);
            // The source's background stands for inlier pixels in the contrast; its object for OoD.
            labels.extend(source.object.iter().map(|&o| if o { LABEL_OUTLIER } else { 0 }));
        }
        count *= 2;
    }
    let [h, w] = spec.crop;
    let label_ints: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Batch {
        images: Tensor::from_data(TensorData::new(images, [count, 3, h, w]), device),
        labels: Tensor::from_data(TensorData::new(label_ints, [count, h, w]), device),
        host_labels: labels,
    }
}

/// Whether a label is an inlier class (not an outlier, not void).
pub fn is_inlier(label: u8) -> bool {
    label != LABEL_OUTLIER && label != LABEL_VOID
}

/// Class weights for stage 1's cross-entropy, from the label frequencies `f` in crops of the
/// first `scenes` training scenes of seed 0, cut as training cuts them: `sqrt(median(f) / f)`,
/// within [1/4, 4], so that poles and traffic lights count against the road; 0 for classes never
/// drawn.
pub fn class_weights(spec: &BatchSpec, classes: usize, scenes: usize) -> Vec<f32> {
    let mut counts = vec![0u64; classes];
    let mut rng = SceneRng::new(0x5eed);
    for i in 0..scenes {
        let (scene, (top, left)) = training_crop(spec, 0, i, &mut rng);
        for &l in &crop(&scene.labels, scene.width, 1, top, left, spec.crop) {
            if usize::from(l) < classes {
                counts[usize::from(l)] += 1;
            }
        }
    }
    let mut present: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    present.sort_unstable();
    let median = present.get(present.len() / 2).copied().unwrap_or(1) as f64;
    counts.iter().map(|&c| if c == 0 { 0.0 } else { (median / c as f64).sqrt().clamp(0.25, 4.0) as f32 }).collect()
}
