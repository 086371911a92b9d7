//! Our CPU kernels (what flex inference runs instead of burn's ops; `src/cpu/`) against burn's
//! own ops: convolutions as one product per tap, as one product over a band's gathered taps, by
//! register tiles and by Winograd's products, and the released network through them against
//! burn's convolution on ndarray (every geometry the network has and its edge cases: taps partly
//! or wholly off the map, tiles partly off it, bands
//! of rows, batch, bias, 1x1) and what follows
//! them (a residual added, ReLU), BatchNorm-ReLU, the logits' bilinear upsampling by bands of
//! rows, and the per-pixel log-sum-exp. The network through
//! them is checked against the reference outputs by `tests/parity.rs` (flex).

mod common;

use burn::tensor::module::{adaptive_avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::{FLOAT32_TOLERANCE, assert_close, soon, within_a_minute};
use rpl_web::backend::BackendKind;
use rpl_web::cpu::batch_norm_relu::batch_norm_relu;
use rpl_web::cpu::bilinear::resize_rows;
use rpl_web::cpu::class_argmax::class_argmax;
use rpl_web::cpu::direct_convolution::simd_lanes;
use rpl_web::cpu::gaussian_blur::blur_separable;
use rpl_web::cpu::log_sum_exp::{exp_of_nonpositive, ln_of_normal, log_sum_exp};
use rpl_web::cpu::max_pool::max_pool_3x3_stride_2;
use rpl_web::cpu::plane_means::plane_means;
use rpl_web::cpu::tap_products::{Epilogue, TapGeometry, TapStrategy, WeightOrder, Weights, convolve_by_taps, convolve_by_taps_as};
use rpl_web::cpu::weight_order_on_flex;
use rpl_web::model::convolution::arrange_weights;
use rpl_web::model::{RplConfig, RplNetwork};

fn flex() -> Device {
    BackendKind::Flex.device().unwrap()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// (batch, in, out, kernel, dilation, height, width, bias; a residual added, ReLU)
const LAYERS: [(usize, usize, usize, usize, usize, usize, usize, bool, bool, bool); 16] = [
    // Every tap partly off the map.
    (1, 8, 16, 3, 1, 7, 9, false, false, false),
    // Batch of two, bias, dilation 2.
    (2, 8, 16, 3, 2, 10, 9, true, false, false),
    // Rate 12 on a 5x6 map (the ASPP on a small image): only the centre tap reads the map.
    (1, 16, 8, 3, 12, 5, 6, false, false, false),
    // Rate 4 on a 5x6 map: side columns whose valid part is one or two columns wide.
    (1, 16, 8, 3, 4, 5, 6, true, false, false),
    // Rate 24 on a 16x32 map: the centre row of taps only, the side ones reading 8 columns.
    (1, 8, 4, 3, 24, 16, 32, false, false, false),
    // One row, one column.
    (1, 4, 4, 3, 1, 1, 9, true, false, false),
    (1, 4, 4, 3, 1, 9, 1, false, false, false),
    // 1x1 with bias.
    (2, 24, 12, 1, 1, 4, 5, true, false, false),
    // A map large enough for several bands of rows on several threads, and products split
    // across threads (the width-1/8 model's first stage at 512x256).
    (1, 32, 32, 3, 1, 128, 256, true, true, true),
    // The trunk's last convolution of a block: the shortcut added (batch of two, bias); and
    // the one before it, ReLU after, with taps wholly off the map.
    (2, 8, 16, 3, 1, 6, 7, true, true, false),
    (1, 8, 16, 3, 4, 5, 6, true, false, true),
    // A map too small for a band per thread: shared out by blocks of output channels as well
    // (48 channels on two cores: 32 and 16), with everything after the convolution; and a
    // convolution too small to wake the threads (one piece).
    (1, 64, 48, 3, 2, 16, 24, true, true, true),
    (1, 8, 48, 3, 2, 6, 7, true, true, true),
    // Deep, output channels not a whole number of SIMD blocks, side taps wholly off the map's rows.
    (1, 300, 40, 3, 12, 9, 20, true, false, true),
    // Every tap live, output channels no whole number of the direct kernel's blocks, rows no
    // whole number of SIMD vectors, nor the map of its register tiles.
    (1, 24, 20, 3, 1, 13, 50, true, true, true),
    // Wide enough for Winograd's products by default: rate 2 on a map whose sides are no whole
    // number of tiles (rows and columns of tiles partly off it), in two bands of tile rows.
    (2, 128, 144, 3, 2, 33, 42, true, true, true),
];

#[test]
fn convolution_by_taps_equals_burns() {
    let device = flex();
    for (n, cin, cout, kernel, dilation, h, w, bias, residual, relu) in LAYERS {
        let x = random([n, cin, h, w], &device);
        let weight = Tensor::<4>::random([cout, cin, kernel, kernel], Distribution::Normal(0.0, 0.2), &device);
        let bias_values = bias.then(|| Tensor::<1>::random([cout], Distribution::Normal(0.0, 1.0), &device));
        let residual_values = residual.then(|| random([n, cout, h, w], &device));
        let pad = dilation * (kernel - 1) / 2;
        let options = ConvOptions::new([1, 1], [pad, pad], [dilation, dilation], 1);
        let mut expected = conv2d(x.clone(), weight.clone(), bias_values.clone(), options);
        if let Some(r) = residual_values.clone() {
            expected = expected + r;
        }
        if relu {
            expected = burn::tensor::activation::relu(expected);
        }
        let expected = values(expected);
        let geometry = TapGeometry { batch: n, input_channels: cin, height: h, width: w, output_channels: cout, kernel, dilation, stride: 1 };
        let (bias_values, residual_values) = (bias_values.map(values), residual_values.map(values));
        let epilogue = Epilogue { bias: bias_values.as_deref(), residual: residual_values.as_deref(), relu };
        let (x, weight) = (values(x), values(weight));
        let ohwi = stored_ohwi(&weight, [cout, cin, kernel * kernel]);
        let orders = [Weights::oihw(&weight), Weights { values: &ohwi, order: WeightOrder::Ohwi }];
        for strategy in [TapStrategy::PerTap, TapStrategy::Gathered, TapStrategy::Direct, TapStrategy::Winograd] {
            for weights in orders {
                let ours = convolve_by_taps_as(strategy, &x, weights, geometry, epilogue);
                if relu {
                    assert!(ours.iter().all(|&v| v >= 0.0) && ours.contains(&0.0), "ReLU clips the negative outputs");
                }
                let what = format!(
                    "{strategy:?}, {:?} weights: {cin}->{cout} {kernel}x{kernel} rate {dilation} on {n}x{h}x{w}, bias {bias}, residual {residual}, ReLU {relu}",
                    weights.order
                );
                let error = assert_close(&what, &ours, &expected, FLOAT32_TOLERANCE);
                println!("{what}: relative max error {error:.2e}");
            }
        }
        for weights in orders {
            assert_close("the default strategy", &convolve_by_taps(&x, weights, geometry, epilogue), &expected, FLOAT32_TOLERANCE);
        }
    }
}

/// `weight` (`[Cout, Cin, taps]`) as `[Cout, taps, Cin]`, written out here independently of the
/// crate's own rearrangement.
fn stored_ohwi(weight: &[f32], [cout, cin, taps]: [usize; 3]) -> Vec<f32> {
    let mut stored = vec![f32::NAN; weight.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for tap in 0..taps {
                stored[(co * taps + tap) * cin + ci] = weight[(co * cin + ci) * taps + tap];
            }
        }
    }
    stored
}

/// The released network (random weights, BatchNorms folded) on flex, where the 128-channel
/// stage and the decoder run on Winograd's products at half the size of a 64x128 image, against
/// the same network on ndarray (burn's convolution): both heads' logits.
#[test]
fn released_network_on_flex_matches_burns_convolution_on_ndarray() {
    let (device, ndarray) = (flex(), BackendKind::Ndarray.device().unwrap());
    let half_size = TapGeometry { batch: 1, input_channels: 128, height: 32, width: 64, output_channels: 128, kernel: 3, dilation: 1, stride: 1 };
    assert_eq!(TapStrategy::for_geometry(&half_size), TapStrategy::Winograd, "the second stage's convolutions on Winograd's products");
    let network = RplNetwork::new(RplConfig::RELEASED, &device).fold_batch_norms();
    let x = random([1, 3, 64, 128], &device);
    // With the weights as loaded, and stored as inference keeps them on flex: of its 61
    // convolutions' weights, the 40 3x3 kernels over 64 input channels or more read in place
    // `[Cout, k, k, Cin]`; the stem's (3 input channels, its taps gathered) and the 1x1s as they are.
    assert_eq!(weight_orders(&network), [(WeightOrder::Oihw, 61)], "as loaded");
    let arranged = arrange_weights(network.clone());
    assert_eq!(weight_orders(&arranged), [(WeightOrder::Oihw, 21), (WeightOrder::Ohwi, 40)], "arranged");
    let ours = [("as loaded", network.forward(x.clone())), ("arranged", arranged.forward(x.clone()))];
    // Moved last: the network's BatchNorm statistics move with it.
    let theirs = network.to_device(&ndarray).forward(x.to_device(&ndarray));
    for (form, ours) in ours {
        for (head, ours, theirs) in [("out1", ours.out1, &theirs.out1), ("out2", ours.out2, &theirs.out2)] {
            let what = format!("released width on flex, weights {form}, against ndarray: {head}");
            let error = assert_close(&what, &values(ours), &values(theirs.clone()), FLOAT32_TOLERANCE);
            println!("{what}: relative max error {error:.2e}");
        }
    }
}

/// How many of `network`'s convolution weights our flex convolutions read in each order.
fn weight_orders(network: &RplNetwork) -> Vec<(WeightOrder, usize)> {
    struct Orders(Vec<(WeightOrder, usize)>);
    impl ModuleVisitor for Orders {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let (4, Some(order)) = (D, weight_order_on_flex(param.val())) {
                match self.0.iter_mut().find(|(o, _)| *o == order) {
                    Some((_, count)) => *count += 1,
                    None => self.0.push((order, 1)),
                }
            }
        }
    }
    let mut orders = Orders(Vec::new());
    network.visit(&mut orders);
    orders.0.sort_by_key(|&(order, _)| order as usize);
    orders.0
}

