//! How the network's convolutions run. On the CPU backends and in training: burn's own
//! `Conv2d::forward`. On GPU backends (wgpu, WebGPU) burn without autotune runs every convolution
//! as a direct kernel (autotune's faster candidates need tensor-core matrix instructions, which
//! WGSL lacks), while its matrix product is tiled; so inference there can instead run them as
//! im2col matrix products ([`GpuConvolution::MatrixProducts`]). On the software adapters here
//! they were 2.4x faster on lavapipe (released width) but slower on SwiftShader (1.8x at width
//! 1/8, over 3x at the released width); real GPUs are not measured yet, so burn's kernel stays
//! the default (`rpl bench --gpu-convolution` and the page's `?conv=` compare them, with the
//! implicit routine too).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

use super::on_gpu_outside_training;
use super::layers::relu_in_one_pass;
use crate::cpu::tap_products::{Epilogue, TapGeometry, Weights, convolve_by_taps};
use crate::cpu::{FlexValues, flex_tensor};

/// The largest im2col matrix one product reads (bytes): half of WebGPU's default storage-binding
/// limit (128 MiB), so that any adapter binds it with room for the memory pool's rounding;
/// larger maps are convolved in bands of rows.
const MAX_COLUMNS_BYTES: usize = 64 << 20;

/// The narrowest layers that run as products (output channels, and input channels x kernel
/// area): below, on the width-1/8 demo model's ASPP and decoder, the direct kernel was faster.
const MIN_PRODUCT_COLUMNS: usize = 64;
const MIN_PRODUCT_DEPTH: usize = 256;

/// How GPU backends run the network's convolutions at inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuConvolution {
    /// burn's convolution kernel.
    #[default]
    Direct,
    /// im2col matrix products, for the layers wide enough to gain from them.
    MatrixProducts,
    /// burn's implicit-product routine (no im2col matrix in memory) on register tiles
    /// (`crate::gpu::implicit_gemm`), 1x1s wide enough for them as matrix products.
    Implicit,
    /// Our kernel of register tiles (`crate::gpu::register_tiles`), for WGSL.
    RegisterTiles,
    /// The same register tiles with workgroups staging input and weight tiles in workgroup
    /// memory first. Native only ([`Self::ON_THE_PAGE`]).
    StagedTiles,
}

impl GpuConvolution {
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::MatrixProducts => "products",
            Self::Implicit => "implicit",
            Self::RegisterTiles => "tiles",
            Self::StagedTiles => "staged",
        }
    }

    pub const ALL: [Self; 5] = [Self::Direct, Self::MatrixProducts, Self::Implicit, Self::RegisterTiles, Self::StagedTiles];

    /// The choices the page offers: not `staged`, whose workgroup barriers SwiftShader (WebGPU
    /// without a GPU) took 7 minutes to compile for a 64x128 image of the demo model.
    pub const ON_THE_PAGE: [Self; 4] = [Self::Direct, Self::MatrixProducts, Self::Implicit, Self::RegisterTiles];

    /// The choice named as [`Self::name`] gives it (the command line's word).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|choice| choice.name() == name)
    }

    /// The page's choice so named, of [`Self::ON_THE_PAGE`].
    pub fn on_the_page(name: &str) -> Option<Self> {
        Self::from_name(name).filter(|choice| Self::ON_THE_PAGE.contains(choice))
    }
}

/// Process-wide, like the device: set once before running (`rpl bench --gpu-convolution`, the
/// page's `?conv=`); the index of the choice in `GpuConvolution::ALL`.
static GPU_CONVOLUTION: AtomicU8 = AtomicU8::new(0);

pub fn set_gpu_convolution(choice: GpuConvolution) {
    let index = GpuConvolution::ALL.iter().position(|&c| c == choice).unwrap_or(0);
    GPU_CONVOLUTION.store(index as u8, Ordering::Relaxed);
}

