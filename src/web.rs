//! The browser API, called from the Web Worker (`www/worker.js`): one [`RplSession`] owns the
//! device, the loaded network and the last segmented image, and converts between JS values and
//! the library's types. Heads are named `"out1"` and `"out2"` in both directions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::tensor::Device;
#[cfg(feature = "wgpu")]
use burn::tensor::wgpu::{WgpuInitError, wgpu};
use js_sys::{Array, Float32Array, Float64Array, Function, Object, Reflect, Uint8Array};
use thiserror::Error;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::analysis::{AnalysisError, ImageScores, ObjectChange, PixelReport, check_mask};
use crate::backend::{Precision, set_precision};
use crate::inference::{Head, InferenceError, LiveResult};
use crate::model::convolution::{CONVOLUTION_PATHS, GpuConvolution, arrange_weights, convolutions_run, set_gpu_convolution};
use crate::model::{RplConfig, RplNetwork, Stage};
use crate::npy;
use crate::preprocess::{ImageError, RgbImage};
use crate::provenance::{SOURCE_HASH, SourceDigest, VERSION, sha256_hex};
use crate::scoring::ScoreMode;
use crate::synthetic::{Cutout, CutoutError, OutlierKind, PastedObject, PlacedOutlier, paste_outliers};
use crate::visualize::{
    CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize_classes, finite_range, mask_overlay, rgb_to_rgba, score_overlay_in_range,
};
use crate::weights::byte_source::{BlobBytes, ByteSource, js_message};
use crate::weights::safetensors::{Float32Layout, SafetensorsCheckpoint};
use crate::weights::{FORMAT_HEAD_BYTES, StagedLoad, WeightsError, checkpoint_format, detect_config, load_network, open_source};

/// What the page is told when a request fails: each variant's text is the message it shows.
#[derive(Debug, Error)]
pub enum WebError {
    #[cfg(feature = "wgpu")]
    #[error("WebGPU could not start: {0}")]
    WebGpu(#[from] WgpuInitError),
    #[cfg(not(feature = "wgpu"))]
    #[error("this module runs the network on the CPU only (the page loads the WebGPU one for a GPU)")]
    CpuOnlyModule,
    #[error("no model is loaded")]
    NoModel,
    #[error("no image has been segmented yet")]
    NoImage,
    #[error("no image was kept as before: keep one, segment the changed image, then compare")]
    NoBefore,
    #[error("this session runs on the CPU: it has no GPU device")]
    NoGpuDevice,
    #[error("unknown score mode `{0}`: energy, entropy, max-softmax or max-logit")]
    UnknownMode(String),
    #[error("unknown head `{0}`: out1 (closed set) or out2 (with RPL)")]
    UnknownHead(String),
    #[error("unknown stage `{0}`: trunk, aspp, residual block, decoder or score")]
    UnknownStage(String),
    #[error("unknown GPU convolution `{0}`: one of {known}", known = GpuConvolution::ON_THE_PAGE.map(GpuConvolution::name).join(", "))]
    UnknownConvolution(String),
    #[error("unknown outlier kind `{0}`: one of {known}", known = OutlierKind::ALL.map(OutlierKind::name).join(", "))]
    UnknownOutlier(String),
    #[error("the objects to paste are not a list of {{kind, x, y, size, seed}} or {{cutout, x, y, size}} with finite numbers: {0}")]
    BadPlacements(String),
    #[error(transparent)]
    Cutout(#[from] CutoutError),
    #[error("no RPL network has width 1/{0}")]
    UnknownWidth(usize),
    #[error(
        "{width}x{height} is too large for this device: the network's largest tensor would take {needed_mb} MB, \
         one buffer holds at most {limit_mb} MB; choose a smaller inference size"
    )]
    TooLarge { width: usize, height: usize, needed_mb: u64, limit_mb: u64 },
    #[error("reading the {stage} output back from the device failed: {reason}")]
    StageReadback { stage: &'static str, reason: String },
    #[error("loading {0} was cancelled; the model in use is kept")]
    Cancelled(String),
    #[error(
        "{name} holds {weights_mb} MB of weights; this browser's WebAssembly memory has room for {room_mb} MB \
         more (4 GiB at most): use WebGPU, or a smaller model"
    )]
    NoRoom { name: String, weights_mb: u64, room_mb: u64 },
    #[error("loading stopped: {0}")]
    Callback(String),
    #[error("writing the .npy file failed: {0}")]
    Npy(std::io::Error),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
}

impl WebError {
    /// The `code` of the JS Error (`www/rpl.js` turns it into one of its Error classes): what a
    /// program tests, where the message is what a person reads.
    pub fn code(&self) -> &'static str {
        match self {
            #[cfg(feature = "wgpu")]
            WebError::WebGpu(_) => "webgpu-failed",
            #[cfg(not(feature = "wgpu"))]
            WebError::CpuOnlyModule => "backend-unavailable",
            WebError::NoGpuDevice => "no-gpu-device",
            WebError::StageReadback { .. } | WebError::Inference(_) => "readback-failed",
            WebError::NoModel => "no-model",
            WebError::Weights(_) => "bad-model",
            WebError::NoRoom { .. } => "model-too-large",
            WebError::Callback(_) => "load-stopped",
            WebError::Cancelled(_) => "cancelled",
            WebError::NoImage | WebError::NoBefore => "no-image",
            WebError::Image(_) => "bad-image",
            WebError::TooLarge { .. } => "image-too-large",
            WebError::Analysis(AnalysisError::MaskSize { .. } | AnalysisError::MaskValues { .. } | AnalysisError::Metrics(_)) => {
                "bad-mask"
            }
            WebError::Analysis(_)
            | WebError::UnknownMode(_)
            | WebError::UnknownHead(_)
            | WebError::UnknownStage(_)
            | WebError::UnknownConvolution(_)
            | WebError::UnknownOutlier(_)
            | WebError::BadPlacements(_)
            | WebError::Cutout(_)
            | WebError::UnknownWidth(_) => "bad-argument",
            WebError::Npy(_) => "export-failed",
        }
    }
}

