//! Convolutions as implicit matrix products on the GPU without tensor-core instructions: burn's
//! kernel crate (cubek-convolution) reads the input through an im2col view (no im2col matrix in
//! memory) into workgroup tiles, but offers its implicit products only with cooperative-matrix
//! tiles, which WGSL lacks. Here the same convolution routine runs on cubek-matmul's register
//! tiles (one invocation, one block of outputs in registers), whose tile and stage sizes the
//! matrix-product crate infers for each shape.

use burn::backend::Wgpu;
use burn::backend::wgpu::CubeTensor;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn_backend::cubecl::dtype_to_storage_type;
use burn_cubecl::cubecl::client::Client;
use burn_cubecl::cubecl::ir::{AddressType, ElemType};
use burn_cubecl::cubecl::prelude::TensorBinding;
use burn_cubecl::cubecl::server::LaunchError;
use burn_cubecl::cubecl::std::tensor::into_contiguous_pitched;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nhwc_to_nchw};
use cubek::convolution::components::global::args::RuntimeArgs;
use cubek::convolution::components::global::read::strategy::sync_bias::SyncBiasLoading;
use cubek::convolution::components::{ConvolutionOperation, ConvolutionProblem, Dimensionality};
use cubek::convolution::forward::launch_kernel;
use cubek::convolution::routines::Routine;
use cubek::matmul::definition::{AccumulatorOperand, AvailableVectorSizes, MatmulElems, MatmulGlobalElems};
use cubek::matmul::multi_level::args::TensorArgs;
use cubek::matmul::multi_level::components::global::read::sync_full_cyclic::SyncFullCyclicLoading;
use cubek::matmul::multi_level::routines::batch::simple_unit::{SimpleUnitAlgorithm, SimpleUnitSelectionArgs};
use cubek::matmul::multi_level::tile::{ColMajorTilingOrder, RowMajorTilingOrder};
use cubek::matmul::multi_level::BatchMatmulRoutine;
use cubek::matmul::routine::BlueprintStrategy;
use cubek::std::{InputBinding, MatrixLayout};

/// The routine loads its input tiles in vectors of 4 values where the input channels (the
/// innermost axis it reads) allow it. With single values (the image's 3 channels) its shader,
/// unrolled, grew to 7000 lines of WGSL, which SwiftShader (WebGPU without a GPU) fails to
/// compile after a minute; those layers are left to burn's kernel.
const LOAD_WIDTH: usize = 4;

/// How many register tiles one invocation computes. The matrix-product crate gives problems of 512
/// rows or more (pixels), or 512 deep or more (input channels x kernel area), partitions of 4x2x4
/// tiles of 4x4x4: 2048 multiply-adds, unrolled with their loads into shaders of over 3000 lines
/// of WGSL, which SwiftShader fails to compile. `Compact` sizes every problem as one under 512
/// (2x2x2 tiles, a quarter of the code); where burn's own choice of partitions works, it stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitions {
    Inferred,
    Compact,
}

impl Partitions {
    /// Compact in the browser, whose shader compilers (the browser's, then the driver's) see
    /// each unrolled shader; natively as inferred.
    pub const DEFAULT: Self = if cfg!(target_arch = "wasm32") { Self::Compact } else { Self::Inferred };
}

/// The problem size below which the matrix-product crate picks its smallest partitions.
const COMPACT_BELOW: usize = 512;

/// cubek-convolution's forward routine on register tiles: the pixels (rows of the implicit
/// im2col matrix) and the weights (output channels) loaded cyclically into workgroup memory.
struct RegisterTileConvolution;

impl Routine for RegisterTileConvolution {
    type Blueprint = <Self::MatmulRoutine as cubek::matmul::routine::Routine<RuntimeArgs>>::Blueprint;
    type Strategy = SimpleUnitSelectionArgs;
    type MatmulRoutine = SimpleUnitAlgorithm<SyncFullCyclicLoading<RowMajorTilingOrder>, SyncFullCyclicLoading<ColMajorTilingOrder>, SyncBiasLoading>;
    type Args = TensorArgs<RuntimeArgs>;

    fn correct_layout(client: &Client, binding: TensorBinding, dtype: ElemType, _: ConvolutionOperation) -> Result<TensorBinding, LaunchError> {
        let channels_last = binding.strides.last() == Some(&1);
        Ok(if channels_last { binding } else { into_contiguous_pitched(client, binding, dtype).binding() })
    }
}

/// `conv(x)` as an implicit matrix product on register tiles, or `None` where it does not apply
/// (another backend than wgpu, grouped convolutions, input channels not a multiple of
/// [`LOAD_WIDTH`], or a shape the routine refuses); partitions as [`Partitions::DEFAULT`].
pub fn convolve_implicit(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    convolve_implicit_with(conv, x, Partitions::DEFAULT)
}

