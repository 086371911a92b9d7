//! Two convolution kernels of ours for WGSL. In both, each invocation computes a tile of outputs
//! (`PIXELS` output pixels x `VECTORS` vectors of output channels) in registers, reading the input
//! channels-last through an im2col view (no matrix in memory) and the weights laid out taps-major
//! with the output channels innermost, and adds a residual and applies ReLU as it writes.
//! burn's direct kernel reads an input vector and four weight vectors for every 16
//! multiply-adds; a tile of 8 pixels x 8 channels reads 8 + 8 vectors for 256 (16 multiply-adds
//! per load against 3.2). The accumulators are separate variables, not an array: WebGPU's software
//! adapters keep a dynamically indexed array in memory (cubek-matmul's register tiles leave their
//! loops rolled, which SwiftShader runs that way).
//!
//! [`TileKernel::Registers`] reads straight from global memory; [`TileKernel::Staged`] has a
//! workgroup of 64 invocations stage tiles of the input and weights in workgroup memory first
//! (a GPU's implicit GEMM), so that each value read from global memory serves 8 invocations.

use burn::backend::Wgpu;
use burn::backend::wgpu::CubeTensor;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn_backend::cubecl::dtype_to_storage_type;
use burn_cubecl::cubecl::{CubeDim, calculate_cube_count_elemwise};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::ops::{permute, permute_nchw_to_nhwc, permute_nhwc_to_nchw};

use super::implicit_gemm::{LiveConvolution, live_convolution};

/// Neighbouring output pixels of one row per invocation: 8 against 4 took the released width on
/// lavapipe from 13.6-15.1 s to 10.6-12.8 s a frame and left SwiftShader as it was (0.52 of
/// direct's time against 0.51).
const PIXELS: usize = 8;
/// Vectors of 4 output channels per invocation.
const VECTORS: usize = 2;
/// Invocations of the staged kernel's workgroup along its pixels and along its channels: 64,
/// each with the same `PIXELS` x `VECTORS` tile, so a workgroup computes 64 pixels x 64 channels.
const STAGED_LANES: usize = 8;
/// Input vectors staged at a time: 4 (16 channels), 8 KiB of workgroup memory for both tiles.
/// 8 (16 KiB, WebGPU's guaranteed limit) changed nothing on lavapipe.
const STAGED_DEPTH: usize = 4;
/// The kernels read input channels and write output channels 4 at a time where they can.
const WIDTH: usize = 4;

mod kernel {
    use burn_cubecl::cubecl;
    use cubecl::prelude::*;

    /// A convolution's shape as both kernels read it, channel counts in the vectors they load
    /// (`I` values of the input, `O` of the weights and output).
    #[derive(CubeLaunch, CubeType)]
    pub(super) struct Geometry {
        in_height: u32,
        in_width: u32,
        in_vectors: u32,
        out_height: u32,
        out_width: u32,
        out_vectors: u32,
        batch: u32,
        kernel_height: u32,
        kernel_width: u32,
        stride_y: u32,
        stride_x: u32,
        dilation_y: u32,
        dilation_x: u32,
        padding_y: i32,
        padding_x: i32,
    }