pub fn gpu_convolution() -> GpuConvolution {
    let index = usize::from(GPU_CONVOLUTION.load(Ordering::Relaxed));
    GpuConvolution::ALL[index.min(GpuConvolution::ALL.len() - 1)]
}

/// `module`'s weights laid out for the convolutions that read them: on flex, `[Cout, k, k, Cin]`
/// ([`crate::cpu::ohwi_weights`]); on wgpu for the chosen GPU convolution, channels-last for the
/// implicit routine (which would copy them so on every call), taps-major for our tiles; as they
/// are otherwise.
pub fn arrange_weights<M: burn::module::Module>(module: M) -> M {
    let module = crate::cpu::ohwi_weights(module);
    #[cfg(feature = "wgpu")]
    match gpu_convolution() {
        GpuConvolution::Implicit => return crate::gpu::implicit_gemm::channels_last_weights(module),
        GpuConvolution::RegisterTiles | GpuConvolution::StagedTiles => return crate::gpu::register_tiles::taps_major_weights(module),
        _ => {}
    }
    module
}

/// The ways a convolution can run: burn's own kernel (`Conv2d::forward`), im2col matrix products,
/// the implicit routine, our flex kernel (one matrix product per tap), our tile kernels.
#[derive(Debug, Clone, Copy)]
enum ConvolutionPath {
    Kernel,
    Products,
    // Run only where the routine is built (the `wgpu` feature); counted everywhere.
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    Implicit,
    Taps,
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    Tiles,
}

/// The paths' names, in the order of [`convolutions_run`]'s counts.
pub const CONVOLUTION_PATHS: [&str; 5] = ["kernel", "products", "implicit", "taps", "tiles"];
/// Convolutions run so far by each [`ConvolutionPath`].
static RUN_BY_PATH: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];

/// How many convolutions each of [`CONVOLUTION_PATHS`] has run in this process: a benchmark or
/// a test takes the difference over a frame to know that no layer fell back to burn's kernel.
pub fn convolutions_run() -> [usize; 5] {
    RUN_BY_PATH.each_ref().map(|count| count.load(Ordering::Relaxed))
}

fn count_run(path: ConvolutionPath) {
    RUN_BY_PATH[path as usize].fetch_add(1, Ordering::Relaxed);
}

/// `conv` applied to `x` (`[N, C, H, W]`), as [`gpu_convolution`] says on GPU backends.
pub fn convolve(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    convolve_then(conv, x, None, false)
}

/// `conv(x)`, plus `residual` where given (a block's shortcut), then ReLU where `relu`: on flex
/// our kernel does the three on each band of rows while it is in cache; elsewhere they are
/// burn's ops after the convolution.
pub fn convolve_then(conv: &Conv2d, x: Tensor<4>, residual: Option<Tensor<4>>, relu: bool) -> Tensor<4> {
    if layer_timing::on() {
        return layer_timing::timed(conv, x, |x| convolve_then_untimed(conv, x, residual, relu));
    }
    convolve_then_untimed(conv, x, residual, relu)
}

fn convolve_then_untimed(conv: &Conv2d, x: Tensor<4>, residual: Option<Tensor<4>>, relu: bool) -> Tensor<4> {
    if let Some(y) = convolve_on_flex(conv, &x, residual.as_ref(), relu) {
        count_run(ConvolutionPath::Taps);
        return y;
    }
    #[cfg(feature = "wgpu")]
    if gpu_convolution() == GpuConvolution::Implicit
        && on_gpu_outside_training(&x.device())
        && !(is_pointwise(conv) && large_enough(conv))
        && let Some(y) = crate::gpu::implicit_gemm::convolve_implicit(conv, &x)
    {
        count_run(ConvolutionPath::Implicit);
        return finish(y, residual, relu);
    }
    #[cfg(feature = "wgpu")]
    if let Some(kernel) = tile_kernel()
        && on_gpu_outside_training(&x.device())
        && let Some(y) = crate::gpu::register_tiles::convolve_in_tiles(kernel, conv, &x, residual.as_ref(), relu)
    {
        count_run(ConvolutionPath::Tiles);
        return y;
    }
    // The implicit choice sends its wide 1x1s (and any layer its routine refuses) here too.
    let products = gpu_convolution() != GpuConvolution::Direct && large_enough(conv) && on_gpu_outside_training(&x.device());
    let by_products = if products { convolve_by_matmul(conv, x.clone(), MAX_COLUMNS_BYTES) } else { None };
    count_run(if by_products.is_some() { ConvolutionPath::Products } else { ConvolutionPath::Kernel });
    finish(by_products.unwrap_or_else(|| conv.forward(x)), residual, relu)
}

