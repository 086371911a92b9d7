//! Kernels of our own for burn's flex CPU backend (natively, and in the browser's WebAssembly
//! where WebGPU is missing or software), each where a benchmark showed burn's general op well
//! behind: the convolutions with what follows them ([`tap_products`]; the wide 3x3s on larger
//! maps by Winograd's minimal filtering, [`winograd`]), the trunk's
//! BatchNorm-ReLU pre-activations ([`batch_norm_relu`]), its two max-pools ([`max_pool`]), every
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
pub mod tap_products;
pub mod winograd;

use burn::tensor::{Device, Tensor};
#[cfg(feature = "threads")]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Threads these kernels compute on: rayon's pool (flex's too), or 1 without `threads`.
pub fn threads() -> usize {
    #[cfg(feature = "threads")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "threads"))]
    1
}

/// `work` on a thread of the CPU pool (with `threads`), the caller waiting: the kernels' parallel
/// passes inside it then start from a thread of the pool, which takes a share of each pass itself
/// while the others join, instead of waking the pool and sleeping until it is done. On flex the
/// other threads stay awake until `work` ends ([`keep_pool_awake`]).
pub fn on_pool<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    {
        let done = AtomicBool::new(false);
        let keep_awake = on_flex_outside_training(device);
        rayon::scope(|scope| {
            if keep_awake {
                keep_pool_awake(scope, &done);
            }
            let _done = SetOnDrop(&done);
            work()
        })
    }
    #[cfg(not(feature = "threads"))]
    {
        let _ = device;
        work()
    }
}

/// Sets its flag when dropped: when `work` returns or panics.
#[cfg(feature = "threads")]
struct SetOnDrop<'a>(&'a AtomicBool);

#[cfg(feature = "threads")]
impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Every other thread of the pool looks for work without sleeping until `done`: a frame's many
/// small passes then start at once on every thread, where a sleeping thread must first be woken
/// (through `Atomics.wait` in WebAssembly, slow enough to lose most of a small pass; width 1/8 at
/// 128x64 in Chromium, two threads: 20-26 ms a frame with the pool asleep between passes, 16-20
/// kept awake, 15.6-16.3 with smaller passes shared out too; one thread 27-28). The threads spin
/// only while a frame runs, and only on the CPU: a frame on a GPU mostly waits.
#[cfg(feature = "threads")]
fn keep_pool_awake<'s>(scope: &rayon::Scope<'s>, done: &'s AtomicBool) {
    let frame_thread = rayon::current_thread_index();
    for _ in 1..rayon::current_num_threads() {
        scope.spawn(move |_| {
            // Taken back by the frame's own thread (while it waits inside a pass), a helper would
            // spin above the frame's work, which could then never end.
            if rayon::current_thread_index() == frame_thread {
                return;
            }
            THREADS_KEPT_AWAKE.fetch_add(1, Ordering::AcqRel);
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
            THREADS_KEPT_AWAKE.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(feature = "threads")]
static THREADS_KEPT_AWAKE: AtomicUsize = AtomicUsize::new(0);

/// Threads of the pool looking for work through a frame ([`on_pool`]) at this moment: the other
/// threads while a frame runs on flex, else none. For the tests.
pub fn threads_kept_awake() -> usize {
    #[cfg(feature = "threads")]
    return THREADS_KEPT_AWAKE.load(Ordering::Acquire);
    #[cfg(not(feature = "threads"))]
    0
}

/// `work` (on `device`; on the CPU its readbacks are ready at once) driven to its end by
/// [`on_pool`].
pub fn finish_on_pool<F: Future<Output: Send> + Send>(device: &Device, work: F) -> F::Output {
    on_pool(device, || futures_lite::future::block_on(work))
}

/// Below this many values a pass over a map stays on the calling thread: sharing it out costs
/// more than it saves.
#[cfg(feature = "threads")]
const PARALLEL_VALUES: usize = 1 << 13;

/// `work(i, chunk)` on each `size`-long chunk of `data` (the last may be shorter), on all cores
/// with the `threads` feature where `data` is large enough to gain.
pub(crate) fn each_chunk_mut<T: Send>(data: &mut [T], size: usize, work: impl Fn(usize, &mut [T]) + Send + Sync) {
    #[cfg(feature = "threads")]
    if data.len() >= PARALLEL_VALUES {
        use rayon::prelude::*;
        data.par_chunks_mut(size.max(1)).enumerate().for_each(|(i, chunk)| work(i, chunk));
        return;
    }
    data.chunks_mut(size.max(1)).enumerate().for_each(|(i, chunk)| work(i, chunk));
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
        use burn::tensor::DType;
        if !on_flex_outside_training(&tensor.device()) || tensor.dtype() != DType::F32 {
            return None;
        }
        let tensor = tensor.try_into_primitive::<burn::backend::Flex>().ok()?;
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

    pub(crate) fn values(&self) -> &[f32] {
        match self.0 {}
    }
}

/// `values` (row-major, `shape`) as a flex tensor, without a copy.
#[cfg(feature = "flex")]
pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::tensor::{Bytes, DType, Shape};
    let layout = Layout::contiguous(Shape::from(shape.to_vec()));
    Tensor::from_primitive::<burn::backend::Flex>(FlexTensor::new(Bytes::from_elems(values), layout, DType::F32))
}

#[cfg(not(feature = "flex"))]
pub(crate) fn flex_tensor<const D: usize>(_values: Vec<f32>, _shape: [usize; D]) -> Tensor<D> {
    unreachable!("FlexValues::of gives None without flex")
}
