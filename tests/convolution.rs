//! Convolutions as matrix products (how the network runs them on GPU backends), burn's implicit
//! routine and our tile kernels against burn's own convolution: bands of rows, shifted copies
//! partly or wholly outside the map, bias, batch, every kind of layer; the whole network run each
//! way against the reference outputs, and the released network on our kernels against burn's. Also BatchNorm folded into
//! the convolution before it (how inference runs every such pair) against burn's BatchNorm.

mod common;

use std::sync::{Mutex, OnceLock};

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Distribution, Tensor};
use common::{CASES, FLOAT32_TOLERANCE, ReferenceCase, assert_close, fixture};
use rpl_web::backend::BackendKind;
use rpl_web::gpu::implicit_gemm::{Partitions, channels_last_weights, convolve_implicit, convolve_implicit_with};
use rpl_web::gpu::register_tiles::{TileKernel, convolve_in_tiles, taps_major_weights};
use rpl_web::model::convolution::{GpuConvolution, arrange_weights, convolutions_run, convolve_by_matmul, set_gpu_convolution};
use rpl_web::model::{RplConfig, RplNetwork};
use rpl_web::model::layers::{batch_norm, conv_with_bias, fold_batch_norm};
use rpl_web::preprocess::RgbImage;
use rpl_web::weights::load_network;
use rpl_web::weights::pth::PthCheckpoint;

/// wgpu initialises once per process: the tests share one device.
fn wgpu() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| BackendKind::Wgpu.device().unwrap()).clone()
}

/// The GPU convolution is chosen process-wide: the tests that switch it take turns.
static CONVOLUTION_CHOICE: Mutex<()> = Mutex::new(());

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// (batch, in, out, kernel, dilation, height, width, bias, rows per band)
const LAYERS: [(usize, usize, usize, usize, usize, usize, usize, bool, usize); 6] = [
    // One band, the eight off-centre copies padded on some side.
    (1, 8, 16, 3, 1, 7, 9, false, 7),
    // Bands of 3 rows and a last band of 1 (10 = 3 + 3 + 3 + 1), batch of two.
    (2, 8, 16, 3, 1, 10, 9, false, 3),
    // Bands of one row with a dilation of 2: copies reach across band edges.
    (1, 4, 8, 3, 2, 6, 11, true, 1),
    // Rate 12 on a 5x6 map (the ASPP on a small image): only the centre tap touches the map.
    (1, 16, 8, 3, 12, 5, 6, false, 5),
    // Rate 4 on a 5x6 map in bands of 2 rows: taps partly inside, or wholly outside one band.
    (1, 16, 8, 3, 4, 5, 6, true, 2),
    // 1x1 with bias.
    (2, 24, 12, 1, 1, 4, 5, true, 4),
];

fn check_device(device: &Device, label: &str) {
    for (n, cin, cout, kernel, dilation, h, w, bias, band) in LAYERS {
        let conv = conv_with_bias(cin, cout, kernel, 1, dilation, bias, device);
        let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), device);
        let expected = values(conv.forward(x.clone()));
        // The documented size of one im2col row band: N·W·k²·Cin float32 values per row.
        let row_bytes = n * w * kernel * kernel * cin * size_of::<f32>();
        let ours = convolve_by_matmul(&conv, x, band * row_bytes).expect("a stride-1 same-size convolution");
        assert_eq!(ours.dims(), [n, cout, h, w], "{label}: output shape");
        let what = format!("{label}: {cin}->{cout} {kernel}x{kernel} rate {dilation} on {n}x{h}x{w}, bands of {band} rows");
        let error = assert_close(&what, &values(ours), &expected, FLOAT32_TOLERANCE);
        println!("{what}: relative max error {error:.2e}");
    }
}

#[test]
fn matmul_convolution_equals_burns_on_the_cpu() {
    check_device(&BackendKind::Flex.device().unwrap(), "flex");
}

/// Where the products actually run: wgpu (lavapipe on a machine without a GPU).
#[test]
fn matmul_convolution_equals_burns_on_wgpu() {
    check_device(&wgpu(), "wgpu");
}

/// (batch, in, out, kernel, stride, dilation, height, width, bias): each kind of convolution in
/// the network, at channel counts that are not multiples of the vector widths where the network
/// has such (the stem's 3 inputs, the decoder's 304 = 48 + 256, the 19 classes).
const IMPLICIT_LAYERS: [(usize, usize, usize, usize, usize, usize, usize, usize, bool); 10] = [
    // A trunk 3x3 with a batch of two.
    (2, 32, 32, 3, 1, 1, 9, 7, true),
    // 512 pixels or more, and 512 deep or more: the matrix-product crate's larger partitions.
    (1, 64, 32, 3, 1, 1, 24, 24, true),
    // mod6 / mod7's dilations.
    (1, 16, 24, 3, 1, 2, 8, 9, false),
    (1, 24, 16, 3, 1, 4, 9, 8, true),
    // The ASPP's rates on a small map: most taps read only padding.
    (1, 32, 16, 3, 1, 12, 6, 5, true),
    // Rate 4 on a map 3 rows high: the upper and lower taps read only padding, the side ones not.
    (1, 24, 16, 3, 1, 4, 3, 9, true),
    // 1x1s: a block's projection, the decoder's 304 inputs, the 19 classes.
    (1, 64, 32, 1, 1, 1, 5, 6, true),
    (1, 304, 32, 1, 1, 1, 7, 5, true),
    (1, 32, 19, 1, 1, 1, 6, 6, true),
    // The strided pair.
    (1, 16, 32, 3, 2, 1, 11, 9, true),
];

