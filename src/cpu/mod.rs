//! Kernels of our own for burn's flex CPU backend (natively, and in the browser's WebAssembly
//! where WebGPU is missing or software), each where a benchmark showed burn's general op well
//! behind: the convolutions with what follows them ([`tap_products`]; the wide 3x3s on larger
//! maps by Winograd's minimal filtering, [`winograd`]), the trunk's
//! BatchNorm-ReLU pre-activations ([`batch_norm_relu`]), its two max-pools ([`max_pool`]), the
//! ASPPs' image pooling ([`plane_means`]), every
//! bilinear resize, a band of rows at a time where asked ([`bilinear`]), the per-pixel
//! log-sum-exp under every anomaly score ([`log_sum_exp`]), the class maps' argmax
//! ([`class_argmax`]) and the scores' blur ([`gaussian_blur`]). The kernels work on plain slices
//! (tested against burn's ops in `tests/cpu_kernels.rs`); the `*_on_flex` bridges read flex's
//! buffers in place and give `None` elsewhere (GPU backends, ndarray, training), where burn's
//! ops run.

pub mod batch_norm_relu;
pub mod bilinear;
pub mod class_argmax;
pub mod direct_convolution;
pub mod gaussian_blur;
pub mod log_sum_exp;
pub mod max_pool;
pub mod plane_means;
pub mod pool;
pub mod tap_products;
pub mod winograd;

pub use pool::{each_index, finish_on_pool, on_pool, threads, threads_kept_awake};
#[cfg(feature = "threads")]
pub use pool::frames_on_the_calling_thread;

use burn::tensor::{Device, Tensor};

use tap_products::WeightOrder;

/// Below this many values a pass over a map stays on the calling thread: sharing it out costs
/// more than it saves.
#[cfg(feature = "threads")]
const PARALLEL_VALUES: usize = 1 << 13;

/// `work(i, chunk)` on each `size`-long chunk of `data` (the last may be shorter), on all cores
/// with the `threads` feature where `data` is large enough to gain.
pub(crate) fn each_chunk_mut<T: Send>(data: &mut [T], size: usize, work: impl Fn(usize, &mut [T]) + Send + Sync) {
    let size = size.max(1);
    #[cfg(feature = "threads")]
    if data.len() >= PARALLEL_VALUES {
        let (len, start) = (data.len(), SharedOut(data.as_mut_ptr()));
        each_index(len.div_ceil(size), |i| {
            let from = i * size;
            // SAFETY: chunk i is its own part of `data`, borrowed mutably meanwhile.
            work(i, unsafe { std::slice::from_raw_parts_mut(start.at(from), size.min(len - from)) })
        });
        return;
    }
    data.chunks_mut(size).enumerate().for_each(|(i, chunk)| work(i, chunk));
}

/// A raw pointer that threads writing disjoint parts of one buffer can share.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T = f32>(pub(crate) *mut T);
// SAFETY: each piece of work writes only its own part of the buffer (bands: their own pixels of
// their own planes, see `convolve_band`; chunks: their own chunk).
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// A method, so that closures capture the whole (`Sync`) wrapper, not its pointer.
    fn at(&self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// Pixels per piece of work of a pass over the class axis: a piece reads each class's run of them
/// in turn.
const PIXELS_PER_CHUNK: usize = 4096;

/// One piece of a pass over the class axis: its pixels' run of each class's logits.
pub(crate) struct ClassRuns<'a> {
    image: &'a [f32],
    plane: usize,
    start: usize,
    len: usize,
}

impl<'a> ClassRuns<'a> {
    /// Class `k`'s logits at this piece's pixels.
    pub(crate) fn class(&self, k: usize) -> &'a [f32] {
        &self.image[k * self.plane + self.start..][..self.len]
    }
}

/// `work(runs, out)` for each piece of pixels of `out` (`[N, H, W]`, one value per pixel of the
/// logits `x`, `[N, C, H, W]` row-major), on all cores where the map is large enough to gain.
pub(crate) fn each_pixel_chunk<T: Send>(x: &[f32], [n, c, h, w]: [usize; 4], out: &mut [T], work: impl Fn(ClassRuns, &mut [T]) + Send + Sync) {
    assert_eq!(x.len(), n * c * h * w, "input size");
    let plane = h * w;
    assert_eq!(out.len(), n * plane, "output size");
    for (image, out_image) in x.chunks_exact(c * plane).zip(out.chunks_exact_mut(plane)) {
        each_chunk_mut(out_image, PIXELS_PER_CHUNK, |i, out| {
            work(ClassRuns { image, plane, start: i * PIXELS_PER_CHUNK, len: out.len() }, out);
        });
    }
}