/// Which of our tile kernels the chosen GPU convolution is, if one.
#[cfg(feature = "wgpu")]
fn tile_kernel() -> Option<crate::gpu::register_tiles::TileKernel> {
    use crate::gpu::register_tiles::TileKernel;
    match gpu_convolution() {
        GpuConvolution::RegisterTiles => Some(TileKernel::Registers),
        GpuConvolution::StagedTiles => Some(TileKernel::Staged),
        _ => None,
    }
}

/// What follows a convolution off flex: the residual added, then ReLU.
fn finish(y: Tensor<4>, residual: Option<Tensor<4>>, relu: bool) -> Tensor<4> {
    let y = match residual {
        Some(residual) => y + residual,
        None => y,
    };
    if relu { relu_in_one_pass(y) } else { y }
}

/// A float32 convolution on flex as matrix products over its kernel taps ([`convolve_by_taps`])
/// with what follows it, reading the input, weights and residual where flex keeps them; `None`
/// off flex.
fn convolve_on_flex(conv: &Conv2d, x: &Tensor<4>, residual: Option<&Tensor<4>>, relu: bool) -> Option<Tensor<4>> {
    let Geometry { kernel, dilation, stride, .. } = padded_geometry(conv)?;
    let [batch, input_channels, height, width] = x.dims();
    let output_channels = conv.weight.dims()[0];
    let geometry = TapGeometry { batch, input_channels, height, width, output_channels, kernel, dilation, stride };
    let input = FlexValues::of(x.clone())?;
    let (weight, order) = FlexValues::of_weights(conv.weight.val())?;
    let bias = match &conv.bias {
        Some(bias) => Some(FlexValues::of(bias.val())?),
        None => None,
    };
    let residual = match residual {
        Some(residual) => Some(FlexValues::of(residual.clone())?),
        None => None,
    };
    let epilogue = Epilogue { bias: bias.as_ref().map(FlexValues::values), residual: residual.as_ref().map(FlexValues::values), relu };
    let out = convolve_by_taps(input.values(), Weights { values: weight.values(), order }, geometry, epilogue);
    Some(flex_tensor(out, [batch, output_channels, geometry.output_height(), geometry.output_width()]))
}

/// Narrow layers gain nothing from the products' tiling and pay for the copies.
fn large_enough(conv: &Conv2d) -> bool {
    let [cout, cin, kh, kw] = conv.weight.lazy_shape().dims();
    cout >= MIN_PRODUCT_COLUMNS && cin * kh * kw >= MIN_PRODUCT_DEPTH
}

/// A 1x1 stride-1 convolution: a plain matrix product, which burn's matrix-product kernel runs
/// without the implicit routine's im2col addressing.
#[cfg(feature = "wgpu")]
fn is_pointwise(conv: &Conv2d) -> bool {
    conv.kernel_size == [1, 1] && conv.stride == [1, 1] && conv.groups == 1
}

/// An ungrouped convolution with the padding that keeps the map's size at stride 1: its square
/// kernel side, dilation and stride (1 for all but the trunk's two strided ones).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kernel: usize,
    dilation: usize,
    /// Zero padding on each side: how far the kernel reaches from its centre.
    pad: usize,
    stride: usize,
}

