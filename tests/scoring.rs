//! The score functions on hand-made logits whose answers are known in closed form.

use burn::tensor::{Device, Tensor, TensorData};
use rpl_web::backend::BackendKind;
use rpl_web::scoring::{
    ScoreMode, anomaly_score, energy_score, gaussian_blur, gaussian_kernel, max_logit_score, max_softmax_score,
    normalized_entropy,
};

fn cpu() -> Device {
    BackendKind::Ndarray.device().unwrap()
}

/// Logits `[1, classes, 1, pixels]` from per-pixel class vectors.
fn logits(pixels: &[Vec<f32>], device: &Device) -> Tensor<4> {
    let classes = pixels[0].len();
    let mut data = vec![0f32; classes * pixels.len()];
    for (p, values) in pixels.iter().enumerate() {
        for (c, v) in values.iter().enumerate() {
            data[c * pixels.len() + p] = *v;
        }
    }
    Tensor::from_data(TensorData::new(data, [1, classes, 1, pixels.len()]), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn scores_of_uniform_and_confident_pixels_have_their_closed_forms() {
    let device = cpu();
    let uniform = vec![2.0f32; 19];
    let mut confident = vec![-500.0f32; 19];
    confident[4] = 500.0; // every other probability underflows to exactly 0 in float32
    let x = logits(&[uniform, confident], &device);

    let energy = values(energy_score(x.clone()));
    assert!((energy[0] - -(2.0 + 19f32.ln())).abs() < 1e-5, "{energy:?}");
    assert!((energy[1] - -500.0).abs() < 1e-3, "{energy:?}");

    let entropy = values(normalized_entropy(x.clone()));
    assert!((entropy[0] - 1.0).abs() < 1e-6, "uniform: {entropy:?}");
    assert_eq!(entropy[1], 0.0, "0 log 0 is taken as its limit 0, not NaN");

    let max_softmax = values(max_softmax_score(x.clone()));
    assert!((max_softmax[0] + 1.0 / 19.0).abs() < 1e-6 && (max_softmax[1] + 1.0).abs() < 1e-6, "{max_softmax:?}");
    assert_eq!(values(max_logit_score(x)), vec![-2.0, -500.0]);
}

#[test]
fn gaussian_kernel_is_normalised_and_symmetric() {
    let k = gaussian_kernel();
    assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!((0..3).all(|i| k[i] == k[6 - i]) && k[3] > k[2]);
    assert!((k[3] - 0.3990503).abs() < 1e-6, "centre weight of exp(-x^2/2), x=-3..3, normalised: {}", k[3]);
}

#[test]
fn blur_keeps_constant_maps_and_mass_and_handles_tiny_maps() {
    let device = cpu();
    for (h, w) in [(1, 1), (2, 3), (3, 9), (9, 7)] {
        let constant = Tensor::<3>::full([1, h, w], 0.25, &device);
        let blurred = values(gaussian_blur(constant));
        assert_eq!(blurred.len(), h * w);
        assert!(blurred.iter().all(|v| (v - 0.25).abs() < 1e-6), "{h}x{w}: {blurred:?}");
    }
    // An impulse far from the borders spreads into the 7x7 kernel's outer product.
    let mut impulse = vec![0f32; 15 * 15];
    impulse[7 * 15 + 7] = 1.0;
    let blurred = values(gaussian_blur(Tensor::from_data(TensorData::new(impulse, [1, 15, 15]), &device)));
    let k = gaussian_kernel();
    assert!((blurred[7 * 15 + 7] - k[3] * k[3]).abs() < 1e-7);
    assert!((blurred[5 * 15 + 8] - k[1] * k[4]).abs() < 1e-7);
    assert!((blurred.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!(blurred[3 * 15 + 3], 0.0, "beyond the radius of 3");
}

#[test]
fn score_modes_have_names_and_baselines_are_marked() {
    for mode in ScoreMode::ALL {
        assert_eq!(ScoreMode::from_name(mode.name()), Some(mode));
    }
    assert!(ScoreMode::MaxSoftmax.is_baseline() && ScoreMode::MaxLogit.is_baseline());
    assert!(!ScoreMode::Energy.is_baseline() && !ScoreMode::Entropy.is_baseline());
    assert_eq!(ScoreMode::from_name("mahalanobis"), None);
    let x = Tensor::<4>::zeros([1, 19, 4, 4], &cpu());
    assert_eq!(anomaly_score(x, ScoreMode::MaxLogit).dims(), [1, 4, 4]);
}