impl From<WebError> for JsValue {
    fn from(error: WebError) -> Self {
        // A JS Error whose message is the Display text (what the page shows), with its code.
        let js: JsValue = JsError::new(&error.to_string()).into();
        set(js.unchecked_ref(), "code", error.code());
        js
    }
}

/// The threaded module's pool: `startThreadPool(n)` (a Promise; n >= 2) computes on `n` threads,
/// the calling Worker's and n - 1 Web Workers sharing this module's memory; the page calls it
/// once, before `RplSession.start`.
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = startThreadPool)]
pub fn start_thread_pool(threads: usize) -> js_sys::Promise {
    crate::cpu::frames_on_the_calling_thread();
    wasm_bindgen_rayon::init_thread_pool(threads.saturating_sub(1).max(1))
}

#[wasm_bindgen(start)]
fn start() {
    // The static constructors (the WGSL compiler's registries) run here, once. A module whose
    // exports never call them gets a call to them at the start of every export from the linker:
    // they then ran on each of the thousands of calls from JS a frame makes (the CPU path's
    // width-1/8 128x64 frame on one thread: 41 -> 28 ms).
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker's function that runs the constructors, called before any other export.
    unsafe { __wasm_call_ctors() };
    console_error_panic_hook::set_once();
}

/// How many times this module's static constructors have run (one of them counts): 1 once the
/// module started, and still 1 after any number of calls into it. For the tests.
#[wasm_bindgen(js_name = constructorRuns)]
pub fn constructor_runs() -> u32 {
    CONSTRUCTOR_RUNS.load(Ordering::Relaxed)
}

static CONSTRUCTOR_RUNS: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_constructor_run() {
    CONSTRUCTOR_RUNS.fetch_add(1, Ordering::Relaxed);
}

/// A static constructor of ours, as the registries' are (a function in `.init_array`), to count.
#[used]
#[unsafe(link_section = ".init_array")]
static COUNT_CONSTRUCTOR_RUNS: extern "C" fn() = count_constructor_run;

/// `work` awaited; in the threaded module (the CPU only, where every future is ready at once) run
/// to completion on this Worker's thread, the pool serving its passes ([`crate::cpu::on_pool`]).
#[cfg(feature = "threads")]
async fn computed<R: Send>(device: &Device, work: impl Future<Output = R> + Send) -> R {
    crate::cpu::finish_on_pool(device, work)
}

#[cfg(not(feature = "threads"))]
async fn computed<R>(_device: &Device, work: impl Future<Output = R>) -> R {
    work.await
}

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    Reflect::set(object, &JsValue::from_str(key), &value.into()).expect("setting a property of a plain object");
}

/// `{out1, out2}` from a pair in [`Head::BOTH`] order.
fn per_head(values: [JsValue; 2]) -> Object {
    let object = Object::new();
    for (head, value) in Head::BOTH.into_iter().zip(values) {
        set(&object, head.name(), value);
    }
    object
}

fn parse_head(name: &str) -> Result<Head, WebError> {
    Head::from_name(name).ok_or_else(|| WebError::UnknownHead(name.to_owned()))
}

fn parse_mode(name: &str) -> Result<ScoreMode, WebError> {
    ScoreMode::from_name(name).ok_or_else(|| WebError::UnknownMode(name.to_owned()))
}

#[cfg(feature = "wgpu")]
thread_local! {
    /// The page's callbacks for a lost GPU device, one per session started. wgpu wants a `Send`
    /// callback and a JS function is not `Send`: the callback wgpu keeps holds an index here.
    static DEVICE_LOST_LISTENERS: RefCell<Vec<Function>> = const { RefCell::new(Vec::new()) };
}

/// wgpu's handle on a WebGPU device (none in the CPU-only threaded module).
#[cfg(feature = "wgpu")]
type GpuDevice = wgpu::Device;
#[cfg(not(feature = "wgpu"))]
type GpuDevice = std::convert::Infallible;

/// The WebGPU device, wgpu's handle on it and the largest buffer one tensor may take (cubecl asks
/// the adapter for its own limits, not WebGPU's defaults); its limits go into `info`.
#[cfg(feature = "wgpu")]
async fn start_webgpu(info: &Object, on_device_lost: Function) -> Result<(Device, GpuDevice, u64), WebError> {
    let (device, setup) = Device::wgpu_options().init_with_setup_async().await?;
    let limits = setup.device.limits();
    set(info, "backend", "webgpu");
    set(info, "maxBufferSize", limits.max_buffer_size as f64);
    set(info, "maxStorageBufferBindingSize", limits.max_storage_buffer_binding_size as f64);
    watch_device_loss(&setup.device, on_device_lost);
    Ok((device, setup.device, limits.max_buffer_size.min(limits.max_storage_buffer_binding_size as u64)))
}

/// The threaded module has no WebGPU: the page starts the other one for a GPU.
#[cfg(not(feature = "wgpu"))]
async fn start_webgpu(_info: &Object, _on_device_lost: Function) -> Result<(Device, GpuDevice, u64), WebError> {
    Err(WebError::CpuOnlyModule)
}