    /// Input `[n, h, w, cin]`, weights `[kh, kw, cin, cout]`, output `[n, oh, ow, cout]`, all
    /// contiguous (vectors along the channels); bias `[cout]` where `has_bias`. One invocation,
    /// `pixels` neighbouring outputs of a row x `vectors` output vectors.
    #[cube(launch_unchecked)]
    pub(super) fn register_tile_conv2d<F: Float, I: Size, O: Size>(
        input: &Tensor<Vector<F, I>>,
        weight: &Tensor<Vector<F, O>>,
        bias: &Tensor<Vector<F, O>>,
        residual: &Tensor<Vector<F, O>>,
        output: &mut Tensor<Vector<F, O>>,
        geometry: Geometry,
        #[comptime] pixels: usize,
        #[comptime] vectors: usize,
        #[comptime] has_bias: bool,
        #[comptime] has_residual: bool,
        #[comptime] relu: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let in_width = input.vector_size();
        let tile = ABSOLUTE_POS as u32;
        let row_tiles = geometry.out_width.div_ceil(comptime!(pixels as u32));
        let channel_tiles = geometry.out_vectors.div_ceil(comptime!(vectors as u32));
        // Pixels fastest: a workgroup's invocations read the same weights at the same moment (one
        // read serves them all), where output channels fastest re-streamed a wide layer's
        // weights for every few pixels.
        let row_tile = tile % row_tiles;
        let rest = tile / row_tiles;
        let out_y = rest % geometry.out_height;
        let rest = rest / geometry.out_height;
        let batch = rest % geometry.batch;
        let channel_tile = rest / geometry.batch;
        // Channel tiles are slowest: invocations past the last tile of the output stop here.
        if channel_tile >= channel_tiles {
            terminate!();
        }
        let first_x = row_tile * comptime!(pixels as u32);
        let out_vectors = geometry.out_vectors;
        let first_vector = channel_tile * comptime!(vectors as u32);
        // The last tile's vectors past the output channels read the first weights and are not
        // written.
        let mut real_vectors = Sequence::<bool>::new();
        #[unroll]
        for v in 0..vectors {
            real_vectors.push(first_vector + comptime!(v as u32) < out_vectors);
        }

        let mut sums = Sequence::<Vector<F, O>>::new();
        #[unroll]
        for index in 0..pixels * vectors {
            let v = comptime!(index % vectors);
            // A mutable variable each: the loops below add into it in place.
            #[allow(unused_mut)]
            let mut start = if has_bias && *real_vectors.index(v) { bias[(first_vector + comptime!(v as u32)) as usize] } else { Vector::new(F::new(0.0)) };
            sums.push(start);
        }

        let row_stride = geometry.in_width * geometry.in_vectors;
        let batch_offset = batch * geometry.in_height * row_stride;
        let in_channels = geometry.in_vectors * comptime!(in_width as u32);
        for ky in 0..geometry.kernel_height {
            let in_y = (out_y * geometry.stride_y + ky * geometry.dilation_y) as i32 - geometry.padding_y;
            if in_y >= 0 && in_y < geometry.in_height as i32 {
                let row_offset = batch_offset + in_y as u32 * row_stride;
                for kx in 0..geometry.kernel_width {
                    // Each pixel's input offset, or none where the tap reads padding.
                    let mut offsets = Sequence::<u32>::new();
                    let mut inside = Sequence::<bool>::new();
                    #[unroll]
                    for p in 0..pixels {
                        let out_x = first_x + comptime!(p as u32);
                        let in_x = (out_x * geometry.stride_x + kx * geometry.dilation_x) as i32 - geometry.padding_x;
                        let ok = out_x < geometry.out_width && in_x >= 0 && in_x < geometry.in_width as i32;
                        inside.push(ok);
                        offsets.push(if ok { row_offset + in_x as u32 * geometry.in_vectors } else { 0u32 });
                    }
                    let tap_offset = (ky * geometry.kernel_width + kx) * in_channels * out_vectors;
                    for c in 0..geometry.in_vectors {
                        let mut values = Sequence::<Vector<F, I>>::new();
                        #[unroll]
                        for p in 0..pixels {
                            let value = input[(*offsets.index(p) + c) as usize];
                            values.push(if *inside.index(p) { value } else { Vector::new(F::new(0.0)) });
                        }
                        let channel_offset = tap_offset + c * comptime!(in_width as u32) * out_vectors + first_vector;
                        #[unroll]
                        for j in 0..in_width {
                            #[unroll]
                            for v in 0..vectors {
                                let at = if *real_vectors.index(v) { channel_offset + comptime!(j as u32) * out_vectors + comptime!(v as u32) } else { 0u32 };
                                add_products(&mut sums, &values, weight[at as usize], j, v, pixels, vectors);
                            }
                        }
                    }
                }
            }
        }

        let out_row = (batch * geometry.out_height + out_y) * geometry.out_width;
        #[unroll]
        for p in 0..pixels {
            let out_x = first_x + comptime!(p as u32);
            #[unroll]
            for v in 0..vectors {
                if out_x < geometry.out_width && *real_vectors.index(v) {
                    let at = ((out_row + out_x) * out_vectors + first_vector + comptime!(v as u32)) as usize;
                    write_output(output, residual, at, *sums.index(comptime!(p * vectors + v)), has_residual, relu);
                }
            }
        }
    }