/// Inference on burn's flex backend: where these kernels replace burn's ops.
pub(crate) fn on_flex_outside_training(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        !device.is_autodiff() && *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// A float32 tensor's values, row-major, as flex holds them (copied only where flex keeps them
/// strided), or `None` off flex or at another dtype.
#[cfg(feature = "flex")]
pub(crate) struct FlexValues(burn::backend::flex::FlexTensor);

#[cfg(feature = "flex")]
impl FlexValues {
    pub(crate) fn of<const D: usize>(tensor: Tensor<D>) -> Option<Self> {
        Self::row_major(Self::primitive(tensor)?)
    }

    /// A convolution's weights (`[Cout, Cin, k, k]`) in place where stored row-major or as
    /// [`ohwi_weights`] stores them, else copied row-major; with their order.
    pub(crate) fn of_weights<const D: usize>(weight: Tensor<D>) -> Option<(Self, WeightOrder)> {
        let dims = weight.dims();
        let &[_, cin, kh, kw] = dims.as_slice() else { return None };
        let tensor = Self::primitive(weight)?;
        let layout = tensor.layout();
        if kh * kw > 1 && layout.start_offset() == 0 && layout.strides() == ohwi_strides([cin, kh, kw]) {
            return Some((Self(tensor), WeightOrder::Ohwi));
        }
        Some((Self::row_major(tensor)?, WeightOrder::Oihw))
    }

    /// `tensor` as flex holds it, where it is a float32 tensor for inference on flex.
    fn primitive<const D: usize>(tensor: Tensor<D>) -> Option<burn::backend::flex::FlexTensor> {
        if !on_flex_outside_training(&tensor.device()) || tensor.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        tensor.try_into_primitive::<burn::backend::Flex>().ok()
    }

    fn row_major(tensor: burn::backend::flex::FlexTensor) -> Option<Self> {
        let in_place = tensor.is_contiguous() && tensor.layout().start_offset() == 0;
        Some(Self(if in_place { tensor } else { tensor.to_contiguous() }))
    }

    pub(crate) fn values(&self) -> &[f32] {
        &self.0.storage::<f32>()[..self.0.layout().num_elements()]
    }
}

#[cfg(not(feature = "flex"))]
pub(crate) struct FlexValues(std::convert::Infallible);

#[cfg(not(feature = "flex"))]
impl FlexValues {
    pub(crate) fn of<const D: usize>(_tensor: Tensor<D>) -> Option<Self> {
        None
    }

    pub(crate) fn of_weights<const D: usize>(_weight: Tensor<D>) -> Option<(Self, WeightOrder)> {
        None
    }

    pub(crate) fn values(&self) -> &[f32] {
        match self.0 {}
    }
}

/// `values` (row-major, `shape`) as a flex tensor, without a copy.
pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    strided_flex_tensor(values, shape, None)
}

/// `values` as a flex tensor of `shape`, its axes `strides` apart (row-major without), without a
/// copy.
#[cfg(feature = "flex")]
fn strided_flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], strides: Option<Vec<isize>>) -> Tensor<D> {
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::tensor::{Bytes, DType, Shape};
    let shape = Shape::from(shape.to_vec());
    let layout = match strides {
        Some(strides) => Layout::new(shape, strides, 0),
        None => Layout::contiguous(shape),
    };
    Tensor::from_primitive::<burn::backend::Flex>(FlexTensor::new(Bytes::from_elems(values), layout, DType::F32))
}

#[cfg(not(feature = "flex"))]
fn strided_flex_tensor<const D: usize>(_values: Vec<f32>, _shape: [usize; D], _strides: Option<Vec<isize>>) -> Tensor<D> {
    unreachable!("FlexValues::of gives None without flex")
}

/// The order our convolutions on flex read a convolution's weights (`[Cout, Cin, k, k]`) in,
/// in place; `None` for other tensors and off flex.
pub fn weight_order_on_flex<const D: usize>(weight: Tensor<D>) -> Option<WeightOrder> {
    FlexValues::of_weights(weight).map(|(_, order)| order)
}

/// The strides of `[Cout, Cin, kh, kw]` weights stored `[Cout, kh, kw, Cin]`.
fn ohwi_strides([cin, kh, kw]: [usize; 3]) -> [isize; 4] {
    [(kh * kw * cin) as isize, 1, (kw * cin) as isize, cin as isize]
}

/// `module`'s convolution weights on flex (for inference) stored `[Cout, k, k, Cin]`
/// ([`WeightOrder::Ohwi`]) where our convolutions read them faster so
/// ([`WeightOrder::preferred`]), and still `[Cout, Cin, k, k]` to every op. Elsewhere as they are.
pub fn ohwi_weights<M: burn::module::Module>(module: M) -> M {
    module.map(&mut StoredOhwi)
}

struct StoredOhwi;

impl burn::module::ModuleMapper for StoredOhwi {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        param.map(|weight| stored_ohwi(weight.clone()).unwrap_or(weight))
    }
}

/// A 4-D tensor `[Cout, Cin, k, k]` on flex whose preferred order is [`WeightOrder::Ohwi`],
/// stored so; `None` for anything else.
fn stored_ohwi<const D: usize>(weight: Tensor<D>) -> Option<Tensor<D>> {
    let dims = weight.dims();
    let &[_, cin, kh, kw] = dims.as_slice() else { return None };
    if kh != kw || WeightOrder::preferred(cin, kh) != WeightOrder::Ohwi {
        return None;
    }
    let taps = kh * kw;
    let values = FlexValues::of(weight)?;
    let values = values.values();
    let mut stored = vec![0f32; values.len()];
    // One output channel's weights at a time: the same run of `Cin · k²` values in either order.
    each_chunk_mut(&mut stored, cin * taps, |co, row| {
        let source = &values[co * cin * taps..][..cin * taps];
        for tap in 0..taps {
            for ci in 0..cin {
                row[WeightOrder::Ohwi.offset([cin, taps], 0, ci, tap)] = source[WeightOrder::Oihw.offset([cin, taps], 0, ci, tap)];
            }
        }
    });
    Some(strided_flex_tensor(stored, dims, Some(ohwi_strides([cin, kh, kw]).to_vec())))
}
