//! Convolutions as implicit matrix products on the GPU without tensor-core instructions: burn's
//! kernel crate (cubek-convolution) reads the input through an im2col view (no im2col matrix in
//! memory) into workgroup tiles, but offers its implicit products only with cooperative-matrix
//! tiles, which WGSL lacks. Here the same convolution routine runs on cubek-matmul's register
//! tiles (one invocation, one block of outputs in registers), whose tile and stage sizes the
//! matrix-product crate infers for each shape.

use burn::backend::Wgpu;
use burn::backend::wgpu::CubeTensor;
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
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::multi_level::args::TensorArgs;
use cubek::matmul::multi_level::components::global::read::sync_full_cyclic::SyncFullCyclicLoading;
use cubek::matmul::multi_level::routines::batch::simple_unit::{SimpleUnitAlgorithm, SimpleUnitSelectionArgs};
use cubek::matmul::multi_level::tile::{ColMajorTilingOrder, RowMajorTilingOrder};
use cubek::matmul::routine::BlueprintStrategy;
use cubek::std::{InputBinding, MatrixLayout};

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
/// (another backend than wgpu, grouped convolutions, or a shape the routine refuses).
pub fn convolve_implicit(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    if conv.groups != 1 {
        return None;
    }
    let input: CubeTensor = x.clone().try_into_primitive::<Wgpu>().ok()?;
    let weight: CubeTensor = conv.weight.val().try_into_primitive::<Wgpu>().ok()?;
    let bias: Option<CubeTensor> = match &conv.bias {
        Some(bias) => Some(bias.val().try_into_primitive::<Wgpu>().ok()?),
        None => None,
    };
    let (input, weight) = (into_contiguous(permute_nchw_to_nhwc(input)), into_contiguous(permute_nchw_to_nhwc(weight)));
    let [batch, height, width, channels] = dims4(&input);
    let [out_channels, kh, kw, _] = dims4(&weight);
    // The routine pads both sides of an axis alike (the network's convolutions all do).
    let padding = match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        burn::nn::PaddingConfig2d::Valid => [0, 0],
        _ => return None,
    };
    let out_size = |size: usize, k: usize, axis: usize| {
        (size + 2 * padding[axis] - conv.dilation[axis] * (k - 1) - 1) / conv.stride[axis] + 1
    };
    let (out_h, out_w) = (out_size(height, kh, 0), out_size(width, kw, 1));
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
        &BlueprintStrategy::Inferred(SimpleUnitSelectionArgs::default()),
        dtypes,
    );
    launched.ok()?;
    Some(Tensor::from_primitive::<Wgpu>(permute_nhwc_to_nchw(out)))
}

fn dims4(tensor: &CubeTensor) -> [usize; 4] {
    let shape = tensor.meta.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}
