//! Full-resolution outputs made in bands of rows: the same values as made whole, and a frame
//! whose logits would not fit one of the device's buffers runs instead of failing.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::{FIXTURE_F16_TOLERANCE, FLOAT32_TOLERANCE, assert_close, fixture};
use futures_lite::future::block_on;
use rpl_web::backend::{BackendKind, Precision, set_precision};
use rpl_web::benchmark::random_image;
use rpl_web::inference::{Head, LiveResult};
use rpl_web::model::{RplNetwork, resize_rows, resize_to};
use rpl_web::scoring::ScoreMode;
use rpl_web::weights::load_network;
use rpl_web::weights::pth::PthCheckpoint;

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec::<f32>().unwrap()
}

fn fixture_network(device: &Device) -> RplNetwork {
    load_network(&PthCheckpoint::open(&fixture("rpl_w8/rpl_w8.pth")).unwrap(), device).unwrap().fold_batch_norms()
}

/// Everything the page and the command line read from one result, in order.
fn read_everything(live: &LiveResult) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    let mut floats = Vec::new();
    for mode in [ScoreMode::Energy, ScoreMode::Entropy] {
        floats.extend(block_on(live.scores(mode)).unwrap());
    }
    floats.push(block_on(live.logits(Head::Out1)).unwrap());
    floats.push(block_on(live.logits(Head::Out2)).unwrap());
    (floats, Head::BOTH.map(|head| block_on(live.class_map(head)).unwrap()).to_vec())
}

#[test]
fn resizing_a_band_of_rows_gives_those_rows_of_the_whole_resize() {
    for backend in [BackendKind::Flex, BackendKind::Wgpu] {
        let device = backend.device().unwrap();
        // Up, down, to one row, one axis only.
        for ([h, w], size) in [([7, 9], [13, 17]), ([9, 9], [4, 3]), ([5, 6], [1, 11]), ([6, 4], [6, 15]), ([4, 8], [9, 8])] {
            let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
            let whole = values(resize_to(x.clone(), size));
            for rows_per_band in [1, 3, size[0]] {
                let bands: Vec<_> = (0..size[0])
                    .step_by(rows_per_band)
                    .map(|start| resize_rows(x.clone(), size, start..(start + rows_per_band).min(size[0])))
                    .collect();
                let what = format!("{} {h}x{w} -> {size:?} in bands of {rows_per_band}", backend.name());
                assert_close(&what, &values(Tensor::cat(bands, 2)), &whole, FLOAT32_TOLERANCE / 100.0);
            }
        }
    }
}

#[test]
fn maps_made_in_bands_of_one_row_equal_the_maps_made_whole() {
    let device = BackendKind::Flex.device().unwrap();
    let network = fixture_network(&device);
    let image = random_image(161, 97, 3);
    let whole = LiveResult::run(&network, &image, &device).with_band_bytes(usize::MAX);
    let rows = LiveResult::run(&network, &image, &device).with_band_bytes(1);
    // 10 rows a band: the last band (7 rows) is shorter.
    let tens = LiveResult::run(&network, &image, &device).with_band_bytes(10 * 19 * 161 * 4);
    assert_eq!([whole.bands().count(), rows.bands().count(), tens.bands().count()], [1, 97, 10]);
    // Each pixel's value does not depend on the band it was made in: bit for bit equal.
    let everything = read_everything(&whole);
    assert_eq!(read_everything(&rows), everything);
    assert_eq!(read_everything(&tens), everything);

    // The logits read back band by band are burn's bilinear resize of the decoder's logits.
    let decoder = network.forward_to_decoder(image.to_input(&device));
    let resized = values(resize_to(decoder.out2, [97, 161]));
    assert_close("out2 logits", &block_on(tens.logits(Head::Out2)).unwrap(), &resized, FLOAT32_TOLERANCE / 100.0);
    let pixel = block_on(tens.pixel_logits(150, 90)).unwrap();
    let classes = pixel[1].len();
    let at = |logits: &[f32]| (0..classes).map(|c| logits[c * 97 * 161 + 90 * 161 + 150]).collect::<Vec<_>>();
    assert_close("one pixel's out2 logits", &pixel[1], &at(&resized), FLOAT32_TOLERANCE / 100.0);
}