/// Calls `listener(sentence)` once wgpu reports `device` lost (destroyed, or taken by the browser
/// or driver). wgpu's WebGPU backend adds a handler to `GPUDevice.lost`, next to cubecl's own.
#[cfg(feature = "wgpu")]
fn watch_device_loss(device: &wgpu::Device, listener: Function) {
    let index = DEVICE_LOST_LISTENERS.with(|listeners| {
        let mut listeners = listeners.borrow_mut();
        listeners.push(listener);
        listeners.len() - 1
    });
    device.set_device_lost_callback(move |reason, message| {
        let reason = match reason {
            wgpu::DeviceLostReason::Destroyed => "destroyed",
            wgpu::DeviceLostReason::Unknown => "no reason given",
        };
        let detail = if message.trim().is_empty() { reason.to_owned() } else { format!("{reason}: {}", message.trim()) };
        let sentence = JsValue::from_str(&format!("the GPU device was lost ({detail})"));
        DEVICE_LOST_LISTENERS.with(|listeners| {
            if let Some(listener) = listeners.borrow().get(index) {
                // Nothing to do with a throwing listener: the session is over either way.
                let _ = listener.call1(&JsValue::NULL, &sentence);
            }
        });
    });
}

/// On the CPU backend one tensor stays under this: several live at once in a 4 GiB wasm heap.
const CPU_MAX_TENSOR_BYTES: u64 = 512 << 20;

/// No RPL checkpoint comes near this (the released one is 672 MB, with an optimiser's state
/// under 3 GB): a larger file is refused before anything is read.
const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;
/// WebAssembly's 32-bit address space.
const WASM_ADDRESS_SPACE: u64 = 4 << 30;
/// Room a CPU session keeps beside the weights for one image's activations.
const CPU_ACTIVATION_ROOM: u64 = 1 << 30;
/// Weights read between two progress reports (and chances to cancel).
const LOAD_STEP_BYTES: u64 = 16 << 20;

/// `{tensors, totalTensors, bytes, totalBytes}`: how far a load has come, in float32 weights.
fn load_progress(load: &StagedLoad) -> Object {
    let progress = Object::new();
    set(&progress, "tensors", load.done() as u32);
    set(&progress, "totalTensors", load.entries().len() as u32);
    set(&progress, "bytes", load.done_bytes() as f64);
    set(&progress, "totalBytes", load.total_bytes() as f64);
    progress
}

/// The last segmented image, kept for follow-up questions from the page.
struct LastImage {
    image: RgbImage,
    live: LiveResult,
    /// Train ids (argmax) of out1 and out2, row-major H x W.
    classes: [Vec<u8>; 2],
    /// Both heads' scores in the mode last asked for.
    scores: RefCell<ImageScores>,
    mode: Cell<ScoreMode>,
}

/// An image kept to compare the next one with (the experiment's before and after).
struct BeforeImage {
    last: Rc<LastImage>,
    /// Its scores in the mode of the last comparison.
    scores: Option<ImageScores>,
}

/// A network on a device (WebGPU or the CPU) and the last image it segmented.
#[wasm_bindgen]
pub struct RplSession {
    device: Device,
    /// wgpu's handle on the WebGPU device; `None` on the CPU.
    gpu: Option<GpuDevice>,
    /// The largest buffer one tensor may occupy: the adapter's binding limit on WebGPU.
    max_tensor_bytes: u64,
    /// The float type tensors take on this device (float16 halves every activation).
    precision: Precision,
    /// What [`Self::start`] chose, for the page.
    info: Object,
    /// Shared so that a running inference keeps its network while new weights load.
    network: RefCell<Option<Rc<RplNetwork>>>,
    last: RefCell<Option<Rc<LastImage>>>,
    before: RefCell<Option<BeforeImage>>,
}

#[wasm_bindgen]
impl RplSession {
    /// Starts on WebGPU (with the adapter's maximum buffer and binding sizes), or on burn's CPU
    /// backend when `webgpu` is false; in float16 when `half_precision` is true and the device
    /// offers it; on WebGPU its convolutions run as `convolution` says ("direct", "products",
    /// "implicit" or "tiles": [`GpuConvolution::ON_THE_PAGE`]). `on_device_lost(sentence)` is called if the GPU device is
    /// lost later.
    pub async fn start(webgpu: bool, half_precision: bool, convolution: String, on_device_lost: Function) -> Result<RplSession, WebError> {
        let convolution = GpuConvolution::on_the_page(&convolution).ok_or(WebError::UnknownConvolution(convolution))?;
        // One session per Worker: the choice is the module's, as it is the process's natively.
        set_gpu_convolution(if webgpu { convolution } else { GpuConvolution::Direct });
        let info = Object::new();
        let (mut device, gpu, max_tensor_bytes) = if webgpu {
            let (device, gpu, max_tensor_bytes) = start_webgpu(&info, on_device_lost).await?;
            set(&info, "convolution", convolution.name());
            (device, Some(gpu), max_tensor_bytes)
        } else {
            let threads = crate::cpu::threads();
            set(&info, "backend", "cpu");
            set(&info, "threads", threads as f64);
            let simd = if cfg!(target_feature = "simd128") { "WebAssembly SIMD" } else { "WebAssembly" };
            let plural = if threads == 1 { "" } else { "s" };
            set(&info, "adapter", format!("burn flex ({simd}, {threads} thread{plural})"));
            (Device::flex(), None, CPU_MAX_TENSOR_BYTES)
        };
        let mut precision = if half_precision { Precision::F16 } else { Precision::F32 };
        if let Err(e) = set_precision(&mut device, precision) {
            set(&info, "halfPrecisionError", e.to_string());
            precision = Precision::F32;
        }
        set(&info, "dtype", precision.name());
        set(&info, "build", build_info());
        Ok(Self { device, gpu, max_tensor_bytes, precision, info, network: RefCell::new(None), last: RefCell::new(None), before: RefCell::new(None) })
    }