    /// The same convolution with a workgroup of `lanes x lanes` invocations computing a tile of
    /// `lanes·pixels` output pixels (the output's pixels flattened, rows and images alike) by
    /// `lanes·vectors` output vectors, staging `depth` input vectors of the input and weights
    /// under one tap at a time in workgroup memory: each value read from global memory serves
    /// `lanes` invocations (with the defaults, 8 global and 64 workgroup loads of a vector per
    /// invocation for 1024 multiply-adds, against 64 global ones unstaged). Invocation `unit`
    /// computes pixels `unit / lanes + lanes·p` and vectors `unit % lanes + lanes·v` of the tile:
    /// neighbouring invocations read neighbouring vectors of workgroup memory (no bank conflicts
    /// on GPUs) and write neighbouring outputs.
    #[cube(launch_unchecked)]
    pub(super) fn staged_tile_conv2d<F: Float, I: Size, O: Size>(
        input: &Tensor<Vector<F, I>>,
        weight: &Tensor<Vector<F, O>>,
        bias: &Tensor<Vector<F, O>>,
        residual: &Tensor<Vector<F, O>>,
        output: &mut Tensor<Vector<F, O>>,
        geometry: Geometry,
        #[comptime] lanes: usize,
        #[comptime] pixels: usize,
        #[comptime] vectors: usize,
        #[comptime] depth: usize,
        #[comptime] has_bias: bool,
        #[comptime] has_residual: bool,
        #[comptime] relu: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let in_width = input.vector_size();
        let units = comptime!(lanes * lanes);
        let tile_pixels = comptime!(lanes * pixels);
        let tile_vectors = comptime!(lanes * vectors);
        let depth_rows = comptime!(depth * in_width);
        let unit = UNIT_POS as u32;
        let out_pixels = geometry.batch * geometry.out_height * geometry.out_width;
        let pixel_tiles = out_pixels.div_ceil(comptime!(tile_pixels as u32));
        // Workgroups past the last tile (the count is rounded up) compute nothing they write.
        let workgroup = CUBE_POS as u32;
        let first_pixel = (workgroup % pixel_tiles) * comptime!(tile_pixels as u32);
        let first_vector = (workgroup / pixel_tiles) * comptime!(tile_vectors as u32);
        let in_channels = geometry.in_vectors * comptime!(in_width as u32);
        let lane_pixel = unit / comptime!(lanes as u32);
        let lane_vector = unit % comptime!(lanes as u32);

        // The pixels whose input this invocation stages (`depth` invocations share a pixel, one
        // input vector each): where tap (0, 0) reads them.
        let staged_vector = unit % comptime!(depth as u32);
        let staged_pixel = unit / comptime!(depth as u32);
        let mut starts_y = Sequence::<i32>::new();
        let mut starts_x = Sequence::<i32>::new();
        let mut image_offsets = Sequence::<u32>::new();
        let mut real_pixels = Sequence::<bool>::new();
        #[unroll]
        for r in 0..tile_pixels * depth / units {
            let pixel = first_pixel + staged_pixel + comptime!((r * units / depth) as u32);
            let x = pixel % geometry.out_width;
            let y = (pixel / geometry.out_width) % geometry.out_height;
            let image = pixel / (geometry.out_width * geometry.out_height);
            starts_y.push((y * geometry.stride_y) as i32 - geometry.padding_y);
            starts_x.push((x * geometry.stride_x) as i32 - geometry.padding_x);
            image_offsets.push(image * geometry.in_height * geometry.in_width * geometry.in_vectors);
            real_pixels.push(pixel < out_pixels);
        }

        let mut sums = Sequence::<Vector<F, O>>::new();
        #[unroll]
        for index in 0..pixels * vectors {
            let out_vector = first_vector + lane_vector + comptime!(((index % vectors) * lanes) as u32);
            // A mutable variable each: the loops below add into it in place.
            #[allow(unused_mut)]
            let mut start = if has_bias && out_vector < geometry.out_vectors { bias[out_vector as usize] } else { Vector::new(F::new(0.0)) };
            sums.push(start);
        }

        let mut staged_input = Shared::<[Vector<F, I>]>::new_slice(comptime!(depth * tile_pixels));
        let mut staged_weight = Shared::<[Vector<F, O>]>::new_slice(comptime!(depth_rows * tile_vectors));
        let stages = geometry.in_vectors.div_ceil(comptime!(depth as u32));
        for ky in 0..geometry.kernel_height {
            for kx in 0..geometry.kernel_width {
                let tap = ky * geometry.kernel_width + kx;
                for stage in 0..stages {
                    // Stage the input (zeros over padding, past the last pixel or channel) ...
                    let in_vector = stage * comptime!(depth as u32) + staged_vector;
                    #[unroll]
                    for r in 0..tile_pixels * depth / units {
                        let y = *starts_y.index(r) + (ky * geometry.dilation_y) as i32;
                        let x = *starts_x.index(r) + (kx * geometry.dilation_x) as i32;
                        let inside = *real_pixels.index(r) && y >= 0 && y < geometry.in_height as i32 && x >= 0 && x < geometry.in_width as i32 && in_vector < geometry.in_vectors;
                        let at = if inside { *image_offsets.index(r) + (y as u32 * geometry.in_width + x as u32) * geometry.in_vectors + in_vector } else { 0u32 };
                        let value = input[at as usize];
                        let pixel = staged_pixel + comptime!((r * units / depth) as u32);
                        staged_input[(staged_vector * comptime!(tile_pixels as u32) + pixel) as usize] = if inside { value } else { Vector::new(F::new(0.0)) };
                    }
                    // ... and the weights (zeros past the last channels).
                    #[unroll]
                    for r in 0..depth_rows * tile_vectors / units {
                        let element = unit + comptime!((r * units) as u32);
                        let row = element / comptime!(tile_vectors as u32);
                        let in_channel = stage * comptime!(depth_rows as u32) + row;
                        let out_vector = first_vector + element % comptime!(tile_vectors as u32);
                        let inside = in_channel < in_channels && out_vector < geometry.out_vectors;
                        let at = if inside { (tap * in_channels + in_channel) * geometry.out_vectors + out_vector } else { 0u32 };
                        let value = weight[at as usize];
                        staged_weight[element as usize] = if inside { value } else { Vector::new(F::new(0.0)) };
                    }
                    sync_cube();
                    #[unroll]
                    for d in 0..depth {
                        let mut values = Sequence::<Vector<F, I>>::new();
                        #[unroll]
                        for p in 0..pixels {
                            values.push(staged_input[(comptime!((d * tile_pixels + p * lanes) as u32) + lane_pixel) as usize]);
                        }
                        #[unroll]
                        for j in 0..in_width {
                            #[unroll]
                            for v in 0..vectors {
                                let w = staged_weight[(comptime!(((d * in_width + j) * tile_vectors + v * lanes) as u32) + lane_vector) as usize];
                                add_products(&mut sums, &values, w, j, v, pixels, vectors);
                            }
                        }
                    }
                    // Every invocation has read this stage before the next overwrites it.
                    sync_cube();
                }
            }
        }

        #[unroll]
        for p in 0..pixels {
            let pixel = first_pixel + lane_pixel + comptime!((p * lanes) as u32);
            #[unroll]
            for v in 0..vectors {
                let out_vector = first_vector + lane_vector + comptime!((v * lanes) as u32);
                if pixel < out_pixels && out_vector < geometry.out_vectors {
                    let at = (pixel * geometry.out_vectors + out_vector) as usize;
                    write_output(output, residual, at, *sums.index(comptime!(p * vectors + v)), has_residual, relu);
                }
            }
        }
    }