/// A frame on flex (`cpu::on_pool`) keeps the pool's other threads waiting for its passes until
/// it ends, returning or panicking; its passes (`cpu::each_index`) run every piece once, on
/// several threads, passes inside pieces too, and a piece's panic reaches the frame's caller;
/// frames run at once from several threads all end; a frame on another device (a GPU's: it
/// mostly waits) leaves the threads asleep. One test: the threads kept awake are counted for the
/// whole process.
#[test]
fn frames_on_flex_keep_the_pool_awake_and_share_their_passes() {
    use rayon::prelude::*;
    use rpl_web::cpu::{each_index, on_pool, threads_kept_awake};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
    let frames = pool.clone();
    within_a_minute("a frame on flex", move || {
        frames.install(|| {
            let sum: u64 = on_pool(&flex(), || {
                assert!(soon(|| threads_kept_awake() == 2), "the other two threads kept awake: {}", threads_kept_awake());
                (0..1u64 << 20).into_par_iter().sum()
            });
            assert_eq!(sum, (1u64 << 20) * ((1 << 20) - 1) / 2);
            assert_eq!(threads_kept_awake(), 0, "the threads left to sleep after the frame");
            let ndarray = BackendKind::Ndarray.device().unwrap();
            on_pool(&ndarray, || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                assert_eq!(threads_kept_awake(), 0, "no thread kept awake by a frame on ndarray");
            });
        });
    });
    let frames = pool.clone();
    within_a_minute("a frame that panics", move || {
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frames.install(|| {
                on_pool(&flex(), || {
                    assert!(soon(|| threads_kept_awake() == 2));
                    panic!("the frame fails");
                })
            })
        }));
        assert!(failed.is_err(), "the frame's panic reaches its caller");
        assert_eq!(threads_kept_awake(), 0, "the threads left to sleep after a failed frame");
    });
    let frames = pool.clone();
    within_a_minute("a frame's passes", move || {
        let counters = |n: usize| (0..n).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>();
        // 20 passes of 15 pieces; each pass's first piece runs a pass of 6 pieces inside it.
        let (runs, nested, threads) = (counters(20 * 15), counters(20 * 6), counters(3));
        frames.install(|| {
            on_pool(&flex(), || {
                for pass in 0..20 {
                    each_index(15, |i| {
                        if i == 0 {
                            each_index(6, |j| _ = nested[pass * 6 + j].fetch_add(1, Ordering::Relaxed));
                        }
                        threads[rayon::current_thread_index().unwrap()].fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        runs[pass * 15 + i].fetch_add(1, Ordering::Relaxed);
                    });
                    let done = |c: &[AtomicUsize]| c.iter().map(|r| r.load(Ordering::Relaxed)).collect::<Vec<_>>();
                    let (outer, inner) = (done(&runs[pass * 15..][..15]), done(&nested[pass * 6..][..6]));
                    assert!(outer.iter().chain(&inner).all(|&c| c == 1), "pass {pass}: each piece once, ended when the pass returns: {outer:?} {inner:?}");
                }
            })
        });
        let busy = threads.iter().filter(|t| t.load(Ordering::Relaxed) > 0).count();
        assert!(busy >= 2, "pieces on {busy} thread(s)");
    });
    let frames = pool.clone();
    within_a_minute("a pass whose piece panics", move || {
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frames.install(|| on_pool(&flex(), || each_index(64, |i| assert_ne!(i, 37, "piece 37 fails"))))
        }));
        let message = failed.expect_err("the piece's panic reaches the frame's caller");
        assert!(message.downcast_ref::<String>().is_some_and(|m| m.contains("piece 37 fails")), "the piece's own message");
        assert_eq!(threads_kept_awake(), 0, "the crew dismissed after a failed pass");
        let sum = AtomicUsize::new(0);
        frames.install(|| on_pool(&flex(), || each_index(64, |i| _ = sum.fetch_add(i, Ordering::Relaxed))));
        assert_eq!(sum.into_inner(), 64 * 63 / 2, "the next frame's pass");
    });
    within_a_minute("four frames at once", move || {
        let sums: Vec<u64> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4u64)
                .map(|i| {
                    let pool = &pool;
                    s.spawn(move || pool.install(|| on_pool(&flex(), || (0..100_000u64).into_par_iter().map(|v| v * i).sum::<u64>())))
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(sums, (0..4u64).map(|i| i * 100_000 * 99_999 / 2).collect::<Vec<_>>());
    });
}

