//! Shared by the integration tests: the reference fixtures and the comparison rule.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// The three reference cases computed by the paper's code on the width-1/8 network.
pub const CASES: [&str; 3] = ["case_64x128", "case_97x161", "case_304x320"];

/// In float32 a faithful port agrees with the reference to this fraction of the largest magnitude.
pub const FLOAT32_TOLERANCE: f32 = 1e-4;

/// Float16's unit roundoff.
pub const F16_ROUNDOFF: f32 = 1.0 / 2048.0;
/// The fixture network (random weights) amplifies rounding: float32 ports agree with the
/// reference to about 5e-6 of the largest value, some 80 x float32's roundoff (6e-8). In float16
/// (lavapipe, BatchNorms folded) the reference cases measure 3.2 % to 6.7 % of the largest value,
/// 65 to 137 roundoffs; the bound allows 160 (7.8 %), a sixth above the worst measured.
pub const FIXTURE_F16_TOLERANCE: f32 = 160.0 * F16_ROUNDOFF;

pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// One case's stored tensors.
pub struct ReferenceCase {
    pub name: &'static str,
    bytes: Vec<u8>,
}

impl ReferenceCase {
    /// Reads `rpl_w8/NAME.safetensors`, or its xz-compressed copy `NAME.safetensors.xz` (the
    /// 304x320 case: 19 MB raw; xz checks the decompressed bytes against its CRC-64).
    pub fn load(name: &'static str) -> Self {
        let path = fixture(&format!("rpl_w8/{name}.safetensors"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) => {
                let compressed = std::fs::File::open(path.with_extension("safetensors.xz")).expect("fixture case is readable");
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(compressed), &mut bytes).expect("fixture case decompresses");
                bytes
            }
        };
        Self { name, bytes }
    }

    pub fn png(&self) -> PathBuf {
        fixture(&format!("rpl_w8/{}.png", self.name))
    }

    pub fn has(&self, key: &str) -> bool {
        SafeTensors::deserialize(&self.bytes).unwrap().tensor(key).is_ok()
    }

    pub fn shape(&self, key: &str) -> Vec<usize> {
        SafeTensors::deserialize(&self.bytes).unwrap().tensor(key).unwrap().shape().to_vec()
    }

    /// A float32 tensor, flattened in C order.
    pub fn f32(&self, key: &str) -> Vec<f32> {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(key).unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        assert_eq!(view.dtype(), Dtype::F32, "{}: {key} is float32", self.name);
        view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

/// The largest magnitude among the finite entries.
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs()))
}

/// Asserts max |actual - expected| <= tolerance * max |expected|, over the entries where the
/// reference is finite. Returns the relative error for reporting.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], tolerance: f32) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}: {} values, the reference has {}", actual.len(), expected.len());
    let scale = max_abs(expected);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if !e.is_finite() {
            continue;
        }
        let diff = (a - e).abs();
        // A NaN in our output is a failure, never a small difference.
        if diff.is_nan() || diff > worst {
            worst = if diff.is_nan() { f32::INFINITY } else { diff };
            at = i;
        }
    }
    let relative = worst / scale.max(f32::MIN_POSITIVE);
    assert!(
        worst <= tolerance * scale,
        "{what}: max abs diff {worst:e} at flat index {at} (ours {}, reference {}) exceeds {tolerance:e} x max|reference| {scale:e}",
        actual[at],
        expected[at]
    );
    relative
}

/// Argmax over the class axis of `[classes, H*W]` logits, and whether the top two are
/// clearly apart (a near tie may flip between two correct implementations).
pub fn argmax_with_margin(logits: &[f32], classes: usize, margin: f32) -> Vec<Option<u8>> {
    let plane = logits.len() / classes;
    (0..plane)
        .map(|p| {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| logits[b * plane + p].total_cmp(&logits[a * plane + p]));
            let gap = logits[order[0] * plane + p] - logits[order[1] * plane + p];
            (gap > margin).then_some(order[0] as u8)
        })
        .collect()
}

/// `check` on a thread of its own, failed where it has not returned within a minute (a frame
/// whose pool never stops spinning hangs rather than fails).
pub fn within_a_minute(what: &str, check: impl FnOnce() + Send + 'static) {
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        check();
        sent.send(()).unwrap();
    });
    match received.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no end within a minute"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed (above)"),
    }
}

/// `condition` became true within ten seconds.
pub fn soon(condition: impl Fn() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 10 {
        if condition() {
            return true;
        }
        std::thread::yield_now();
    }
    false
}