    /// `sums[p·vectors + v] += values[p][j] · w` for each of the tile's `pixels`.
    #[cube]
    fn add_products<F: Float, I: Size, O: Size>(
        sums: &mut Sequence<Vector<F, O>>,
        values: &Sequence<Vector<F, I>>,
        w: Vector<F, O>,
        #[comptime] j: usize,
        #[comptime] v: usize,
        #[comptime] pixels: usize,
        #[comptime] vectors: usize,
    ) {
        #[unroll]
        for p in 0..pixels {
            let x = Vector::new(values.index(p).extract(j));
            let sum = sums.index_mut(comptime!(p * vectors + v));
            *sum += x * w;
        }
    }

    /// Writes an output vector: `sum`, plus the residual where there is one, through ReLU where
    /// asked.
    #[cube]
    fn write_output<F: Float, O: Size>(
        output: &mut Tensor<Vector<F, O>>,
        residual: &Tensor<Vector<F, O>>,
        at: usize,
        sum: Vector<F, O>,
        #[comptime] has_residual: bool,
        #[comptime] relu: bool,
    ) {
        let mut value = sum;
        if has_residual {
            value += residual[at];
        }
        if relu {
            value = max(value, Vector::new(F::new(0.0)));
        }
        output[at] = value;
    }
}

