//! A convolution kernel of ours for WGSL: each invocation computes a tile of outputs (a few
//! neighbouring pixels of a row x a few vectors of output channels) in registers, reading the
//! input channels-last through an im2col view (no matrix in memory) and the weights laid out
//! taps-major with the output channels innermost. burn's direct kernel reads an input vector and
//! four weight vectors for every 16 multiply-adds; a tile of `PIXELS` x `4 * VECTORS` outputs reads
//! `PIXELS + 4 * VECTORS` vectors for `16 * PIXELS * VECTORS` (8 + 8 = 16 for 256 with the defaults:
//! 16 multiply-adds per load against 3.2). The accumulators are separate variables, not an
//! array: WebGPU's software adapters keep a dynamically indexed array in memory (cubek-matmul's
//! register tiles leave their loops rolled, which SwiftShader runs that way).

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
/// The kernel reads input channels and writes output channels 4 at a time.
const WIDTH: usize = 4;

mod kernel {
    use burn_cubecl::cubecl;
    use cubecl::prelude::*;

    use super::WIDTH;

    #[derive(CubeLaunch, CubeType)]
    pub(super) struct Geometry {
        in_height: u32,
        in_width: u32,
        /// Input channels / 4.
        in_vectors: u32,
        out_height: u32,
        out_width: u32,
        /// Output channels / (4 x VECTORS): the tiles across the output channels.
        channel_tiles: u32,
        /// Output tiles along a row.
        row_tiles: u32,
        kernel_height: u32,
        kernel_width: u32,
        stride_y: u32,
        stride_x: u32,
        dilation_y: u32,
        dilation_x: u32,
        padding_y: i32,
        padding_x: i32,
        batch: u32,
    }