/// The trunk's two strided convolutions (3x3 with padding 1 and 1x1 without, stride 2; the
/// first with its bias and ReLU), on even and odd maps, a batch of two, and a map large enough
/// for several bands on several threads, against burn's convolution.
#[test]
fn strided_convolution_equals_burns() {
    let device = flex();
    // (batch, in, out, kernel, height, width, bias and ReLU)
    for (n, cin, cout, kernel, h, w, epilogue) in [
        (1, 32, 64, 3, 64, 128, true),
        (2, 8, 16, 3, 7, 9, false),
        (1, 16, 24, 1, 9, 6, false),
        (2, 32, 64, 1, 64, 128, true),
        (1, 4, 8, 3, 1, 5, true),
    ] {
        let x = random([n, cin, h, w], &device);
        let weight = Tensor::<4>::random([cout, cin, kernel, kernel], Distribution::Normal(0.0, 0.2), &device);
        let bias = epilogue.then(|| Tensor::<1>::random([cout], Distribution::Normal(0.0, 1.0), &device));
        let pad = (kernel - 1) / 2;
        let mut expected = conv2d(x.clone(), weight.clone(), bias.clone(), ConvOptions::new([2, 2], [pad, pad], [1, 1], 1));
        if epilogue {
            expected = burn::tensor::activation::relu(expected);
        }
        let shape = expected.dims();
        let geometry = TapGeometry { batch: n, input_channels: cin, height: h, width: w, output_channels: cout, kernel, dilation: 1, stride: 2 };
        assert_eq!([geometry.output_height(), geometry.output_width()], [shape[2], shape[3]], "output size");
        let (bias, x, weight, expected) = (bias.map(values), values(x), values(weight), values(expected));
        let ohwi = stored_ohwi(&weight, [cout, cin, kernel * kernel]);
        for weights in [Weights::oihw(&weight), Weights { values: &ohwi, order: WeightOrder::Ohwi }] {
            let ours = convolve_by_taps(&x, weights, geometry, Epilogue { bias: bias.as_deref(), residual: None, relu: epilogue });
            let what = format!("{cin}->{cout} {kernel}x{kernel} stride 2 on {n}x{h}x{w}, {:?} weights, bias and ReLU {epilogue}", weights.order);
            let error = assert_close(&what, &ours, &expected, FLOAT32_TOLERANCE);
            println!("{what}: relative max error {error:.2e}");
        }
    }
}