/// burn's implicit-product convolution on register tiles (`--gpu-convolution implicit`) against
/// burn's own convolution on wgpu, on every kind of layer of the network, with the weights as
/// loaded and stored channels-last (as `rpl bench --gpu-convolution implicit` arranges them).
#[test]
fn implicit_convolution_equals_burns_on_wgpu() {
    let device = wgpu();
    for (n, cin, cout, kernel, stride, dilation, h, w, bias) in IMPLICIT_LAYERS {
        let conv = conv_with_bias(cin, cout, kernel, stride, dilation, bias, &device);
        let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let expected = values(conv.forward(x.clone()));
        let layouts = [("as loaded", conv.clone()), ("channels-last", channels_last_weights(conv))];
        for ((layout, conv), partitions) in layouts.iter().flat_map(|layout| [(layout, Partitions::Inferred), (layout, Partitions::Compact)]) {
            let what = format!(
                "{cin}->{cout} {kernel}x{kernel} stride {stride} rate {dilation} on {n}x{h}x{w}, bias {bias}, weights {layout}, partitions {partitions:?}"
            );
            let ours = convolve_implicit_with(conv, &x, partitions).unwrap_or_else(|| panic!("{what}: the implicit routine refused it"));
            assert_eq!(ours.dims(), [n, cout, (h - 1) / stride + 1, (w - 1) / stride + 1], "{what}: output shape");
            let error = assert_close(&format!("implicit, {what}"), &values(ours), &expected, FLOAT32_TOLERANCE);
            println!("implicit, {what}: relative max error {error:.2e}");
        }
    }
    // Input channels the routine cannot load 4 at a time (the image's 3, the width-1/8 decoder's
    // 6 + 32) are left to burn's kernel: their shaders are too large for SwiftShader.
    for cin in [3, 38] {
        let conv = conv_with_bias(cin, 16, 3, 1, 1, true, &device);
        let x = Tensor::<4>::random([1, cin, 6, 5], Distribution::Normal(0.0, 1.0), &device);
        assert!(convolve_implicit(&conv, &x).is_none(), "{cin} input channels: refused");
    }
}

/// Layers whose channels do not come in fours: the image's 3 inputs, the width-1/8 decoder's
/// 6 + 32 inputs and 6 low-level channels (the 19 classes are among [`IMPLICIT_LAYERS`]).
const ODD_CHANNEL_LAYERS: [(usize, usize, usize, usize, usize, usize, usize, usize, bool); 2] =
    [(1, 3, 16, 3, 1, 1, 9, 7, true), (2, 38, 6, 3, 1, 1, 7, 6, false)];