    /// `{backend, dtype, build, convolution, maxBufferSize, maxStorageBufferBindingSize}` (WebGPU) or
    /// `{backend, adapter, dtype, build}` (CPU; `build`: [`build_info`]), and `halfPrecisionError`
    /// where float16 was asked for and refused (the Worker names a WebGPU adapter: the browser
    /// describes it better than wgpu sees it).
    pub fn info(&self) -> Object {
        Object::assign(&Object::new(), &self.info)
    }

    /// The most pixels the loaded network can take on this device: its largest activation must
    /// fit one buffer. The page shrinks larger images to this.
    #[wasm_bindgen(js_name = maxInferencePixels)]
    pub fn max_inference_pixels(&self) -> Result<f64, WebError> {
        let network = self.network()?;
        Ok((self.max_tensor_bytes / network.config.largest_activation_bytes_per_pixel(self.precision.bytes()) as u64) as f64)
    }

    /// What the device's allocator holds (GPU), for the page's memory accounting.
    #[wasm_bindgen(js_name = memoryUsage)]
    pub fn memory_usage(&self) -> Object {
        let info = Object::new();
        if let Some(usage) = self.device.memory_pool_usage() {
            set(&info, "deviceBytesReserved", usage.bytes_reserved as f64);
            set(&info, "deviceBytesInUse", usage.bytes_in_use as f64);
        }
        info
    }

    /// Destroys the GPU device, as a driver reset would lose it: for tests of the recovery.
    #[wasm_bindgen(js_name = destroyDevice)]
    pub fn destroy_device(&self) -> Result<(), WebError> {
        let gpu = self.gpu.as_ref().ok_or(WebError::NoGpuDevice)?;
        #[cfg(feature = "wgpu")]
        {
            gpu.destroy();
            Ok(())
        }
        #[cfg(not(feature = "wgpu"))]
        match *gpu {}
    }

