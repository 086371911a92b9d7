//! The browser API, called from the Web Worker (`www/worker.js`). Thin: it holds the session's
//! device and network, and converts between JS values and the library's types.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Float32Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::analysis::{HeadResults, threshold_mask};
use crate::backend::{Precision, set_precision};
use crate::inference::{LiveResult, OUT2};
use crate::model::{RplConfig, RplNetwork, Stage};
use crate::npy;
use crate::preprocess::RgbImage;
use crate::scoring::ScoreMode;
use crate::visualize::{
    CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize_classes, finite_range, mask_overlay, rgb_to_rgba, score_overlay_in_range,
};
use crate::weights::load_network;
use crate::weights::safetensors::SafetensorsCheckpoint;

struct Session {
    device: Device,
    /// The largest buffer one tensor may occupy: the adapter's binding limit on WebGPU.
    max_tensor_bytes: u64,
    /// The float type tensors take on this device (float16 halves every activation).
    precision: Precision,
    /// Shared so that a running inference keeps its network while new weights load.
    network: Option<Rc<RplNetwork>>,
    last: Option<Rc<LastImage>>,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    Reflect::set(object, &JsValue::from_str(key), &value.into()).expect("setting a property of a plain object");
}

fn error(message: impl std::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

/// Starts the session on WebGPU (with the adapter's maximum buffer and binding sizes), or on
/// burn's CPU backend when `webgpu` is false; in float16 when `half_precision` is true and the
/// device offers it. Returns what was chosen:
/// `{backend, dtype, maxBufferSize, maxStorageBufferBindingSize}`, and `halfPrecisionError` where
/// float16 was asked for and refused (the Worker names the adapter: the browser describes it
/// better than wgpu sees it).
#[wasm_bindgen(js_name = initBackend)]
pub async fn init_backend(webgpu: bool, half_precision: bool) -> Result<JsValue, JsError> {
    let info = Object::new();
    let mut max_tensor_bytes = CPU_MAX_TENSOR_BYTES;
    let mut device = if webgpu {
        // cubecl asks the adapter for its own limits, not WebGPU's defaults.
        let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(error)?;
        let limits = setup.device.limits();
        max_tensor_bytes = limits.max_buffer_size.min(limits.max_storage_buffer_binding_size as u64);
        set(&info, "backend", "webgpu");
        set(&info, "maxBufferSize", limits.max_buffer_size as f64);
        set(&info, "maxStorageBufferBindingSize", limits.max_storage_buffer_binding_size as f64);
        device
    } else {
        set(&info, "backend", "cpu");
        set(&info, "adapter", if cfg!(target_feature = "simd128") { "burn flex (WebAssembly SIMD)" } else { "burn flex (WebAssembly)" });
        Device::flex()
    };
    let mut precision = if half_precision { Precision::F16 } else { Precision::F32 };
    if let Err(e) = set_precision(&mut device, precision) {
        set(&info, "halfPrecisionError", format!("{e:?}"));
        precision = Precision::F32;
    }
    set(&info, "dtype", precision.name());
    SESSION.with(|s| *s.borrow_mut() = Some(Session { device, max_tensor_bytes, precision, network: None, last: None }));
    Ok(info.into())
}

/// On the CPU backend one tensor stays under this: several live at once in a 4 GiB wasm heap.
const CPU_MAX_TENSOR_BYTES: u64 = 512 << 20;

/// The most pixels the loaded network can take on this device: its largest activation must fit
/// one buffer. The page shrinks larger images to this.
#[wasm_bindgen(js_name = maxInferencePixels)]
pub fn max_inference_pixels() -> Result<f64, JsError> {
    with_session(|session| {
        let network = session.network.as_ref().ok_or_else(|| error("no model is loaded"))?;
        Ok((session.max_tensor_bytes / network.config.largest_activation_bytes_per_pixel(session.precision.bytes()) as u64) as f64)
    })
}

/// What the device's allocator holds (GPU), for the page's memory accounting.
#[wasm_bindgen(js_name = memoryUsage)]
pub fn memory_usage() -> Result<JsValue, JsError> {
    with_session(|session| {
        let info = Object::new();
        if let Some(usage) = session.device.memory_pool_usage() {
            set(&info, "deviceBytesReserved", usage.bytes_reserved as f64);
            set(&info, "deviceBytesInUse", usage.bytes_in_use as f64);
        }
        Ok(info.into())
    })
}

fn with_session<T>(f: impl FnOnce(&mut Session) -> Result<T, JsError>) -> Result<T, JsError> {
    SESSION.with(|s| match s.borrow_mut().as_mut() {
        Some(session) => f(session),
        None => Err(error("initBackend must be called first")),
    })
}

/// Loads a safetensors checkpoint (float32 or float16, any RPL width); `name` is used in
/// messages. Returns a description of the network.
#[wasm_bindgen(js_name = loadWeights)]
pub fn load_weights(name: String, bytes: Vec<u8>) -> Result<String, JsError> {
    with_session(|session| {
        let source = SafetensorsCheckpoint::from_bytes(name, bytes).map_err(error)?;
        let network = load_network(&source, &session.device).map_err(error)?.fold_batch_norms();
        let description = network.config.describe();
        session.network = Some(Rc::new(network));
        Ok(description)
    })
}

/// Random weights of the given width (1 = the released size): for benchmarks only.
#[wasm_bindgen(js_name = loadRandomWeights)]
pub fn load_random_weights(width_divisor: usize) -> Result<String, JsError> {
    let config = RplConfig { width_divisor, ..RplConfig::RELEASED };
    if !config.is_valid() {
        return Err(error(format!("no RPL network has width 1/{width_divisor}")));
    }
    with_session(|session| {
        session.network = Some(Rc::new(RplNetwork::new(config, &session.device).fold_batch_norms()));
        Ok(format!("{} (random weights)", config.describe()))
    })
}

/// Benchmarks: runs the network on an RGBA image through `stage` ("trunk", "aspp", "residual
/// block", "decoder"; "score": the whole pass and the energy of out2 at the image's size) and
/// waits for that result. The Worker times each call; stage times are the differences.
#[wasm_bindgen(js_name = runThrough)]
pub async fn run_through(width: usize, height: usize, rgba: Vec<u8>, stage: String) -> Result<(), JsError> {
    let last = match stage.as_str() {
        "score" => None,
        name => Some(Stage::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| error(format!("unknown stage `{name}`")))?),
    };
    let (network, device) = network_for(width, height)?;
    let input = RgbImage::from_interleaved(width, height, 4, &rgba).map_err(error)?.to_input(&device);
    match last {
        None => {
            LiveResult::new(network.forward_to_decoder(input)).score(OUT2, ScoreMode::Energy).await.map_err(error)?;
        }
        Some(stage) => {
            // One value read back waits for all the work queued before it.
            let output = network.forward_through(input, stage).slice([0..1, 0..1, 0..1, 0..1]);
            output.into_data_async().await.map_err(|e| error(format!("reading the {} output back: {e:?}", stage.name())))?;
        }
    }
    Ok(())
}