/// Narrow 3x3 layers (the stem, the first two stages, the decoder) gather their taps; from 64
/// input channels, and for 1x1s (a single tap), one product per tap; wide 3x3s on large enough
/// maps, Winograd's products, but not where the weights are too many, the map too small, or
/// most tiles hang off the map (the ASPP's rates).
#[test]
fn each_convolution_takes_the_strategy_measured_fastest() {
    let geometry = |input_channels, kernel| TapGeometry { batch: 1, input_channels, height: 8, width: 8, output_channels: 16, kernel, dilation: 1, stride: 1 };
    // On small maps the direct kernel's padded copy is several times the map.
    assert_eq!(TapStrategy::for_geometry(&geometry(3, 3)), TapStrategy::Gathered);
    assert_eq!(TapStrategy::for_geometry(&geometry(38, 3)), TapStrategy::Gathered);
    assert_eq!(TapStrategy::for_geometry(&geometry(64, 3)), TapStrategy::PerTap);
    assert_eq!(TapStrategy::for_geometry(&geometry(16, 1)), TapStrategy::PerTap);
    let layer = |input_channels, output_channels, height, width, dilation| TapGeometry {
        batch: 1,
        input_channels,
        height,
        width,
        output_channels,
        kernel: 3,
        dilation,
        stride: 1,
    };
    let wide = |channels, height, width, dilation| layer(channels, channels, height, width, dilation);
    // Width 1/8 at 256x512: the first stages and the decoder, the trunk's last stages on the
    // direct kernel wherever there is SIMD (AVX2, AVX-512, WebAssembly's); the ASPP's large
    // rates per tap.
    let direct = simd_lanes() >= 4;
    let narrow = if direct { TapStrategy::Direct } else { TapStrategy::Gathered };
    assert_eq!(TapStrategy::for_geometry(&layer(16, 16, 128, 256, 1)), narrow);
    assert_eq!(TapStrategy::for_geometry(&layer(38, 32, 64, 128, 1)), narrow);
    let deep = if direct { TapStrategy::Direct } else { TapStrategy::PerTap };
    assert_eq!(TapStrategy::for_geometry(&layer(64, 64, 32, 64, 1)), deep);
    assert_eq!(TapStrategy::for_geometry(&layer(64, 128, 32, 64, 4)), deep);
    assert_eq!(TapStrategy::for_geometry(&layer(128, 64, 32, 64, 2)), deep);
    assert_eq!(TapStrategy::for_geometry(&layer(512, 32, 32, 64, 12)), TapStrategy::PerTap);
    assert_eq!(TapStrategy::for_geometry(&layer(128, 256, 32, 64, 4)), TapStrategy::Winograd);
    // The released width's second stage at 128x256.
    assert_eq!(TapStrategy::for_geometry(&layer(64, 128, 128, 256, 1)), deep);
    // The released model at 128x256: its first two stages and the decoder.
    assert_eq!(TapStrategy::for_geometry(&wide(128, 64, 128, 1)), TapStrategy::Winograd);
    assert_eq!(TapStrategy::for_geometry(&wide(256, 32, 64, 1)), TapStrategy::Winograd);
    assert_eq!(TapStrategy::for_geometry(&wide(512, 32, 64, 2)), TapStrategy::Winograd);
    assert_eq!(TapStrategy::for_geometry(&wide(512, 16, 32, 1)), TapStrategy::PerTap);
    assert_eq!(TapStrategy::for_geometry(&wide(1024, 32, 64, 2)), TapStrategy::PerTap);
    assert_eq!(TapStrategy::for_geometry(&wide(256, 32, 64, 12)), TapStrategy::PerTap);
}