/// A wgpu device whose buffers hold at most `bytes` (lavapipe offers 128 MiB, every WebGPU
/// adapter at least 128 MiB; a smaller limit lets a small image show what a large one does).
fn wgpu_device_with_buffers_of(bytes: u64) -> Device {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("a wgpu adapter (lavapipe)");
    let mut limits = adapter.limits();
    limits.max_buffer_size = bytes;
    limits.max_storage_buffer_binding_size = bytes;
    let descriptor = wgpu::DeviceDescriptor {
        required_features: adapter.features().difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: limits,
        ..Default::default()
    };
    let (device, queue) = block_on(adapter.request_device(&descriptor)).expect("a device with smaller limits");
    let backend = adapter.get_info().backend;
    Device::wgpu_options().setup(WgpuSetup { instance, adapter, device, queue, backend }).init().expect("burn on that device")
}

/// The buffer limit of the small-device tests.
const BUFFER: u64 = 8 << 20;

#[test]
fn a_frame_whose_logits_exceed_the_devices_buffers_is_made_in_bands() {
    let device = wgpu_device_with_buffers_of(BUFFER);
    let network = fixture_network(&device);
    // 512x428, just inside the size bound the page applies (the decoder's 38 channels at half
    // resolution: 8.3 MB); each head's full-resolution logits would take 19 x 4 bytes per pixel, 16.7 MB.
    let image = random_image(512, 428, 11);
    let needed = (image.width * image.height * network.config.largest_activation_bytes_per_pixel(4)) as u64;
    assert!(needed <= BUFFER && needed > BUFFER * 99 / 100, "{needed} bytes");
    let live = LiveResult::run(&network, &image, &device).with_band_bytes(BUFFER as usize / 2);
    assert!(live.bands().count() > 1);
    let score = block_on(live.score(Head::Out2, ScoreMode::Energy)).expect("made in bands, every tensor fits");
    let classes = block_on(live.class_map(Head::Out1)).unwrap();

    let cpu = BackendKind::Flex.device().unwrap();
    let expected = LiveResult::run(&fixture_network(&cpu), &image, &cpu);
    assert_close("energy of out2", &score, &block_on(expected.score(Head::Out2, ScoreMode::Energy)).unwrap(), FLOAT32_TOLERANCE);
    let expected_classes = block_on(expected.class_map(Head::Out1)).unwrap();
    let agreeing = classes.iter().zip(&expected_classes).filter(|(a, b)| a == b).count();
    assert!(agreeing as f64 >= 0.999 * classes.len() as f64, "{agreeing} of {} pixels agree", classes.len());

    // Made whole, one head's logits do not fit: this is the failure the bands avoid (and not
    // some other one).
    let whole = LiveResult::run(&network, &image, &device).with_band_bytes(usize::MAX);
    let error = block_on(whole.score(Head::Out2, ScoreMode::Energy)).expect_err("whole logits exceed the buffers").to_string();
    let logits_bytes = image.width * image.height * network.config.num_classes * 4;
    assert!(error.contains(&format!("can't allocate buffer of size: {logits_bytes}")), "{error}");
}

/// Float16 networks may take twice the pixels (the page's bound): every activation is half the
/// bytes, and inference writes no boolean masks (4 bytes a value: burn's GPU `relu` did).
#[test]
fn in_float16_twice_the_pixels_fit_the_same_buffers() {
    let mut device = wgpu_device_with_buffers_of(BUFFER);
    set_precision(&mut device, Precision::F16).expect("lavapipe offers shader-f16");
    let network = fixture_network(&device);
    let image = random_image(512, 856, 5);
    let pixels = image.width * image.height;
    let [half, full] = [2, 4].map(|bytes| (pixels * network.config.largest_activation_bytes_per_pixel(bytes)) as u64);
    assert!(half <= BUFFER && half > BUFFER * 99 / 100 && full > 2 * BUFFER * 99 / 100, "{half} / {full} bytes");
    let live = LiveResult::run(&network, &image, &device).with_band_bytes(BUFFER as usize / 2);
    let score = block_on(live.score(Head::Out2, ScoreMode::Energy)).expect("every float16 tensor fits");
    // The same scores as float32 on the CPU, within float16's tolerance.
    let cpu = BackendKind::Flex.device().unwrap();
    let expected = block_on(LiveResult::run(&fixture_network(&cpu), &image, &cpu).score(Head::Out2, ScoreMode::Energy)).unwrap();
    let error = assert_close("float16 energy of out2", &score, &expected, FIXTURE_F16_TOLERANCE);
    println!("float16 energy of out2 at 512x856: relative error {error:.4}");
}
