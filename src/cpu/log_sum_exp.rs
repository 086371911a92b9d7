//! `log(sum(exp(x)))` over the classes of every pixel, the quantity under the energy, entropy
//! and max-softmax scores, in one pass over the logits (burn's ops make six over the whole map).
//! Stable as burn's: shifted by the pixel's largest logit. The exponentials (19 per pixel, the
//! bulk of the work) use [`exp_of_nonpositive`] and the logarithm [`ln_of_normal`], polynomials
//! the compiler vectorises: `f32::exp` and `f32::ln` are scalar library calls, in WebAssembly
//! software ones (the logarithm's call alone was over half of this pass natively).

use burn::tensor::Tensor;

use super::{FlexValues, each_pixel_chunk, flex_tensor};

/// `x` (`[N, C, H, W]`, row-major) to `[N, 1, H, W]`: per pixel `max + ln(sum(exp(x - max)))`.
pub fn log_sum_exp(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let mut out = vec![0f32; n * h * w];
    each_pixel_chunk(x, shape, &mut out, |runs, out| {
        // The running maximum in `out`, then the sum of exponentials beside it.
        out.copy_from_slice(runs.class(0));
        for k in 1..c {
            out.iter_mut().zip(runs.class(k)).for_each(|(m, &v)| *m = m.max(v));
        }
        let mut sums = vec![0f32; out.len()];
        for k in 0..c {
            sums.iter_mut().zip(runs.class(k)).zip(out.iter()).for_each(|((s, &v), &m)| *s += exp_of_nonpositive(v - m));
        }
        out.iter_mut().zip(&sums).for_each(|(m, &s)| *m += ln_of_normal(s));
    });
    out
}

/// `e^x` for `x <= 0` within one unit in the last place, without branches or library calls so
/// that a loop over it vectorises: `x = n·ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by Cephes'
/// degree-6 polynomial for `expf`, times `2^n` built in the exponent bits. Below -87 (where
/// `e^x` leaves float32's normal range) it gives `e^-87`, about 1.6e-38: never more than a
/// rounding error in a sum that holds the maximum's `e^0 = 1`.
pub fn exp_of_nonpositive(x: f32) -> f32 {
    // ln 2 split in two so that n·LN2_HIGH is exact for the n that occur.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let rounded = x * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n itself sits in the low bits of `rounded` (a float-to-integer cast would not vectorise).
    let n_int = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
    e_r * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `ln x` for a positive normal float32 (here a sum of exponentials, between 1 and the class
/// count) within one unit in the last place, without branches or library calls: `x = 2^e · m`
/// with `m` in `[√½, √2)`, `ln m` by Cephes' polynomial for `logf` in `m - 1`, plus `e · ln 2`.
pub fn ln_of_normal(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // ln 2 split in two so that e·LN2_HIGH is exact.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let bits = x.to_bits();
    // The mantissa in [½, 1) and its exponent; then m in [√½, √2) by moving one factor of 2.
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let below = (mantissa < SQRT_HALF) as i32;
    let exponent = ((bits >> 23) & 0xff) as i32 - 126 - below;
    let m = mantissa + mantissa * below as f32 - 1.0;
    let e = exponent as f32;
    let z = m * m;
    let p = 7.037_683_6e-2_f32;
    let p = p * m - 1.151_461e-1;
    let p = p * m + 1.167_699_9e-1;
    let p = p * m - 1.242_014_1e-1;
    let p = p * m + 1.424_932_3e-1;
    let p = p * m - 1.666_805_8e-1;
    let p = p * m + 2.000_071_4e-1;
    let p = p * m - 2.499_999_4e-1;
    let p = p * m + 3.333_333e-1;
    let y = p * m * z + e * LN2_LOW - 0.5 * z;
    m + y + e * LN2_HIGH
}

/// [`log_sum_exp`] of a tensor on flex; `None` elsewhere.
pub fn log_sum_exp_on_flex(x: &Tensor<4>) -> Option<Tensor<4>> {
    let [n, c, h, w] = x.dims();
    let input = FlexValues::of(x.clone())?;
    Some(flex_tensor(log_sum_exp(input.values(), [n, c, h, w]), [n, 1, h, w]))
}