/// The last segmented image, kept for follow-up questions from the page.
struct LastImage {
    image: RgbImage,
    live: LiveResult,
    /// The scores of out1 and out2 in the mode last asked for.
    scores: RefCell<(ScoreMode, [Vec<f32>; 2])>,
}

fn last_image() -> Result<Rc<LastImage>, JsError> {
    with_session(|session| session.last.clone().ok_or_else(|| error("no image has been segmented yet")))
}

fn parse_mode(mode: &str) -> Result<ScoreMode, JsError> {
    ScoreMode::from_name(mode).ok_or_else(|| error(format!("unknown score mode `{mode}`")))
}

/// `{mode, baseline, score, scoreOut1, scoreRange}` for the last image's scores.
fn scores_object(mode: ScoreMode, scores: &[Vec<f32>; 2]) -> Object {
    let result = Object::new();
    set(&result, "mode", mode.name());
    set(&result, "baseline", mode.is_baseline());
    set(&result, "scoreOut1", Float32Array::from(scores[0].as_slice()));
    set(&result, "score", Float32Array::from(scores[1].as_slice()));
    let (lo, hi) = finite_range(scores[0].iter().chain(&scores[1]));
    set(&result, "scoreRange", js_sys::Array::of2(&JsValue::from(lo), &JsValue::from(hi)));
    result
}