    /// Input `[n, h, w, c]`, weights `[kh, kw, c, cout]`, output `[n, oh, ow, cout]`, all contiguous
    /// (vectors of 4 along the channels); bias `[cout]` where `has_bias`.
    #[cube(launch_unchecked)]
    pub(super) fn register_tile_conv2d<F: Float, N: Size>(
        input: &Tensor<Vector<F, N>>,
        weight: &Tensor<Vector<F, N>>,
        bias: &Tensor<Vector<F, N>>,
        residual: &Tensor<Vector<F, N>>,
        output: &mut Tensor<Vector<F, N>>,
        geometry: Geometry,
        #[comptime] pixels: usize,
        #[comptime] vectors: usize,
        #[comptime] has_bias: bool,
        #[comptime] has_residual: bool,
        #[comptime] relu: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let tile = ABSOLUTE_POS as u32;
        // Pixels fastest: a workgroup's invocations read the same weights at the same moment (one
        // read serves them all), where output channels fastest re-streamed a wide layer's
        // weights for every few pixels.
        let row_tile = tile % geometry.row_tiles;
        let rest = tile / geometry.row_tiles;
        let out_y = rest % geometry.out_height;
        let rest = rest / geometry.out_height;
        let batch = rest % geometry.batch;
        let channel_tile = rest / geometry.batch;
        // Channel tiles are slowest: invocations past the last tile of the output stop here.
        if channel_tile >= geometry.channel_tiles {
            terminate!();
        }
        let first_x = row_tile * comptime!(pixels as u32);
        let out_vectors = geometry.channel_tiles * comptime!(vectors as u32);
        let first_vector = channel_tile * comptime!(vectors as u32);

        let mut sums = Sequence::<Vector<F, N>>::new();
        #[unroll]
        for index in 0..pixels * vectors {
            // A mutable variable each: the loops below add into it in place.
            #[allow(unused_mut)]
            let mut start = if has_bias { bias[(first_vector + comptime!((index % vectors) as u32)) as usize] } else { Vector::new(F::new(0.0)) };
            sums.push(start);
        }

        let row_stride = geometry.in_width * geometry.in_vectors;
        let batch_offset = batch * geometry.in_height * row_stride;
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
                    let tap_offset = (ky * geometry.kernel_width + kx) * geometry.in_vectors * comptime!(WIDTH as u32) * out_vectors;
                    for c in 0..geometry.in_vectors {
                        let mut values = Sequence::<Vector<F, N>>::new();
                        #[unroll]
                        for p in 0..pixels {
                            let value = input[(*offsets.index(p) + c) as usize];
                            values.push(if *inside.index(p) { value } else { Vector::new(F::new(0.0)) });
                        }
                        let channel_offset = tap_offset + c * comptime!(WIDTH as u32) * out_vectors + first_vector;
                        #[unroll]
                        for j in 0..WIDTH {
                            #[unroll]
                            for v in 0..vectors {
                                let w = weight[(channel_offset + comptime!(j as u32) * out_vectors + comptime!(v as u32)) as usize];
                                #[unroll]
                                for p in 0..pixels {
                                    let x = Vector::new(values.index(p).extract(j));
                                    let sum = sums.index_mut(comptime!(p * vectors + v));
                                    *sum += x * w;
                                }
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
            if out_x < geometry.out_width {
                #[unroll]
                for v in 0..vectors {
                    let at = ((out_row + out_x) * out_vectors + first_vector + comptime!(v as u32)) as usize;
                    let mut value = *sums.index(comptime!(p * vectors + v));
                    if has_residual {
                        value += residual[at];
                    }
                    if relu {
                        value = max(value, Vector::new(F::new(0.0)));
                    }
                    output[at] = value;
                }
            }
        }
    }
}

use kernel::{GeometryLaunch, register_tile_conv2d};

/// `conv(x)` on the register-tile kernel, or `None` where it does not apply (another backend than
/// wgpu, grouped convolutions, input or output channels not a multiple of 4 or of the tile,
/// uneven padding). Weights as loaded are rearranged on each call; [`taps_major_weights`] does
/// it once.
pub fn convolve_register_tiles(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    convolve_register_tiles_then(conv, x, None, false)
}

/// [`convolve_register_tiles`], plus `residual` where given, then ReLU where `relu`, in the same
/// kernel as it writes each output (no pass of their own).
pub fn convolve_register_tiles_then(conv: &Conv2d, x: &Tensor<4>, residual: Option<&Tensor<4>>, relu: bool) -> Option<Tensor<4>> {
    let [out_channels, in_channels, _, _] = conv.weight.dims();
    if conv.groups != 1 || in_channels % WIDTH != 0 || out_channels % (WIDTH * VECTORS) != 0 {
        return None;
    }
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
    let row_tiles = out_w.div_ceil(PIXELS);
    let channel_tiles = out_channels / (WIDTH * VECTORS);
    let tiles = batch * out_h * row_tiles * channel_tiles;
    let geometry = GeometryLaunch::new(
        height as u32,
        width as u32,
        (in_channels / WIDTH) as u32,
        out_h as u32,
        out_w as u32,
        channel_tiles as u32,
        row_tiles as u32,
        kh as u32,
        kw as u32,
        conv.stride[0] as u32,
        conv.stride[1] as u32,
        conv.dilation[0] as u32,
        conv.dilation[1] as u32,
        padding[0] as i32,
        padding[1] as i32,
        batch as u32,
    );
    let cube_dim = CubeDim::new(&client, tiles);
    let cube_count = calculate_cube_count_elemwise(&client, tiles, cube_dim);
    let (has_bias, has_residual) = (bias.is_some(), residual.is_some());
    // The kernel never reads a binding it was not given: the weights stand in.
    let bias = bias.unwrap_or_else(|| weight.clone());
    let residual = residual.unwrap_or_else(|| weight.clone());
    // SAFETY: every index the kernel forms is inside its tensor: invocations past the last tile
    // stop first, pixels past the row's end and taps over padding read offset 0 and are masked, and
    // the shapes above are the tensors' own.
    unsafe {
        register_tile_conv2d::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            WIDTH,
            input.binding().into_tensor_arg(),
            weight.binding().into_tensor_arg(),
            bias.binding().into_tensor_arg(),
            residual.binding().into_tensor_arg(),
            out.clone().binding().into_tensor_arg(),
            geometry,
            PIXELS,
            VECTORS,
            has_bias,
            has_residual,
            relu,
            dtype_to_storage_type(dtype),
        )
    };
    Some(Tensor::from_primitive::<Wgpu>(permute_nhwc_to_nchw(out)))
}

/// `module` with every 4-D weight on wgpu stored taps-major (`[kh, kw, Cin, Cout]` in memory,
/// still `[Cout, Cin, kh, kw]` to burn): the layout [`convolve_register_tiles`] reads.
pub fn taps_major_weights<M: Module>(module: M) -> M {
    super::weights_stored_in_order(module, [2, 3, 1, 0])
}