    /// Loads a safetensors checkpoint (float32 or float16, any RPL width); `name` is used in
    /// messages. Returns `{description, bytes, sha256}` (the network, and the file's size and hash).
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, name: String, bytes: Vec<u8>) -> Result<Object, WebError> {
        let sha256 = sha256_hex(&bytes).map_err(|source| WeightsError::Io { path: name.clone(), source })?;
        let size = bytes.len() as u64;
        let source = SafetensorsCheckpoint::from_bytes(name, bytes)?;
        let network = load_network(&source, &self.device)?.fold_batch_norms();
        Ok(self.use_network(network, size, Some(sha256)))
    }

    /// Loads a checkpoint from a `File` or `Blob`, read in slices (never whole): a `.pth` as
    /// `torch.save` writes it (plain or wrapped) or safetensors (float32, float16 or int8). Between
    /// steps of about 16 MB, awaits `on_progress({tensors, totalTensors, bytes, totalBytes})`: a
    /// promise of false cancels. With `keep`, each tensor is also handed to `keep(offset, bytes)` as
    /// a float32 safetensors file (the header first, at offset 0) for the page to store. The
    /// model in use stays until the new one is complete. Returns `{description, bytes, sha256:
    /// null}` (the file's hash takes a [`FileDigest`] of its own, which the Worker runs between
    /// requests: a load does not wait for it).
    #[wasm_bindgen(js_name = loadFile)]
    pub async fn load_file(&self, file: web_sys::Blob, name: String, on_progress: Function, keep: Option<Function>) -> Result<Object, WebError> {
        let io_error = |source| WeightsError::Io { path: name.clone(), source };
        let bytes = BlobBytes::new(file).map_err(io_error)?;
        if bytes.len() > MAX_CHECKPOINT_BYTES {
            return Err(WeightsError::TooLarge { origin: name, size_mb: bytes.len() >> 20, limit_mb: MAX_CHECKPOINT_BYTES >> 20 }.into());
        }
        let head = bytes.read_at(0, FORMAT_HEAD_BYTES).map_err(io_error)?;
        let size = bytes.len();
        let source = open_source(name.clone(), Box::new(bytes), checkpoint_format(&name, &head)?)?;
        let config = detect_config(source.as_ref())?;
        let mut load = StagedLoad::new(source.as_ref(), config, &self.device)?;
        let weights = load.total_bytes() / 4 * self.precision.bytes() as u64;
        if self.gpu.is_none() {
            let used = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>().buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64;
            let room = WASM_ADDRESS_SPACE.saturating_sub(used + CPU_ACTIVATION_ROOM);
            if weights > room {
                return Err(WebError::NoRoom { name, weights_mb: weights >> 20, room_mb: room >> 20 });
            }
        }
        let layout = match &keep {
            Some(keep) => {
                let layout = Float32Layout::new(load.entries(), config)?;
                call_keep(keep, 0, &layout.header)?;
                Some(layout)
            }
            None => None,
        };
        // The first failure to hand a tensor to `keep`: it ends the load.
        let keep_error = RefCell::new(None);
        let mut on_values = |key: &str, values: &[f32]| {
            let failed = keep_error.borrow().is_some();
            if let (Some(keep), Some(layout), false) = (&keep, &layout, failed) {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                *keep_error.borrow_mut() = call_keep(keep, layout.offsets[key], &bytes).err();
            }
        };
        loop {
            let done = load.step(LOAD_STEP_BYTES, &self.device, &mut on_values)?;
            if let Some(error) = keep_error.borrow_mut().take() {
                return Err(error);
            }
            let reply = on_progress.call1(&JsValue::NULL, &load_progress(&load)).map_err(|e| WebError::Callback(js_message(&e)))?;
            let go_on = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&reply)).await.map_err(|e| WebError::Callback(js_message(&e)))?;
            if go_on.is_falsy() {
                return Err(WebError::Cancelled(name));
            }
            if done {
                break;
            }
        }
        let network = load.finish().fold_batch_norms();
        Ok(self.use_network(network, size, None))
    }

    /// Random weights of the given width (1 = the released size): for benchmarks only.
    #[wasm_bindgen(js_name = loadRandomWeights)]
    pub fn load_random_weights(&self, width_divisor: usize) -> Result<String, WebError> {
        let config = RplConfig { width_divisor, ..RplConfig::RELEASED };
        if !config.is_valid() {
            return Err(WebError::UnknownWidth(width_divisor));
        }
        *self.network.borrow_mut() = Some(Rc::new(arrange_weights(RplNetwork::new(config, &self.device).fold_batch_norms())));
        Ok(format!("{} (random weights)", config.describe()))
    }

    /// Benchmarks: runs the network on an RGBA image through `stage` ("trunk", "aspp", "residual
    /// block", "decoder"; "score": the whole pass and the energy of out2 at the image's size) and
    /// waits for that result. The Worker times each call; stage times are the differences. Replies
    /// how many convolutions ran each way (`{kernel, products, implicit, taps, tiles}`: burn's
    /// kernel, matrix products, the implicit routine, our CPU kernel, our register tiles).
    #[wasm_bindgen(js_name = runThrough)]
    pub async fn run_through(&self, width: usize, height: usize, rgba: Uint8Array, stage: String) -> Result<Object, WebError> {
        let last_stage = match stage.as_str() {
            "score" => None,
            name => Some(Stage::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| WebError::UnknownStage(stage.clone()))?),
        };
        let network = self.network_for(width, height)?;
        let image = RgbImage::from_interleaved(width, height, 4, &rgba.to_vec())?;
        let before = convolutions_run();
        let (network, device) = (&*network, &self.device);
        computed(device, async {
            let input = image.to_input(device);
            match last_stage {
                None => {
                    LiveResult::new(network.forward_to_decoder(input)).score(Head::Out2, ScoreMode::Energy).await?;
                }
                Some(stage) => {
                    // One value read back waits for all the work queued before it.
                    let output = network.forward_through(input, stage).slice([0..1, 0..1, 0..1, 0..1]);
                    output.into_data_async().await.map_err(|e| WebError::StageReadback { stage: stage.name(), reason: e.to_string() })?;
                }
            }
            Ok::<_, WebError>(())
        })
        .await?;
        let convolutions = Object::new();
        for ((path, after), before) in CONVOLUTION_PATHS.into_iter().zip(convolutions_run()).zip(before) {
            set(&convolutions, path, (after - before) as f64);
        }
        Ok(convolutions)
    }

    /// Segments an RGBA image (`rgba`, a JS array: copied into the module only once the size is
    /// accepted) and scores it in `mode` (energy, entropy, max-softmax, max-logit). Returns what
    /// the page draws: `{width, height, classImages: {out1, out2}, classesPresent, mode,
    /// baseline, scoreRange}`: each head's class map as RGBA, the train ids either head uses,
    /// and the range of both heads' scores. [`Self::result_arrays`] has the maps themselves.
    pub async fn segment(&self, width: usize, height: usize, rgba: Uint8Array, mode: String) -> Result<Object, WebError> {
        let mode = parse_mode(&mode)?;
        let network = self.network_for(width, height)?;
        let image = RgbImage::from_interleaved(width, height, 4, &rgba.to_vec())?;
        let (network, device) = (&*network, &self.device);
        let (live, (classes, scores)) = computed(device, async {
            let live = LiveResult::run(network, &image, device);
            let maps = live.class_maps_and_scores(mode).await?;
            Ok::<_, WebError>((live, maps))
        })
        .await?;
        let scores = ImageScores::new(width, height, scores)?;

        let result = scores_summary(mode, &scores);
        set(&result, "width", width as u32);
        set(&result, "height", height as u32);
        set(&result, "classImages", per_head(classes.each_ref().map(|c| Uint8Array::from(rgb_to_rgba(&colorize_classes(c)).as_slice()).into())));
        let mut present = [false; 256];
        for &class in classes.iter().flatten() {
            present[usize::from(class)] = true;
        }
        let present: Vec<u8> = (0..=255u8).filter(|&c| present[usize::from(c)]).collect();
        set(&result, "classesPresent", Uint8Array::from(present.as_slice()));
        *self.last.borrow_mut() = Some(Rc::new(LastImage { image, live, classes, scores: RefCell::new(scores), mode: Cell::new(mode) }));
        Ok(result)
    }

    /// The last image's full maps, for tests and tools: `{classes: {out1, out2}, scores: {out1,
    /// out2}}`, train ids (Uint8Array) and scores in the current mode (Float32Array), row-major.
    #[wasm_bindgen(js_name = resultArrays)]
    pub fn result_arrays(&self) -> Result<Object, WebError> {
        let last = self.last_image()?;
        let scores = last.scores.borrow();
        let result = Object::new();
        set(&result, "classes", per_head(last.classes.each_ref().map(|c| Uint8Array::from(c.as_slice()).into())));
        set(&result, "scores", per_head(Head::BOTH.map(|head| Float32Array::from(scores.head(head)).into())));
        Ok(result)
    }

    /// The last image's scores in another mode (no new network pass): `{mode, baseline, scoreRange}`.
    pub async fn rescore(&self, mode: String) -> Result<Object, WebError> {
        let mode = parse_mode(&mode)?;
        let last = self.last_image()?;
        let scores = ImageScores::new(last.live.width, last.live.height, last.live.scores(mode).await?)?;
        let result = scores_summary(mode, &scores);
        *last.scores.borrow_mut() = scores;
        last.mode.set(mode);
        Ok(result)
    }

    /// One pixel of the last image: `{classes, names, probabilities, scores}`, each `{out1, out2}`
    /// (train id, class name, Float32Array over the classes, score).
    #[wasm_bindgen(js_name = pixelInfo)]
    pub async fn pixel_info(&self, x: usize, y: usize) -> Result<Object, WebError> {
        let last = self.last_image()?;
        // Checked before any readback; taken out of the cell before the await.
        let score = last.scores.borrow().at(x, y)?;
        let report = PixelReport::new(&last.live.pixel_logits(x, y).await?, score);
        let name = |class: u8| CITYSCAPES_CLASSES.get(usize::from(class)).copied().unwrap_or("?");
        let info = Object::new();
        set(&info, "classes", per_head(report.class.map(JsValue::from)));
        set(&info, "names", per_head(report.class.map(|c| JsValue::from(name(c)))));
        set(&info, "probabilities", per_head(report.probabilities.each_ref().map(|p| Float32Array::from(p.as_slice()).into())));
        set(&info, "scores", per_head(report.score.map(JsValue::from)));
        Ok(info)
    }

    /// RGBA: the last image (with `before`, the one kept by [`Self::keep_before`], scored at the
    /// last comparison) with the score of `head` ("out1" or "out2") as a heat map over
    /// `[lo, hi]`, blended with weight `opacity`.
    #[wasm_bindgen(js_name = heatImage)]
    pub fn heat_image(&self, head: String, lo: f32, hi: f32, opacity: f32, before: bool) -> Result<Uint8Array, WebError> {
        let head = parse_head(&head)?;
        let overlay = |image: &RgbImage, scores: &ImageScores| {
            let rgb = score_overlay_in_range(&image.pixels, scores.head(head), (lo, hi), opacity.clamp(0.0, 1.0));
            Uint8Array::from(rgb_to_rgba(&rgb).as_slice())
        };
        if before {
            let kept = self.before.borrow();
            let Some(BeforeImage { last, scores: Some(scores) }) = kept.as_ref() else { return Err(WebError::NoBefore) };
            return Ok(overlay(&last.image, scores));
        }
        let last = self.last_image()?;
        Ok(overlay(&last.image, &last.scores.borrow()))
    }

    /// Keeps the last image as the experiment's "before", to compare the next one with.
    #[wasm_bindgen(js_name = keepBefore)]
    pub fn keep_before(&self) -> Result<(), WebError> {
        *self.before.borrow_mut() = Some(BeforeImage { last: self.last_image()?, scores: None });
        Ok(())
    }

    /// What changed on `object` (nonzero on its pixels; the last image's size) from the image
    /// kept by [`Self::keep_before`] to the last one, both scored in the last image's mode:
    /// `{pixels, inside: {out1, out2}, outside: {out1, out2}, out1Class: {id, name, share,
    /// confidence}, sameClassOnInliers}`, each head's `{before, after, change}` mean scores;
    /// `truth`, the image's ground truth, where it has one (`truth_width` x `truth_height`).
    #[wasm_bindgen(js_name = objectChange)]
    pub async fn object_change(&self, object: Vec<u8>, truth: Option<Vec<u8>>, truth_width: usize, truth_height: usize) -> Result<Object, WebError> {
        let last = self.last_image()?;
        let kept = self.before.borrow().as_ref().map(|b| b.last.clone()).ok_or(WebError::NoBefore)?;
        let mode = last.mode.get();
        let before = ImageScores::new(kept.live.width, kept.live.height, kept.live.scores(mode).await?)?;
        let logits = last.live.logits(Head::Out1).await?;
        let classes = last.classes.each_ref().map(Vec::as_slice);
        if let Some(truth) = &truth {
            check_mask(truth, truth_width, truth_height, last.live.width, last.live.height)?;
        }
        let change = last.scores.borrow().object_change(&before, &object, &logits, classes, truth.as_deref())?;
        if let Some(kept) = self.before.borrow_mut().as_mut() {
            kept.scores = Some(before);
        }
        Ok(object_change_report(&change))
    }

    /// `{share, rgba}`: the pixels whose score of `head` is above `threshold`, over the dimmed image.
    #[wasm_bindgen(js_name = maskImage)]
    pub fn mask_image(&self, head: String, threshold: f32) -> Result<Object, WebError> {
        let head = parse_head(&head)?;
        let last = self.last_image()?;
        let (share, mask) = last.scores.borrow().threshold(head, threshold);
        let result = Object::new();
        set(&result, "share", share);
        set(&result, "rgba", Uint8Array::from(rgb_to_rgba(&mask_overlay(&last.image.pixels, &mask)).as_slice()));
        Ok(result)
    }

    /// Metrics of both heads' current scores against a ground-truth mask of the image's size
    /// (0 inlier, 1 OoD, 255 ignored): `{out1, out2}`, each `{auroc, ap, fpr95, nInlier, nOod,
    /// roc, pr}` with the curves as flat `[x0, y0, x1, y1, ...]` Float64Arrays.
    #[wasm_bindgen(js_name = evaluateMask)]
    pub fn evaluate_mask(&self, width: usize, height: usize, mask: Vec<u8>) -> Result<Object, WebError> {
        let last = self.last_image()?;
        let evaluations = last.scores.borrow().evaluate(&mask, width, height)?;
        let flat = |points: &[[f64; 2]]| Float64Array::from(points.iter().flatten().copied().collect::<Vec<f64>>().as_slice());
        Ok(per_head(evaluations.each_ref().map(|evaluation| {
            let object = Object::new();
            let m = &evaluation.metrics;
            set(&object, "auroc", m.auroc);
            set(&object, "ap", m.ap);
            set(&object, "fpr95", m.fpr95);
            set(&object, "nInlier", m.n_inlier as f64);
            set(&object, "nOod", m.n_ood as f64);
            set(&object, "roc", flat(&evaluation.curves.roc));
            set(&object, "pr", flat(&evaluation.curves.precision_recall));
            object.into()
        })))
    }

    /// The current score of `head` as a float32 `.npy` file (H x W), as the command line writes it.
    #[wasm_bindgen(js_name = scoreNpy)]
    pub fn score_npy(&self, head: String) -> Result<Uint8Array, WebError> {
        let head = parse_head(&head)?;
        let last = self.last_image()?;
        let scores = last.scores.borrow();
        let mut bytes = Vec::new();
        npy::write_f32(&mut bytes, &[scores.height(), scores.width()], scores.head(head)).map_err(WebError::Npy)?;
        Ok(Uint8Array::from(bytes.as_slice()))
    }
}

