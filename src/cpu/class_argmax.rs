//! Each pixel's class: the index of its largest logit, in one pass over the logits that the
//! compiler vectorises (flex's argmax along the class axis walks each pixel's 19 values a plane
//! apart, one at a time: measured on a 2-core AMD EPYC VM, 2026-12-05, it took longer than the
//! log-sum-exp under the score).

use burn::tensor::{Int, Tensor, TensorData};

use super::{FlexValues, each_pixel_chunk};

/// `x` (`[N, C, H, W]`, row-major) to `[N, H, W]`: per pixel the first class of the largest
/// logit, a NaN counting as larger than any number (as burn's argmax).
pub fn class_argmax(x: &[f32], shape: [usize; 4]) -> Vec<i32> {
    let [n, c, h, w] = shape;
    assert!(c > 0 && c <= i32::MAX as usize, "class count");
    let mut classes = vec![0i32; n * h * w];
    each_pixel_chunk(x, shape, &mut classes, |runs, classes| {
        let mut largest = runs.class(0).to_vec();
        for k in 1..c {
            for ((best, id), &v) in largest.iter_mut().zip(classes.iter_mut()).zip(runs.class(k)) {
                // Bitwise, not short-circuit, so that the loop has no branches and vectorises.
                let wins = (v > *best) | (v.is_nan() & !best.is_nan());
                // Both stores unconditional, the choice a mask (a conditional store would not).
                let keep = wins as u32 as i32 - 1;
                *best = f32::from_bits((v.to_bits() & !keep as u32) | (best.to_bits() & keep as u32));
                *id = (k as i32 & !keep) | (*id & keep);
            }
        }
    });
    classes
}

/// [`class_argmax`] of a tensor on flex, `[N, H, W]`; `None` elsewhere.
pub fn class_argmax_on_flex(x: &Tensor<4>) -> Option<Tensor<3, Int>> {
    let [n, c, h, w] = x.dims();
    let input = FlexValues::of(x.clone())?;
    let classes = class_argmax(input.values(), [n, c, h, w]);
    Some(Tensor::from_data(TensorData::new(classes, [n, h, w]), &x.device()))
}
