//! The score maps' separable blur: a pass along each row, then along each column, with the
//! border reflected (or repeated on maps too small to reflect). burn's CPU convolution builds an
//! im2col matrix for a one-channel map and multiplies it by a one-row kernel.

use burn::tensor::Tensor;

use super::{FlexValues, each_chunk_mut, flex_tensor};

/// Where index `i` (which may lie `radius` outside `0..n`) reads from: reflected about the
/// border without repeating it (PyTorch's "reflect"), or the border repeated.
fn source(i: isize, n: usize, reflect: bool) -> usize {
    let last = n as isize - 1;
    let i = if reflect {
        if i < 0 { -i } else if i > last { 2 * last - i } else { i }
    } else {
        i.clamp(0, last)
    };
    i as usize
}

/// `maps` (`[N, H, W]`, row-major) blurred by `kernel` (odd length, the same along both axes),
/// with the border `reflect`ed or repeated; `reflect` needs both sides longer than the radius.
pub fn blur_separable(maps: &[f32], shape: [usize; 3], kernel: &[f32], reflect: bool) -> Vec<f32> {
    let [n, h, w] = shape;
    assert_eq!(maps.len(), n * h * w, "input size");
    let radius = kernel.len() / 2;
    assert!(!reflect || (h > radius && w > radius), "reflecting needs sides longer than the radius");
    // Each column's sources along its row, found once for every row.
    let sources = |at: usize, n: usize| (0..kernel.len()).map(move |k| source(at as isize + k as isize - radius as isize, n, reflect));
    let columns: Vec<Vec<usize>> = (0..w).map(|x| sources(x, w).collect()).collect();
    let mut along_rows = vec![0f32; maps.len()];
    each_chunk_mut(&mut along_rows, w, |row, out| {
        let input = &maps[row * w..][..w];
        for (o, sources) in out.iter_mut().zip(&columns) {
            *o = sources.iter().zip(kernel).fold(0.0, |sum, (&s, &k)| sum + input[s] * k);
        }
    });
    let mut out = vec![0f32; maps.len()];
    each_chunk_mut(&mut out, w, |row, out| {
        let (image, y) = (row / h, row % h);
        for (y, &weight) in sources(y, h).zip(kernel) {
            let input = &along_rows[(image * h + y) * w..][..w];
            out.iter_mut().zip(input).for_each(|(o, &v)| *o += v * weight);
        }
    });
    out
}

/// [`blur_separable`] of maps on flex; `None` elsewhere.
pub fn blur_separable_on_flex(maps: &Tensor<3>, kernel: &[f32], reflect: bool) -> Option<Tensor<3>> {
    let shape = maps.dims();
    let input = FlexValues::of(maps.clone())?;
    Some(flex_tensor(blur_separable(input.values(), shape, kernel, reflect), shape))
}