/// The bands of rows the page and the command line ask for, joined, are the resize that burn's
/// ops make on the other backends (`model::resize_rows` on ndarray: each value blended from two
/// source rows, then two columns, with align_corners as the reference's `F.interpolate`); up,
/// down, one source row.
#[test]
fn bilinear_rows_equal_the_resize_on_other_backends() {
    let (device, ndarray) = (flex(), BackendKind::Ndarray.device().unwrap());
    for (shape, size, band) in [
        ([1, 19, 16, 32], [64, 128], 64),
        ([2, 3, 7, 5], [20, 11], 6),
        ([1, 2, 9, 13], [4, 6], 3),
        ([1, 1, 1, 4], [5, 4], 2),
    ] {
        let input = values(random(shape, &device));
        let on_ndarray = Tensor::<4>::from_data(TensorData::new(input.clone(), shape), &ndarray);
        let expected = values(rpl_web::model::resize_rows(on_ndarray, size, 0..size[0]));
        let bands: Vec<Vec<f32>> = (0..size[0])
            .step_by(band)
            .map(|top| resize_rows(&input, shape, size, top..(top + band).min(size[0])))
            .collect();
        // Bands hold [N, C, rows, W]: back to [N, C, H, W] to compare.
        let [n, c] = [shape[0], shape[1]];
        let mut joined = vec![0f32; n * c * size[0] * size[1]];
        for (i, values) in bands.iter().enumerate() {
            let rows = values.len() / (n * c * size[1]);
            for (plane, chunk) in values.chunks_exact(rows * size[1]).enumerate() {
                joined[plane * size[0] * size[1] + i * band * size[1]..][..chunk.len()].copy_from_slice(chunk);
            }
        }
        let what = format!("{shape:?} to {size:?} in bands of {band} rows");
        let error = assert_close(&what, &joined, &expected, 1e-6);
        println!("{what}: relative max error {error:.2e}");
    }
}