/// A [`Geometry`] at stride 1: the output the input's size.
fn same_size_geometry(conv: &Conv2d) -> Option<Geometry> {
    padded_geometry(conv).filter(|g| g.stride == 1)
}

/// A convolution padded as [`same_size_geometry`]'s, at any equal stride (every convolution of
/// the network).
fn padded_geometry(conv: &Conv2d) -> Option<Geometry> {
    let [kh, kw] = conv.kernel_size;
    let [dh, dw] = conv.dilation;
    let [sh, sw] = conv.stride;
    let pad = dh * (kh - 1) / 2;
    let same = kh == kw && dh == dw && kh % 2 == 1 && conv.padding == PaddingConfig2d::Explicit(pad, pad, pad, pad);
    (same && sh == sw && sh >= 1 && conv.groups == 1).then_some(Geometry { kernel: kh, dilation: dh, pad, stride: sh })
}

/// im2col: the k x k shifted copies of the (channels-last) input side by side, one product with
/// the weights reshaped to `[k·k·Cin, Cout]`; in bands of rows where that matrix would exceed
/// `max_columns_bytes` (a band of r rows: r·N·W·k²·Cin float32 values; at least one row).
/// Each copy is zero-padded only where it leaves the map, and one that lies wholly outside
/// (the ASPP's largest rates on small maps) is left out with its weights. `None` for a strided,
/// grouped or not size-preserving convolution, or an empty input (left to `Conv2d::forward`).
pub fn convolve_by_matmul(conv: &Conv2d, x: Tensor<4>, max_columns_bytes: usize) -> Option<Tensor<4>> {
    let Geometry { kernel, dilation, pad, .. } = same_size_geometry(conv)?;
    let [n, cin, h, w] = x.dims();
    if n * h * w == 0 {
        return None;
    }
    let weight = conv.weight.val();
    let cout = weight.dims()[0];
    // Rows tap·Cin .. (tap+1)·Cin of the weight matrix meet column block `tap` (tap = ky·k + kx).
    let weights = weight.permute([2, 3, 1, 0]).reshape([kernel * kernel * cin, cout]);
    let channels_last = x.permute([0, 2, 3, 1]);
    // Tap (ky, kx) reads the input shifted by (ky·d - pad, kx·d - pad).
    let offset = |k: usize| (k * dilation) as isize - pad as isize;

    let row_bytes = n * w * kernel * kernel * cin * size_of::<f32>();
    let band = (max_columns_bytes / row_bytes).clamp(1, h);
    let bands: Vec<Tensor<4>> = (0..h)
        .step_by(band)
        .map(|top| {
            let rows = band.min(h - top);
            let (taps, blocks): (Vec<Tensor<4>>, Vec<usize>) = (0..kernel * kernel)
                .filter_map(|tap| {
                    let shifted = shifted_window(&channels_last, top, rows, offset(tap / kernel), offset(tap % kernel))?;
                    Some((shifted, tap))
                })
                .unzip();
            let columns = Tensor::cat(taps, 3).reshape([n * rows * w, blocks.len() * cin]);
            let band_weights = if blocks.len() == kernel * kernel {
                weights.clone()
            } else {
                Tensor::cat(blocks.iter().map(|&b| weights.clone().slice([b * cin..(b + 1) * cin, 0..cout])).collect(), 0)
            };
            columns.matmul(band_weights).reshape([n, rows, w, cout])
        })
        .collect();
    let mut out = Tensor::cat(bands, 1);
    if let Some(bias) = &conv.bias {
        out = out + bias.val().reshape([1, 1, 1, cout]);
    }
    Some(out.permute([0, 3, 1, 2]))
}