/// The loaded network and the device, once a `width` x `height` image is known to fit the
/// device's buffers (refused with the sizes otherwise).
fn network_for(width: usize, height: usize) -> Result<(Rc<RplNetwork>, Device), JsError> {
    with_session(|session| match &session.network {
        Some(network) => {
            let needed = (width * height * network.config.largest_activation_bytes_per_pixel(session.precision.bytes())) as u64;
            if needed > session.max_tensor_bytes {
                return Err(error(format!(
                    "{width}x{height} is too large for this device: the network's largest tensor would take {} MB, \
                     one buffer holds at most {} MB; choose a smaller inference size",
                    needed >> 20,
                    session.max_tensor_bytes >> 20
                )));
            }
            Ok((network.clone(), session.device.clone()))
        }
        None => Err(error("no model is loaded")),
    })
}

/// Segments an RGBA image and scores it in `mode` (energy, entropy, max-softmax, max-logit).
/// Returns `{width, height, classes, classesOut2, classImage, classImageOut2, mode, baseline,
/// score, scoreOut1, scoreRange}`: train ids (argmax of out1 and of out2) with their RGBA
/// pictures, and the blurred score of out2 (with RPL) and of out1 (without), row-major.
#[wasm_bindgen]
pub async fn segment(width: usize, height: usize, rgba: Vec<u8>, mode: String) -> Result<JsValue, JsError> {
    let mode = parse_mode(&mode)?;
    let (network, device) = network_for(width, height)?;
    // Checked against the device first: a refused size costs no copy of its pixels.
    let image = RgbImage::from_interleaved(width, height, 4, &rgba).map_err(error)?;
    let live = LiveResult::run(&network, &image, &device);
    let ([classes1, classes2], scores) = live.class_maps_and_scores(mode).await.map_err(error)?;

    let result = scores_object(mode, &scores);
    set(&result, "width", width as u32);
    set(&result, "height", height as u32);
    for (key, classes) in [("classes", &classes1), ("classesOut2", &classes2)] {
        set(&result, key, Uint8Array::from(classes.as_slice()));
    }
    for (key, classes) in [("classImage", &classes1), ("classImageOut2", &classes2)] {
        set(&result, key, Uint8Array::from(rgb_to_rgba(&colorize_classes(classes)).as_slice()));
    }
    let last = LastImage { image, live, scores: RefCell::new((mode, scores)) };
    with_session(|session| {
        session.last = Some(Rc::new(last));
        Ok(())
    })?;
    Ok(result.into())
}

/// The last image's scores in another mode (no new network pass).
#[wasm_bindgen]
pub async fn rescore(mode: String) -> Result<JsValue, JsError> {
    let mode = parse_mode(&mode)?;
    let last = last_image()?;
    let scores = last.live.scores(mode).await.map_err(error)?;
    let result = scores_object(mode, &scores);
    *last.scores.borrow_mut() = (mode, scores);
    Ok(result.into())
}

/// One pixel of the last image: `{classes: [out1, out2], names, probabilities: [Float32Array x2],
/// scores: [out1, out2]}`.
#[wasm_bindgen(js_name = pixelInfo)]
pub async fn pixel_info(x: usize, y: usize) -> Result<JsValue, JsError> {
    let last = last_image()?;
    if x >= last.live.width || y >= last.live.height {
        return Err(error(format!("pixel ({x}, {y}) is outside the {}x{} image", last.live.width, last.live.height)));
    }
    let logits = last.live.pixel_logits(x, y).await.map_err(error)?;
    let scores = last.scores.borrow();
    let results = HeadResults {
        width: 1,
        height: 1,
        classes: logits[0].len(),
        logits,
        scores: [vec![scores.1[0][y * last.live.width + x]], vec![scores.1[1][y * last.live.width + x]]],
    };
    let report = results.pixel(0, 0).map_err(error)?;
    let info = Object::new();
    let name = |c: u8| CITYSCAPES_CLASSES.get(usize::from(c)).copied().unwrap_or("?");
    set(&info, "classes", js_sys::Array::of2(&report.class[0].into(), &report.class[1].into()));
    set(&info, "names", js_sys::Array::of2(&name(report.class[0]).into(), &name(report.class[1]).into()));
    let [p1, p2] = &report.probabilities;
    set(&info, "probabilities", js_sys::Array::of2(&Float32Array::from(p1.as_slice()), &Float32Array::from(p2.as_slice())));
    set(&info, "scores", js_sys::Array::of2(&report.score[0].into(), &report.score[1].into()));
    Ok(info.into())
}