/// [`convolve_implicit`] with partitions chosen as `partitions` says.
pub fn convolve_implicit_with(conv: &Conv2d, x: &Tensor<4>, partitions: Partitions) -> Option<Tensor<4>> {
    if conv.groups != 1 || x.dims()[1] % LOAD_WIDTH != 0 {
        return None;
    }
    let [_, _, height, width] = x.dims();
    let live = live_convolution(conv, height, width)?;
    let [out_h, out_w] = live.output_size(conv, height, width);
    let LiveConvolution { weight, bias, padding, .. } = live;
    let input: CubeTensor = x.clone().try_into_primitive::<Wgpu>().ok()?;
    let (input, weight) = (into_contiguous(permute_nchw_to_nhwc(input)), into_contiguous(permute_nchw_to_nhwc(weight)));
    let [batch, height, width, channels] = dims4(&input);
    let [out_channels, kh, kw, _] = dims4(&weight);
    let dtype = input.dtype;
    let out = empty_device_dtype(input.client.clone(), input.device.clone(), [batch, out_h, out_w, out_channels].into(), dtype);
    let client = input.client.clone();
    let globals = MatmulGlobalElems {
        lhs: dtype_to_storage_type(dtype).into(),
        rhs: dtype_to_storage_type(weight.dtype).into(),
        out: dtype_to_storage_type(dtype).into(),
    };
    let dtypes = MatmulElems::from_globals(&globals);
    let problem = ConvolutionProblem {
        m: batch * out_h * out_w,
        n: out_channels,
        k: channels * kh * kw,
        lhs_strides: input.meta.strides().clone(),
        rhs_strides: weight.meta.strides().clone(),
        lhs_layout: MatrixLayout::RowMajor,
        rhs_layout: MatrixLayout::ColMajor,
        kernel_size: vec![kh as u32, kw as u32],
        stride: conv.stride.iter().map(|&s| s as u32).collect(),
        padding: padding.iter().map(|&p| p as i32).collect(),
        dilation: conv.dilation.iter().map(|&d| d as u32).collect(),
        batches: batch,
        in_shape: [height, width].into(),
        out_shape: [out_h, out_w].into(),
        channels,
        out_channels,
        padded_channels: channels,
        operation: ConvolutionOperation::Forward,
        dimensionality: Dimensionality::Dim2,
        global_dtypes: globals,
        address_type: AddressType::default(),
    };
    let strategy = match partitions {
        Partitions::Inferred => BlueprintStrategy::Inferred(SimpleUnitSelectionArgs::default()),
        Partitions::Compact => {
            // The blueprint the crate infers for the problem made small; the launch is the real one's.
            let element = dtype.size();
            let vector_sizes = AvailableVectorSizes::from_type_sizes(&client, element, weight.dtype.size(), element)
                .filter_lhs_with_tensor(input.meta.strides(), input.meta.shape(), MatrixLayout::RowMajor)
                .filter_rhs_with_tensor(weight.meta.strides(), weight.meta.shape(), MatrixLayout::RowMajor)
                .filter_out_with_tensor(out.meta.strides(), out.meta.shape())
                .pick_max()
                .ok()?;
            let small = ConvolutionProblem { m: problem.m.min(COMPACT_BELOW - 1), k: problem.k.min(COMPACT_BELOW - 1), ..problem.clone() };
            let accumulator = if bias.is_some() { AccumulatorOperand::Present } else { AccumulatorOperand::Absent };
            type Tiles = <RegisterTileConvolution as Routine>::MatmulRoutine;
            let settings = <Tiles as BatchMatmulRoutine<RuntimeArgs>>::device_settings(&client, vector_sizes);
            let inferred = BlueprintStrategy::Inferred(SimpleUnitSelectionArgs::default());
            let expanded = <Tiles as BatchMatmulRoutine<RuntimeArgs>>::expand_blueprint(&small.as_matmul_problem(accumulator), &settings, &inferred).ok()?;
            BlueprintStrategy::Forced(expanded.blueprint)
        }
    };
    let binding = |tensor: CubeTensor| {
        let ty = dtype_to_storage_type(tensor.dtype);
        InputBinding::new(tensor.binding(), ty.into())
    };
    let launched = launch_kernel::<RegisterTileConvolution>(
        &client,
        binding(input),
        binding(weight),
        bias.map(binding),
        out.clone().binding(),
        problem,
        &strategy,
        dtypes,
    );
    launched.ok()?;
    Some(Tensor::from_primitive::<Wgpu>(permute_nhwc_to_nchw(out)))
}

/// `module` with every 4-D weight on wgpu stored channels-last (`[Cout, kh, kw, Cin]` in memory,
/// still `[Cout, Cin, kh, kw]` to burn): the layout the routine reads, which it would otherwise
/// copy each weight into on every call. Weights on other backends stay as they are.
pub fn channels_last_weights<M: Module>(module: M) -> M {
    super::weights_stored_in_order(module, [0, 2, 3, 1])
}