impl RplSession {
    /// Puts `network` in use; `{description, bytes, sha256}` for the page.
    fn use_network(&self, network: RplNetwork, bytes: u64, sha256: Option<String>) -> Object {
        let reply = Object::new();
        set(&reply, "description", network.config.describe());
        set(&reply, "bytes", bytes as f64);
        set(&reply, "sha256", sha256.map_or(JsValue::NULL, JsValue::from));
        *self.network.borrow_mut() = Some(Rc::new(arrange_weights(network)));
        reply
    }

    fn network(&self) -> Result<Rc<RplNetwork>, WebError> {
        self.network.borrow().clone().ok_or(WebError::NoModel)
    }

    fn last_image(&self) -> Result<Rc<LastImage>, WebError> {
        self.last.borrow().clone().ok_or(WebError::NoImage)
    }

    /// The loaded network, once a `width` x `height` image is known to fit the device's buffers.
    fn network_for(&self, width: usize, height: usize) -> Result<Rc<RplNetwork>, WebError> {
        let network = self.network()?;
        let needed = (width * height * network.config.largest_activation_bytes_per_pixel(self.precision.bytes())) as u64;
        if needed > self.max_tensor_bytes {
            return Err(WebError::TooLarge { width, height, needed_mb: needed >> 20, limit_mb: self.max_tensor_bytes >> 20 });
        }
        Ok(network)
    }
}