fn head_index(head: u32) -> Result<usize, JsError> {
    match head {
        1 | 2 => Ok(head as usize - 1),
        _ => Err(error(format!("head {head}: 1 (out1) or 2 (out2)"))),
    }
}

/// RGBA: the last image with the score of `head` (1 = out1, 2 = out2) as a heat map over
/// `[lo, hi]`, blended with weight `opacity`.
#[wasm_bindgen(js_name = heatImage)]
pub fn heat_image(head: u32, lo: f32, hi: f32, opacity: f32) -> Result<Uint8Array, JsError> {
    let head = head_index(head)?;
    let last = last_image()?;
    let scores = last.scores.borrow();
    let rgb = score_overlay_in_range(&last.image.pixels, &scores.1[head], (lo, hi), opacity.clamp(0.0, 1.0));
    Ok(Uint8Array::from(rgb_to_rgba(&rgb).as_slice()))
}

/// `{share, rgba}`: the pixels whose score of `head` is above `threshold`, over the dimmed image.
#[wasm_bindgen(js_name = maskImage)]
pub fn mask_image(head: u32, threshold: f32) -> Result<JsValue, JsError> {
    let head = head_index(head)?;
    let last = last_image()?;
    let scores = last.scores.borrow();
    let (share, mask) = threshold_mask(&scores.1[head], threshold);
    let result = Object::new();
    set(&result, "share", share);
    set(&result, "rgba", Uint8Array::from(rgb_to_rgba(&mask_overlay(&last.image.pixels, &mask)).as_slice()));
    Ok(result.into())
}

/// Metrics of both heads' current scores against a ground-truth mask of the image's size
/// (0 inlier, 1 OoD, 255 ignored): `{out1, out2}`, each `{auroc, ap, fpr95, nInlier, nOod, roc,
/// pr}` with the curves as flat `[x0, y0, x1, y1, ...]` Float64Arrays.
#[wasm_bindgen(js_name = evaluateMask)]
pub fn evaluate_mask(width: usize, height: usize, mask: Vec<u8>) -> Result<JsValue, JsError> {
    let last = last_image()?;
    let scores = last.scores.borrow();
    let results = HeadResults { width: last.live.width, height: last.live.height, classes: 0, logits: [vec![], vec![]], scores: scores.1.clone() };
    let heads = results.evaluate(&mask, width, height).map_err(error)?;
    let result = Object::new();
    for (key, head) in ["out1", "out2"].iter().zip(&heads) {
        let o = Object::new();
        let m = &head.metrics;
        set(&o, "auroc", m.auroc);
        set(&o, "ap", m.ap);
        set(&o, "fpr95", m.fpr95);
        set(&o, "nInlier", m.n_inlier as f64);
        set(&o, "nOod", m.n_ood as f64);
        let flat = |points: &[[f64; 2]]| js_sys::Float64Array::from(points.iter().flatten().copied().collect::<Vec<f64>>().as_slice());
        set(&o, "roc", flat(&head.curves.roc));
        set(&o, "pr", flat(&head.curves.precision_recall));
        set(&result, key, o);
    }
    Ok(result.into())
}

/// The current score of `head` as a float32 `.npy` file (H x W), as the command line writes it.
#[wasm_bindgen(js_name = scoreNpy)]
pub fn score_npy(head: u32) -> Result<Uint8Array, JsError> {
    let head = head_index(head)?;
    let last = last_image()?;
    let scores = last.scores.borrow();
    let mut bytes = Vec::new();
    npy::write_f32(&mut bytes, &[last.live.height, last.live.width], &scores.1[head]).map_err(error)?;
    Ok(Uint8Array::from(bytes.as_slice()))
}

/// `[{id, name, colour: [r, g, b]}]` for every Cityscapes train id.
#[wasm_bindgen(js_name = classLegend)]
pub fn class_legend() -> js_sys::Array {
    CITYSCAPES_CLASSES
        .iter()
        .zip(CITYSCAPES_PALETTE)
        .enumerate()
        .map(|(id, (name, colour))| {
            let entry = Object::new();
            set(&entry, "id", id as u32);
            set(&entry, "name", *name);
            set(&entry, "colour", colour.iter().map(|&c| JsValue::from(c)).collect::<js_sys::Array>());
            JsValue::from(entry)
        })
        .collect()
}