/// Output rows `top..top + rows` of a channels-last map shifted by (`dy`, `dx`): row r, column c
/// holds input (top + r + dy, c + dx), zero outside the map; `None` when it is all outside.
fn shifted_window(x: &Tensor<4>, top: usize, rows: usize, dy: isize, dx: isize) -> Option<Tensor<4>> {
    let [n, h, w, c] = x.dims();
    let span = |start: isize, len: usize, size: usize| {
        let from = start.clamp(0, size as isize) as usize;
        let to = (start + len as isize).clamp(0, size as isize) as usize;
        (from < to).then(|| (from, to, (from as isize - start) as usize, (start + len as isize - to as isize) as usize))
    };
    let (y0, y1, pad_top, pad_bottom) = span(top as isize + dy, rows, h)?;
    let (x0, x1, pad_left, pad_right) = span(dx, w, w)?;
    let window = x.clone().slice([0..n, y0..y1, x0..x1, 0..c]);
    if pad_top + pad_bottom + pad_left + pad_right == 0 {
        return Some(window);
    }
    Some(window.pad([(0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0)], PadMode::Constant(0.0)))
}

/// The convolutions' time by kind, for `rpl bench --layers`: while it is on, each convolution
/// waits for the device before and after it (frames get slower; each layer's time is its own).
/// Only the native benchmark turns it on: `Instant` has no clock in the browser's WebAssembly.
pub mod layer_timing {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use burn::nn::conv::Conv2d;
    use burn::tensor::Tensor;

    /// One kind of convolution (kernel, stride, dilation) over the frames timed.
    #[derive(Debug, Clone, PartialEq, serde::Serialize)]
    pub struct LayerKind {
        /// "3x3", "3x3 dilation 12", "3x3 stride 2", "1x1"...
        pub kind: String,
        pub calls: usize,
        pub ms: f64,
        /// Multiply-adds counted twice.
        pub flop: f64,
    }

    static ON: AtomicBool = AtomicBool::new(false);
    static KINDS: Mutex<Vec<LayerKind>> = Mutex::new(Vec::new());

    pub(super) fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// Starts timing from zero.
    pub fn start() {
        KINDS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        ON.store(true, Ordering::Relaxed);
    }

    /// Stops timing; the kinds in the order first met.
    pub fn stop() -> Vec<LayerKind> {
        ON.store(false, Ordering::Relaxed);
        std::mem::take(&mut *KINDS.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn timed(conv: &Conv2d, x: Tensor<4>, run: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let waited = device.sync().is_ok();
        let started = Instant::now();
        let y = run(x);
        if !(waited && device.sync().is_ok()) {
            return y;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let [k, k_w] = conv.kernel_size;
        let [stride, _] = conv.stride;
        let [dilation, _] = conv.dilation;
        let mut kind = format!("{k}x{k_w}");
        if stride > 1 {
            kind += &format!(" stride {stride}");
        }
        if dilation > 1 {
            kind += &format!(" dilation {dilation}");
        }
        let [cout, cin_per_group, _, _] = conv.weight.dims();
        let [batch, _, height, width] = y.dims();
        let flop = 2.0 * (batch * cout * height * width * cin_per_group * k * k_w) as f64;
        let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.iter_mut().find(|entry| entry.kind == kind) {
            Some(entry) => {
                entry.calls += 1;
                entry.ms += ms;
                entry.flop += flop;
            }
            None => kinds.push(LayerKind { kind, calls: 1, ms, flop }),
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::GpuConvolution;

    #[test]
    fn every_choice_goes_by_its_name_and_the_page_offers_all_but_staged() {
        for choice in GpuConvolution::ALL {
            assert_eq!(GpuConvolution::from_name(choice.name()), Some(choice));
            let on_the_page = GpuConvolution::on_the_page(choice.name());
            assert_eq!(on_the_page.is_some(), choice != GpuConvolution::StagedTiles, "{}", choice.name());
        }
        assert_eq!(GpuConvolution::from_name("winograd"), None);
    }
}