/// One pass, against inference's BatchNorm as burn's ops compute it (`x · scale + shift`, then
/// ReLU), bit for bit.
#[test]
fn batch_norm_relu_equals_burns() {
    let device = flex();
    // A small map (one thread) and one large enough to be shared out over the threads.
    for shape in [[2, 5, 6, 7], [1, 5, 80, 90]] {
        let x = random(shape, &device);
        let scale = Tensor::<1>::random([5], Distribution::Uniform(-2.0, 2.0), &device);
        let shift = Tensor::<1>::random([5], Distribution::Uniform(-1.0, 1.0), &device);
        let expected = burn::tensor::activation::relu(x.clone() * scale.clone().reshape([1, 5, 1, 1]) + shift.clone().reshape([1, 5, 1, 1]));
        let ours = batch_norm_relu(&values(x), shape, &values(scale), &values(shift));
        assert_close(&format!("BatchNorm-ReLU of {shape:?}"), &ours, &values(expected), 0.0);
    }
}

/// The scores' blur, a pass per axis, against burn's padding and two convolutions (as on the
/// other backends): reflected borders, repeated ones on a map of 3 rows, a batch of two, a map
/// shared out over the threads.
#[test]
fn separable_blur_equals_burns() {
    let (device, ndarray) = (flex(), BackendKind::Ndarray.device().unwrap());
    for shape in [[1, 9, 14], [2, 12, 8], [1, 3, 9], [1, 20, 4], [1, 200, 180]] {
        let [n, h, w] = shape;
        let maps = values(random([n, 1, h, w], &device));
        let expected = values(rpl_web::scoring::gaussian_blur(Tensor::<3>::from_data(TensorData::new(maps.clone(), shape), &ndarray)));
        let reflect = h > 3 && w > 3;
        let ours = blur_separable(&maps, shape, &rpl_web::scoring::gaussian_kernel(), reflect);
        let error = assert_close(&format!("blur of {shape:?}, reflect {reflect}"), &ours, &expected, 1e-6);
        println!("blur of {shape:?}: relative max error {error:.2e}");
    }
}