/// Hands `bytes` for `offset` of the kept file to the page's `keep` function.
fn call_keep(keep: &Function, offset: u64, bytes: &[u8]) -> Result<(), WebError> {
    keep.call2(&JsValue::NULL, &JsValue::from(offset as f64), &Uint8Array::from(bytes))
        .map(|_| ())
        .map_err(|e| WebError::Callback(js_message(&e)))
}

/// [`RplSession::object_change`]'s reply.
fn object_change_report(change: &ObjectChange) -> Object {
    let means = |pairs: &[[f64; 2]; 2]| {
        per_head(pairs.map(|[before, after]| {
            let mean = Object::new();
            set(&mean, "before", before);
            set(&mean, "after", after);
            set(&mean, "change", after - before);
            mean.into()
        }))
    };
    let report = Object::new();
    set(&report, "pixels", change.pixels as u32);
    set(&report, "inside", means(&change.inside));
    set(&report, "outside", means(&change.outside));
    let class = Object::new();
    set(&class, "id", change.out1_class);
    set(&class, "name", CITYSCAPES_CLASSES.get(usize::from(change.out1_class)).copied().unwrap_or("?"));
    set(&class, "share", change.out1_class_share);
    set(&class, "confidence", change.out1_confidence);
    set(&report, "out1Class", class);
    set(&report, "sameClassOnInliers", change.same_class_on_inliers);
    report
}

/// `{mode, baseline, scoreRange: [lo, hi]}`: the range covers both heads (one colour scale).
fn scores_summary(mode: ScoreMode, scores: &ImageScores) -> Object {
    let result = Object::new();
    set(&result, "mode", mode.name());
    set(&result, "baseline", mode.is_baseline());
    let (lo, hi) = finite_range(scores.head(Head::Out1).iter().chain(scores.head(Head::Out2)));
    set(&result, "scoreRange", Array::of2(&JsValue::from(lo), &JsValue::from(hi)));
    result
}

/// A file's SHA-256, computed a step at a time: the Worker runs the steps between requests,
/// so that a model is in use before its 672 MB are hashed (about 150 MB/s in WebAssembly).
#[wasm_bindgen]
pub struct FileDigest {
    file: BlobBytes,
    digest: Option<SourceDigest>,
}

#[wasm_bindgen]
impl FileDigest {
    #[wasm_bindgen(constructor)]
    pub fn new(file: web_sys::Blob) -> Result<FileDigest, WebError> {
        let file = BlobBytes::new(file).map_err(|source| WeightsError::Io { path: "the model file".into(), source })?;
        let digest = Some(SourceDigest::new(&file));
        Ok(Self { file, digest })
    }

    /// Hashes about `bytes` more of the file; the SHA-256 (lowercase hex) once it is all hashed,
    /// else undefined.
    pub fn step(&mut self, bytes: f64) -> Result<Option<String>, WebError> {
        let error = |source| WeightsError::Io { path: "the model file".into(), source };
        let Some(digest) = self.digest.as_mut() else { return Ok(None) };
        let end = digest.hashed().saturating_add(bytes as u64);
        digest.advance(&self.file, end).map_err(error)?;
        if end < self.file.len() {
            return Ok(None);
        }
        let digest = self.digest.take().expect("checked above");
        Ok(Some(digest.finish(&self.file).map_err(error)?))
    }
}

/// `{version, source, module}`: the project's version, the hash of the sources this module was
/// built from (as `rpl --version` prints it), and which of the two modules this is: `webgpu`
/// (WebGPU, or the CPU on one thread) or `threads` (the CPU on a pool of Workers).
#[wasm_bindgen(js_name = buildInfo)]
pub fn build_info() -> Object {
    let info = Object::new();
    set(&info, "version", VERSION);
    set(&info, "source", SOURCE_HASH);
    set(&info, "module", if cfg!(feature = "threads") { "threads" } else { "webgpu" });
    info
}

