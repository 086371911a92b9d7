//! `log(sum(exp(x)))` over the classes of every pixel, the quantity under the energy, entropy
//! and max-softmax scores, in one pass over the logits (burn's ops make six over the whole map).
//! Stable as burn's: shifted by the pixel's largest logit.

use burn::tensor::Tensor;

use super::{FlexValues, each_chunk_mut, flex_tensor};

/// Pixels per piece of work: a piece reads each class's run of them in turn.
const PIXELS_PER_CHUNK: usize = 4096;

/// `x` (`[N, C, H, W]`, row-major) to `[N, 1, H, W]`: per pixel `max + ln(sum(exp(x - max)))`.
pub fn log_sum_exp(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    assert_eq!(x.len(), n * c * h * w, "input size");
    let plane = h * w;
    let mut out = vec![0f32; n * plane];
    for (image, out_image) in x.chunks_exact(c * plane).zip(out.chunks_exact_mut(plane)) {
        each_chunk_mut(out_image, PIXELS_PER_CHUNK, |i, out| {
            let (start, len) = (i * PIXELS_PER_CHUNK, out.len());
            let class = |k: usize| &image[k * plane + start..][..len];
            // The running maximum in `out`, then the sum of exponentials beside it.
            out.copy_from_slice(class(0));
            for k in 1..c {
                out.iter_mut().zip(class(k)).for_each(|(m, &v)| *m = m.max(v));
            }
            let mut sums = vec![0f32; len];
            for k in 0..c {
                sums.iter_mut().zip(class(k)).zip(out.iter()).for_each(|((s, &v), &m)| *s += (v - m).exp());
            }
            out.iter_mut().zip(&sums).for_each(|(m, &s)| *m += s.ln());
        });
    }
    out
}

/// [`log_sum_exp`] of a tensor on flex; `None` elsewhere.
pub fn log_sum_exp_on_flex(x: &Tensor<4>) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let input = FlexValues::of(x.clone())?;
    Some(flex_tensor(log_sum_exp(input.values(), [n, c, h, w]), [n, 1, h, w]))
}