/// The trunk's 3x3, stride-2, padding-1 pool against burn's, bit for bit: even and odd sides
/// (the last window cut by the edge), one row, one column, a batch of two, a map shared out over
/// the threads.
#[test]
fn max_pool_equals_burns() {
    let device = flex();
    for shape in [[1, 3, 8, 10], [2, 4, 7, 9], [1, 2, 1, 5], [1, 2, 6, 1], [1, 16, 130, 129]] {
        let x = random(shape, &device);
        let options = MaxPoolOptions::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]);
        let expected = values(max_pool2d(x.clone(), options));
        let ours = max_pool_3x3_stride_2(&values(x), shape);
        assert_close(&format!("3x3 max-pool of {shape:?}"), &ours, &expected, 0.0);
    }
}

/// Each plane's mean (the ASPPs' image pooling) within a rounding of the exact mean (f64), and
/// equal to burn's adaptive pooling to 1x1 as the parity tests compare: planes shorter
/// than the eight running sums, ragged ones, a batch of two, maps shared out as several pieces of
/// planes and as one plane a piece.
#[test]
fn plane_means_equal_burns_pooling() {
    let device = flex();
    for shape in [[1, 3, 2, 3], [2, 5, 7, 9], [1, 4, 1, 1], [2, 64, 33, 65], [1, 3, 300, 301]] {
        let x = random(shape, &device).add_scalar(0.5);
        let burns = values(adaptive_avg_pool2d(x.clone(), [1, 1]));
        let x = values(x);
        let plane = shape[2] * shape[3];
        let exact: Vec<f32> = x.chunks(plane).map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32).collect();
        let ours = plane_means(&x, shape);
        assert_close(&format!("plane means of {shape:?}"), &ours, &exact, 2e-7);
        // burn sums a plane in f32: 1.2e-5 off the exact mean on the 300x301 planes.
        assert_close(&format!("plane means of {shape:?} against burn's"), &ours, &burns, FLOAT32_TOLERANCE);
    }
}

/// One pass per pixel, against burn's stable formula; logits large enough that an unshifted
/// exp would overflow, a batch of two, and a map of several pieces of work.
#[test]
fn log_sum_exp_equals_burns() {
    let device = flex();
    for shape in [[2, 19, 9, 14], [1, 19, 70, 100], [1, 19, 200, 180]] {
        let x = random(shape, &device).mul_scalar(40.0);
        let max = x.clone().max_dim(1);
        let expected = values((x.clone() - max.clone()).exp().sum_dim(1).log() + max);
        let ours = log_sum_exp(&values(x), shape);
        assert!(ours.iter().all(|v| v.is_finite()), "no overflow");
        let error = assert_close(&format!("log-sum-exp of {shape:?} logits"), &ours, &expected, 1e-6);
        println!("log-sum-exp of {shape:?}: relative max error {error:.2e}");
    }
}