/// `[{name, heldOut}]`: the generator's outlier kinds (held out: never in the demo model's training).
#[wasm_bindgen(js_name = outlierKinds)]
pub fn outlier_kinds() -> Array {
    OutlierKind::ALL
        .iter()
        .map(|kind| {
            let entry = Object::new();
            set(&entry, "name", kind.name());
            set(&entry, "heldOut", kind.is_held_out());
            JsValue::from(entry)
        })
        .collect()
}

/// One object as the page places it: a generator kind (with its seed) or the index of a cut-out,
/// where it stands (bottom centre) and its size, in pixels.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Placement {
    kind: Option<String>,
    cutout: Option<usize>,
    x: f32,
    y: f32,
    size: f32,
    #[serde(default)]
    seed: u64,
}

impl Placement {
    fn placed(&self) -> Result<PlacedOutlier, WebError> {
        let object = match (&self.kind, self.cutout) {
            (Some(kind), None) => PastedObject::Generated(OutlierKind::from_name(kind).ok_or_else(|| WebError::UnknownOutlier(kind.clone()))?),
            (None, Some(index)) => PastedObject::Cutout(index),
            _ => return Err(WebError::BadPlacements("each object has either a kind or a cutout".into())),
        };
        if ![self.x, self.y, self.size].iter().all(|v| v.is_finite()) || self.size <= 0.0 {
            let name = self.kind.clone().unwrap_or_else(|| format!("cut-out {}", self.cutout.unwrap_or_default()));
            return Err(WebError::BadPlacements(format!("{name} at ({}, {}), size {}", self.x, self.y, self.size)));
        }
        Ok(PlacedOutlier { object, foot: [self.x, self.y], size: self.size, seed: self.seed })
    }
}

/// `{rgba, mask, pastedPixels, lastObject}`: the RGBA image `rgba` (`width` x `height`) with the
/// objects of `placements` (JSON: `[{kind, x, y, size, seed} | {cutout, x, y, size}]`) drawn in
/// order, its OoD mask (`base_mask`, the image's own ground truth, or all inlier, with 1 on the
/// objects' pixels), the number of pixels the objects cover and the last object's own pixels.
/// Cut-out `i` is `cutout_pixels[i]`, RGBA of `cutout_sizes[2i]` x `cutout_sizes[2i + 1]`.
#[wasm_bindgen(js_name = pasteOutliers)]
pub fn paste_outliers_rgba(
    width: usize,
    height: usize,
    rgba: Uint8Array,
    base_mask: Option<Vec<u8>>,
    placements: String,
    cutout_sizes: Vec<u32>,
    cutout_pixels: Vec<Uint8Array>,
) -> Result<Object, WebError> {
    let image = RgbImage::from_interleaved(width, height, 4, &rgba.to_vec())?;
    if let Some(mask) = &base_mask {
        check_mask(mask, width, height, width, height)?;
    }
    let placements: Vec<Placement> = serde_json::from_str(&placements).map_err(|e| WebError::BadPlacements(e.to_string()))?;
    let outliers = placements.iter().map(Placement::placed).collect::<Result<Vec<_>, _>>()?;
    if cutout_sizes.len() != 2 * cutout_pixels.len() {
        return Err(WebError::BadPlacements(format!("{} cut-outs with {} sizes", cutout_pixels.len(), cutout_sizes.len())));
    }
    let cutouts = cutout_sizes
        .chunks_exact(2)
        .zip(cutout_pixels)
        .map(|(size, pixels)| Cutout::from_rgba(size[0] as usize, size[1] as usize, pixels.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let pasted = paste_outliers(width, height, &image.pixels, base_mask.as_deref(), &outliers, &cutouts)?;
    let result = Object::new();
    set(&result, "rgba", Uint8Array::from(rgb_to_rgba(&pasted.rgb8).as_slice()));
    set(&result, "mask", Uint8Array::from(pasted.mask.as_slice()));
    set(&result, "pastedPixels", pasted.object_pixels as u32);
    set(&result, "lastObject", Uint8Array::from(pasted.last_object.as_slice()));
    Ok(result)
}

/// `{rgba, width, height, pixels}`: the region of the RGBA image `rgba` (`width` x `height`)
/// inside `outline` (flat `[x0, y0, x1, y1, ...]` in pixels: a rectangle's four corners or a
/// lasso's path), cropped to its box, opaque on its `pixels` pixels and transparent elsewhere.
#[wasm_bindgen(js_name = cutOut)]
pub fn cut_out(width: usize, height: usize, rgba: Uint8Array, outline: Vec<f32>) -> Result<Object, WebError> {
    let points: Vec<[f32; 2]> = outline.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    let cutout = Cutout::cut(width, height, &rgba.to_vec(), &points)?;
    let result = Object::new();
    set(&result, "pixels", cutout.pixels() as u32);
    set(&result, "width", cutout.width as u32);
    set(&result, "height", cutout.height as u32);
    set(&result, "rgba", Uint8Array::from(cutout.rgba8.as_slice()));
    Ok(result)
}

/// `[{id, name, colour: [r, g, b]}]` for every Cityscapes train id.
#[wasm_bindgen(js_name = classLegend)]
pub fn class_legend() -> Array {
    CITYSCAPES_CLASSES
        .iter()
        .zip(CITYSCAPES_PALETTE)
        .enumerate()
        .map(|(id, (name, colour))| {
            let entry = Object::new();
            set(&entry, "id", id as u32);
            set(&entry, "name", *name);
            set(&entry, "colour", colour.iter().map(|&c| JsValue::from(c)).collect::<Array>());
            JsValue::from(entry)
        })
        .collect()
}