/// Our tile kernels (`--gpu-convolution tiles` and `staged`) against burn's own convolution on
/// wgpu, on every kind of layer of the network, with the weights as loaded and stored taps-major
/// (as `arrange_weights` stores them for them), with and without a residual and ReLU after.
#[test]
fn tile_convolutions_equal_burns_on_wgpu() {
    let device = wgpu();
    for (n, cin, cout, kernel, stride, dilation, h, w, bias) in IMPLICIT_LAYERS.into_iter().chain(ODD_CHANNEL_LAYERS) {
        let conv = conv_with_bias(cin, cout, kernel, stride, dilation, bias, &device);
        let x = Tensor::<4>::random([n, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let expected = values(conv.forward(x.clone()));
        let residual = Tensor::<4>::random([n, cout, (h - 1) / stride + 1, (w - 1) / stride + 1], Distribution::Normal(0.0, 1.0), &device);
        let expected_then = values(burn::tensor::activation::relu(conv.forward(x.clone()) + residual.clone()));
        for (layout, conv) in [("as loaded", conv.clone()), ("taps-major", taps_major_weights(conv))] {
            for kernel_kind in [TileKernel::Registers, TileKernel::Staged] {
                let what = format!("{kernel_kind:?}: {cin}->{cout} {kernel}x{kernel} stride {stride} rate {dilation} on {n}x{h}x{w}, bias {bias}, weights {layout}");
                let ours = convolve_in_tiles(kernel_kind, &conv, &x, None, false).unwrap_or_else(|| panic!("{what}: refused"));
                assert_eq!(ours.dims(), residual.dims(), "{what}: output shape");
                let error = assert_close(&what, &values(ours), &expected, FLOAT32_TOLERANCE);
                println!("{what}: relative max error {error:.2e}");
                // A residual added and ReLU as the kernel writes its outputs (a trunk block's end).
                let ours_then = convolve_in_tiles(kernel_kind, &conv, &x, Some(&residual), true).expect("the same layer with an epilogue");
                assert_close(&format!("{what}, + residual, ReLU"), &values(ours_then), &expected_then, FLOAT32_TOLERANCE);
            }
        }
    }
}

#[test]
fn strided_convolutions_are_left_to_burn() {
    let device = BackendKind::Flex.device().unwrap();
    let conv = conv_with_bias(4, 8, 3, 2, 1, false, &device);
    let x = Tensor::<4>::zeros([1, 4, 8, 8], &device);
    assert!(convolve_by_matmul(&conv, x, 1 << 20).is_none(), "a stride-2 convolution has no same-size product form");
}

/// The whole width-1/8 network on wgpu with its convolutions as products, then as implicit
/// products, then on our tile kernels (residuals and ReLUs in their kernel), reproduces the
/// reference logits.
#[test]
fn network_with_each_gpu_convolution_matches_reference_outputs_on_wgpu() {
    let _turn = CONVOLUTION_CHOICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = wgpu();
    let source = PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap();
    // As inference runs it: the BatchNorms folded into the convolutions (biases everywhere).
    let network = load_network(&source, &device).unwrap().fold_batch_norms();
    for choice in [GpuConvolution::MatrixProducts, GpuConvolution::Implicit, GpuConvolution::RegisterTiles, GpuConvolution::StagedTiles] {
        set_gpu_convolution(choice);
        // The weights laid out as the choice reads them (as `rpl bench` and the page do).
        let network = arrange_weights(network.clone());
        for name in CASES {
            let case = ReferenceCase::load(name);
            let image = RgbImage::decode(name, &std::fs::read(case.png()).unwrap()).unwrap();
            let logits = network.forward(image.to_input(&device));
            for (head, ours) in [("out1", logits.out1), ("out2", logits.out2)] {
                let what = format!("wgpu, {}: {name} {head}", choice.name());
                let error = assert_close(&what, &values(ours), &case.f32(head), FLOAT32_TOLERANCE);
                println!("{what}: relative max error {error:.2e}");
            }
        }
    }
}

/// Every convolution of the released model at its own channel counts (up to 4096): the released
/// network with random weights on a 64x32 image, its 63 convolutions on each of our tile kernels,
/// against the same network on burn's kernel.
#[test]
fn released_network_on_our_tile_kernels_matches_burns_kernel_on_wgpu() {
    let _turn = CONVOLUTION_CHOICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = wgpu();
    let network = RplNetwork::new(RplConfig::RELEASED, &device).fold_batch_norms();
    let x = Tensor::<4>::random([1, 3, 32, 64], Distribution::Normal(0.0, 1.0), &device);
    set_gpu_convolution(GpuConvolution::Direct);
    let expected = network.forward(x.clone());
    let expected = [("out1", values(expected.out1)), ("out2", values(expected.out2))];
    for choice in [GpuConvolution::RegisterTiles, GpuConvolution::StagedTiles] {
        set_gpu_convolution(choice);
        let network = arrange_weights(network.clone());
        let before = convolutions_run();
        let logits = network.forward(x.clone());
        assert_eq!(convolutions_run()[4] - before[4], 63, "{}: every convolution on the tile kernel", choice.name());
        for ((head, ours), (_, expected)) in [("out1", logits.out1), ("out2", logits.out2)].into_iter().zip(&expected) {
            let what = format!("released width, {}: {head}", choice.name());
            let error = assert_close(&what, &values(ours), expected, FLOAT32_TOLERANCE);
            println!("{what}: relative max error {error:.2e}");
        }
    }
    set_gpu_convolution(GpuConvolution::Direct);
}

/// Folding changes nothing but rounding: with and without the convolution's own bias, with
/// statistics far from the initial ones (mean 0, variance 1), on the CPU and on wgpu.
#[test]
fn batch_norm_folded_into_its_convolution_gives_the_same_output() {
    for (device, label) in [(BackendKind::Flex.device().unwrap(), "flex"), (wgpu(), "wgpu")] {
        for bias in [false, true] {
            let (cin, cout) = (6, 10);
            let mut conv = conv_with_bias(cin, cout, 3, 1, 2, bias, &device);
            let mut bn = batch_norm(cout, &device);
            let random = |low: f64, high: f64| Tensor::<1>::random([cout], Distribution::Uniform(low, high), &device);
            bn.gamma = Param::from_tensor(random(-2.0, 2.0));
            bn.beta = Param::from_tensor(random(-1.0, 1.0));
            bn.running_mean = RunningState::new(random(-3.0, 3.0));
            bn.running_var = RunningState::new(random(0.01, 4.0));
            let x = Tensor::<4>::random([2, cin, 9, 7], Distribution::Normal(0.0, 1.0), &device);
            let expected = values(bn.forward(conv.forward(x.clone())));

            let mut folded = Some(bn);
            fold_batch_norm(&mut conv, &mut folded);
            assert!(folded.is_none(), "the BatchNorm is gone once folded");
            let what = format!("{label}: BatchNorm folded into a 3x3 convolution, bias {bias}");
            let error = assert_close(&what, &values(conv.forward(x)), &expected, FLOAT32_TOLERANCE);
            println!("{what}: relative max error {error:.2e}");
        }
    }
}