/// Each pixel's class against burn's argmax over the class axis: random logits, ties (logits
/// rounded to halves: the first of equal largest wins), NaNs (burn counts the first NaN as the
/// largest), a batch of two and a map of several pieces of work.
#[test]
fn class_argmax_equals_burns() {
    let device = flex();
    for (shape, halves, nan_every) in [([2, 19, 9, 14], false, 0), ([1, 19, 70, 100], true, 0), ([1, 5, 8, 9], true, 7)] {
        let mut logits = values(random(shape, &device).mul_scalar(3.0));
        if halves {
            logits.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        if nan_every > 0 {
            logits.iter_mut().step_by(nan_every).for_each(|v| *v = f32::NAN);
        }
        let x = Tensor::<4>::from_data(TensorData::new(logits.clone(), shape), &device);
        let expected: Vec<i64> = x.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        let ours = class_argmax(&logits, shape);
        assert_eq!(ours.len(), expected.len());
        let differ = ours.iter().zip(&expected).filter(|&(&a, &b)| i64::from(a) != b).count();
        assert_eq!(differ, 0, "{differ} pixels of {shape:?} (ties {halves}, NaN every {nan_every}) differ from burn's argmax");
    }
}

/// The vectorised exponential under log-sum-exp against float64's, relative to the true value
/// (within float32's epsilon: one unit in the last place at most),
/// over every float32 step of [-87, 0] that 10^6 even steps meet (and 0, and the clamp below).
#[test]
fn exp_of_nonpositive_is_within_one_ulp() {
    let mut worst = 0f64;
    for i in 0..=1_000_000 {
        let x = -87.0 * i as f32 / 1e6;
        let exact = f64::from(x).exp();
        let error = (f64::from(exp_of_nonpositive(x)) - exact).abs() / exact;
        worst = worst.max(error);
    }
    println!("exp on [-87, 0]: relative max error {worst:.2e}");
    assert!(worst <= f64::from(f32::EPSILON), "relative error {worst:.2e} is over 1 ulp");
    assert_eq!(exp_of_nonpositive(0.0), 1.0);
    assert!(exp_of_nonpositive(-1000.0) > 0.0 && exp_of_nonpositive(-1000.0) < 2e-38);
}

/// The logarithm under the log-sum-exp, on the sums it takes (1 to the class count: the
/// largest logit's term is e^0) and across float32's normal range: within one unit in the last
/// place of the result, or of ln 2's where the result is near 0.
#[test]
fn ln_of_normal_is_within_one_ulp() {
    let mut worst = 0f64;
    let mut check = |x: f32| {
        let exact = f64::from(x).ln();
        let error = (f64::from(ln_of_normal(x)) - exact).abs() / exact.abs().max(std::f64::consts::LN_2);
        worst = worst.max(error);
    };
    (0..=1_000_000).for_each(|i| check(1.0 + 18.0 * i as f32 / 1e6));
    (-126..128).for_each(|e| (0..1000).for_each(|i| check(2f32.powi(e) * (1.0 + i as f32 / 1000.0))));
    println!("ln: relative max error {worst:.2e}");
    assert!(worst <= f64::from(f32::EPSILON), "relative error {worst:.2e} is over 1 ulp");
    assert_eq!(ln_of_normal(1.0), 0.0);
}

/// A one-pixel sanity check with a value known by hand: two classes with logits 0 and ln 3
/// give ln(1 + 3) = ln 4.
#[test]
fn log_sum_exp_of_a_known_pixel() {
    let ours = log_sum_exp(&[0.0, 3f32.ln()], [1, 2, 1, 1]);
    assert!((ours[0] - 4f32.ln()).abs() < 1e-6, "{} != ln 4", ours[0]);
}
