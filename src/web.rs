//! The browser API, called from the Web Worker (`www/worker.js`). Thin: it holds the session's
//! device and network, and converts between JS values and the library's types.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Float32Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::inference::{PredictOptions, predict_async};
use crate::model::{RplConfig, RplNetwork};
use crate::preprocess::RgbImage;
use crate::visualize::{colorize_classes, rgb_to_rgba, score_overlay};
use crate::weights::load_network;
use crate::weights::safetensors::SafetensorsCheckpoint;

/// Weight of the heat map over the image in `heatImage`.
const HEAT_OPACITY: f32 = 0.6;

struct Session {
    device: Device,
    /// Shared so that a running inference keeps its network while new weights load.
    network: Option<Rc<RplNetwork>>,
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
/// burn's CPU backend when `webgpu` is false. Returns what was chosen:
/// `{backend, maxBufferSize, maxStorageBufferBindingSize}` (the Worker names the adapter: the
/// browser describes it better than wgpu sees it).
#[wasm_bindgen(js_name = initBackend)]
pub async fn init_backend(webgpu: bool) -> Result<JsValue, JsError> {
    let info = Object::new();
    let device = if webgpu {
        // cubecl asks the adapter for its own limits, not WebGPU's defaults.
        let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(error)?;
        let limits = setup.device.limits();
        set(&info, "backend", "webgpu");
        set(&info, "maxBufferSize", limits.max_buffer_size as f64);
        set(&info, "maxStorageBufferBindingSize", limits.max_storage_buffer_binding_size as f64);
        device
    } else {
        set(&info, "backend", "cpu");
        set(&info, "adapter", "burn ndarray (WebAssembly)");
        #[allow(deprecated)] // burn 0.22 deprecates ndarray for flex; we ship ndarray as designed
        Device::ndarray()
    };
    SESSION.with(|s| *s.borrow_mut() = Some(Session { device, network: None }));
    Ok(info.into())
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
        let network = load_network(&source, &session.device).map_err(error)?;
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
        session.network = Some(Rc::new(RplNetwork::new(config, &session.device)));
        Ok(format!("{} (random weights)", config.describe()))
    })
}

/// Segments an RGBA image. Returns `{width, height, classes: Uint8Array, energy: Float32Array,
/// energyOut1: Float32Array, classImage, heatImage}`: train ids (argmax of out1), the blurred
/// energy of out2 (with RPL) and of out1 (without), and RGBA pictures of the class map and of
/// the energy over the image.
#[wasm_bindgen]
pub async fn segment(width: usize, height: usize, rgba: Vec<u8>) -> Result<JsValue, JsError> {
    let image = RgbImage::from_interleaved(width, height, 4, &rgba).map_err(error)?;
    let (network, device) = with_session(|session| match &session.network {
        Some(network) => Ok((network.clone(), session.device.clone())),
        None => Err(error("no model is loaded")),
    })?;
    let options = PredictOptions { closed_set_score: true, ..PredictOptions::default() };
    let prediction = predict_async(&network, &image, options, &device).await.map_err(error)?;

    let result = Object::new();
    set(&result, "width", width as u32);
    set(&result, "height", height as u32);
    set(&result, "classes", Uint8Array::from(prediction.classes.as_slice()));
    set(&result, "energy", Float32Array::from(prediction.score.as_slice()));
    let closed = prediction.closed_set_score.unwrap_or_default();
    set(&result, "energyOut1", Float32Array::from(closed.as_slice()));
    let class_image = rgb_to_rgba(&colorize_classes(&prediction.classes));
    set(&result, "classImage", Uint8Array::from(class_image.as_slice()));
    let heat_image = rgb_to_rgba(&score_overlay(&image.pixels, &prediction.score, HEAT_OPACITY));
    set(&result, "heatImage", Uint8Array::from(heat_image.as_slice()));
    Ok(result.into())
}