use kernel::{GeometryLaunch, register_tile_conv2d, staged_tile_conv2d};

/// Which of our two tile kernels runs a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKernel {
    /// Each invocation on its own (`--gpu-convolution tiles`): 16 multiply-adds per value read
    /// from global memory, the caches left to share what neighbours read.
    Registers,
    /// Workgroups staging input and weight tiles in workgroup memory (`--gpu-convolution
    /// staged`): each value read from global memory serves 8 invocations, for 128
    /// multiply-adds, the design of GPU convolutions (cuDNN's implicit GEMM).
    Staged,
}

/// `conv(x)` on one of our tile kernels, plus `residual` where given, then ReLU where `relu`, in
/// the same kernel as it writes each output (no pass of their own); `None` where it does not apply
/// (another backend than wgpu, grouped convolutions, uneven padding, a residual of another
/// shape). Weights as loaded are rearranged on each call; [`taps_major_weights`] does it once.
pub fn convolve_in_tiles(kernel: TileKernel, conv: &Conv2d, x: &Tensor<4>, residual: Option<&Tensor<4>>, relu: bool) -> Option<Tensor<4>> {
    let [out_channels, in_channels, _, _] = conv.weight.dims();
    if conv.groups != 1 {
        return None;
    }
    // Channels 4 at a time where they come in fours, one at a time otherwise (the image's 3, the
    // 19 classes).
    let vector_width = |channels: usize| if channels % WIDTH == 0 { WIDTH } else { 1 };
    let (in_width, out_width) = (vector_width(in_channels), vector_width(out_channels));
    let [batch, _, height, width] = x.dims();
    // Taps that only read padding are left out with their weights, as on the implicit path.
    let live = live_convolution(conv, height, width)?;
    let [out_h, out_w] = live.output_size(conv, height, width);
    let LiveConvolution { weight, bias, kernel: [kh, kw], padding } = live;
    let residual: Option<CubeTensor> = match residual {
        Some(residual) if residual.dims() == [batch, out_channels, out_h, out_w] => {
            Some(into_contiguous(permute_nchw_to_nhwc(residual.clone().try_into_primitive::<Wgpu>().ok()?)))
        }
        Some(_) => return None,
        None => None,
    };
    let input: CubeTensor = x.clone().try_into_primitive::<Wgpu>().ok()?;
    let input = into_contiguous(permute_nchw_to_nhwc(input));
    // [Cout, Cin, kh, kw] -> [kh, kw, Cin, Cout]; free where the weights are stored that way.
    let weight = into_contiguous(permute(weight, &[2, 3, 1, 0]));
    let dtype = input.dtype;
    let out = empty_device_dtype(input.client.clone(), input.device.clone(), [batch, out_h, out_w, out_channels].into(), dtype);
    let client = input.client.clone();
    let out_vectors = out_channels / out_width;
    let geometry = GeometryLaunch::new(
        height as u32,
        width as u32,
        (in_channels / in_width) as u32,
        out_h as u32,
        out_w as u32,
        out_vectors as u32,
        batch as u32,
        kh as u32,
        kw as u32,
        conv.stride[0] as u32,
        conv.stride[1] as u32,
        conv.dilation[0] as u32,
        conv.dilation[1] as u32,
        padding[0] as i32,
        padding[1] as i32,
    );
    let (has_bias, has_residual) = (bias.is_some(), residual.is_some());
    // The kernels never read a binding they were not given: the weights stand in.
    let bias = bias.unwrap_or_else(|| weight.clone());
    let residual = residual.unwrap_or_else(|| weight.clone());
    let storage = dtype_to_storage_type(dtype);
    let (input, weight, bias, residual, output) = (
        input.binding().into_tensor_arg(),
        weight.binding().into_tensor_arg(),
        bias.binding().into_tensor_arg(),
        residual.binding().into_tensor_arg(),
        out.clone().binding().into_tensor_arg(),
    );
    if kernel == TileKernel::Staged {
        let tiles = (batch * out_h * out_w).div_ceil(STAGED_LANES * PIXELS) * out_vectors.div_ceil(STAGED_LANES * VECTORS);
        let cube_dim = CubeDim::new_1d((STAGED_LANES * STAGED_LANES) as u32);
        let cube_count = calculate_cube_count_elemwise(&client, tiles * STAGED_LANES * STAGED_LANES, cube_dim);
        // SAFETY: as below; a workgroup's loads past the input, the weights or the last tile read
        // offset 0 and are replaced by zeros, and its writes past them are skipped.
        unsafe {
            staged_tile_conv2d::launch_unchecked(
                &client, cube_count, cube_dim, in_width, out_width, input, weight, bias, residual, output, geometry, STAGED_LANES, PIXELS, VECTORS,
                STAGED_DEPTH, has_bias, has_residual, relu, storage,
            )
        };
    } else {
        let tiles = batch * out_h * out_w.div_ceil(PIXELS) * out_vectors.div_ceil(VECTORS);
        let cube_dim = CubeDim::new(&client, tiles);
        let cube_count = calculate_cube_count_elemwise(&client, tiles, cube_dim);
        // SAFETY: every index the kernel forms is inside its tensor: invocations past the last tile
        // stop first, pixels past the row's end and taps over padding read offset 0 and are masked, and
        // the shapes above are the tensors' own.
        unsafe {
            register_tile_conv2d::launch_unchecked(
                &client, cube_count, cube_dim, in_width, out_width, input, weight, bias, residual, output, geometry, PIXELS, VECTORS, has_bias,
                has_residual, relu, storage,
            )
        };
    }
    Some(Tensor::from_primitive::<Wgpu>(permute_nhwc_to_nchw(out)))
}

/// `module` with every 4-D weight on wgpu stored taps-major (`[kh, kw, Cin, Cout]` in memory,
/// still `[Cout, Cin, kh, kw]` to burn): the layout [`convolve_in_tiles`] reads.
pub fn taps_major_weights<M: Module>(module: M) -> M {
    super::weights_stored_in_order(module, [2, 3, 1, 0])
}