/// A convolution on wgpu as a kernel of ours runs it: its weights without the taps that only
/// read padding on a `height` x `width` map ([`live_taps`]), its bias, its kernel size and padding
/// after that.
pub(crate) struct LiveConvolution {
    pub(crate) weight: CubeTensor,
    pub(crate) bias: Option<CubeTensor>,
    pub(crate) kernel: [usize; 2],
    pub(crate) padding: [usize; 2],
}

impl LiveConvolution {
    /// The output's height and width on a `height` x `width` input, `conv` giving the strides and
    /// dilations.
    pub(crate) fn output_size(&self, conv: &Conv2d, height: usize, width: usize) -> [usize; 2] {
        let axis = |size: usize, i: usize| (size + 2 * self.padding[i] - conv.dilation[i] * (self.kernel[i] - 1) - 1) / conv.stride[i] + 1;
        [axis(height, 0), axis(width, 1)]
    }
}

/// `conv`'s [`LiveConvolution`], or `None` off wgpu or where an axis is padded unevenly (the
/// kernels pad both sides of an axis alike, as the network's convolutions all do).
pub(crate) fn live_convolution(conv: &Conv2d, height: usize, width: usize) -> Option<LiveConvolution> {
    let padding = match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        burn::nn::PaddingConfig2d::Valid => [0, 0],
        _ => return None,
    };
    let [kh, kw] = conv.kernel_size;
    let rows = live_taps(kh, conv.stride[0], conv.dilation[0], padding[0], height);
    let columns = live_taps(kw, conv.stride[1], conv.dilation[1], padding[1], width);
    let weight = if rows.count == kh && columns.count == kw {
        conv.weight.val()
    } else {
        let [out_channels, in_channels, _, _] = conv.weight.dims();
        conv.weight.val().slice([0..out_channels, 0..in_channels, rows.range(), columns.range()])
    };
    let bias = match &conv.bias {
        Some(bias) => Some(bias.val().try_into_primitive::<Wgpu>().ok()?),
        None => None,
    };
    Some(LiveConvolution {
        weight: weight.try_into_primitive::<Wgpu>().ok()?,
        bias,
        kernel: [rows.count, columns.count],
        padding: [rows.padding, columns.padding],
    })
}

/// The taps of one kernel axis that can read the map: with "same" padding (`d·(k-1)/2`) and stride 1,
/// tap `i` reads `(i - k/2)·d` pixels away, wholly off a map of `size` pixels once that is
/// `size` or more (the ASPP's large rates on small maps): those taps are left out with their
/// weights, and the padding shrinks with them. Other geometries keep every tap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LiveTaps {
    first: usize,
    count: usize,
    padding: usize,
}

impl LiveTaps {
    fn range(self) -> std::ops::Range<usize> {
        self.first..self.first + self.count
    }
}

fn live_taps(kernel: usize, stride: usize, dilation: usize, padding: usize, size: usize) -> LiveTaps {
    let centre = kernel / 2;
    let every = LiveTaps { first: 0, count: kernel, padding };
    if stride != 1 || kernel % 2 == 0 || dilation == 0 || padding != dilation * centre || size == 0 {
        return every;
    }
    let reach = centre.min((size - 1) / dilation);
    LiveTaps { first: centre - reach, count: 2 * reach + 1, padding: reach * dilation }
}

fn dims4(tensor: &CubeTensor) -> [usize; 4] {
    let shape = tensor.meta.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

#[cfg(test)]
mod tests {
    use super::{LiveTaps, live_taps};

    #[test]
    fn taps_that_read_only_padding_are_left_out_with_their_padding() {
        let every = |padding| LiveTaps { first: 0, count: 3, padding };
        // The ASPP on a 32x16 map (a 256x128 image): rate 12 keeps all taps on both axes ...
        assert_eq!(live_taps(3, 1, 12, 12, 16), every(12));
        // ... rate 24 only the centre row, rate 36 only the centre.
        assert_eq!(live_taps(3, 1, 24, 24, 16), LiveTaps { first: 1, count: 1, padding: 0 });
        assert_eq!(live_taps(3, 1, 24, 24, 32), every(24));
        assert_eq!(live_taps(3, 1, 36, 36, 32), LiveTaps { first: 1, count: 1, padding: 0 });
        // A tap exactly one map away reads nothing; one pixel nearer, one pixel.
        assert_eq!(live_taps(3, 1, 4, 4, 4), LiveTaps { first: 1, count: 1, padding: 0 });
        assert_eq!(live_taps(3, 1, 4, 4, 5), every(4));
        // A 5-tap axis keeps the inner three.
        assert_eq!(live_taps(5, 1, 3, 6, 5), LiveTaps { first: 1, count: 3, padding: 3 });
        // Strided, not "same", or 1x1: every tap.
        assert_eq!(live_taps(3, 2, 12, 12, 8), every(12));
        assert_eq!(live_taps(3, 1, 12, 0, 8), every(0));
        assert_eq!(live_taps(1, 1, 1, 0, 8), LiveTaps { first: 0, count: 1, padding: 0 });
    }
}
