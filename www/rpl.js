// rpl-web's browser API: RPL anomaly segmentation in a page of yours, on the visitor's machine.
// A session owns a Web Worker (worker.js) that runs the network on WebGPU, or on the CPU where
// WebGPU is missing or only a software adapter; nothing leaves the browser. Types: rpl.d.ts.
//
//   import { RplSession } from './rpl.js';
//   const session = await RplSession.create();
//   await session.loadModel('models/rpl-demo.safetensors');
//   const result = await session.segment(imageElement);
//   const { image } = await session.maskImage('out2', result.scoreRange[0] + 1);
//
// The network's two heads are 'out1' (the closed-set network) and 'out2' (with the RPL block):
// in requests, and as the keys of every per-head pair in results.

/** The heads, closed set first. */
export const HEADS = Object.freeze(['out1', 'out2']);

/** The score modes: energy (the paper's), and the baselines. */
export const SCORE_MODES = Object.freeze(['energy', 'entropy', 'max-softmax', 'max-logit']);

/** How WebGPU can run the convolutions: burn's direct kernel (the default), im2col matrix
 * products, implicit matrix products on register tiles (no im2col matrix in memory), or our
 * kernel of register tiles. */
export const CONVOLUTIONS = Object.freeze(['direct', 'products', 'implicit', 'tiles']);

// --- errors --------------------------------------------------------------------------------------

/** Every error of this API: `message` is for people, `code` for programs; `fatal` means the
 * session cannot go on (a lost GPU device, a crashed module): restart() it. */
export class RplError extends Error {
  constructor(message, code = 'failed', { fatal = false, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.fatal = fatal;
  }
}
/** A model that cannot be fetched, read or held (bad-model, model-too-large, no-model, fetch-failed, load-stopped). */
export class ModelError extends RplError {}
/** An image or mask that cannot be used (bad-image, image-too-large, no-image, bad-mask). */
export class ImageError extends RplError {}
/** A load stopped by its AbortSignal (cancelled); the model in use is kept. */
export class CancelledError extends RplError {}
/** The backend failed (webgpu-failed, backend-unavailable, no-gpu-device, readback-failed,
 * not-started, device-lost, module-crashed, worker-failed, worker-restarted, disposed). */
export class BackendError extends RplError {}
/** A call this API does not take (bad-argument, export-failed). */
export class UsageError extends RplError {}

const ERROR_CLASS_OF_CODE = new Map([
  [ModelError, ['bad-model', 'model-too-large', 'no-model', 'fetch-failed', 'load-stopped']],
  [ImageError, ['bad-image', 'image-too-large', 'no-image', 'bad-mask']],
  [CancelledError, ['cancelled']],
  [BackendError, ['webgpu-failed', 'backend-unavailable', 'no-gpu-device', 'readback-failed', 'not-started',
    'device-lost', 'module-crashed', 'worker-failed', 'worker-restarted', 'disposed']],
  [UsageError, ['bad-argument', 'export-failed']],
].flatMap(([ErrorClass, codes]) => codes.map((code) => [code, ErrorClass])));

function rplError(message, code, options) {
  const ErrorClass = ERROR_CLASS_OF_CODE.get(code) ?? RplError;
  return new ErrorClass(message, code, options);
}

// --- images --------------------------------------------------------------------------------------

/** Any image this API takes: decoded ones, elements, frames and encoded files. */
function isImageSource(source) {
  const kinds = ['ImageData', 'ImageBitmap', 'HTMLImageElement', 'HTMLVideoElement', 'HTMLCanvasElement',
    'OffscreenCanvas', 'VideoFrame', 'SVGImageElement', 'Blob'];
  return kinds.some((kind) => kind in globalThis && source instanceof globalThis[kind]);
}

/** Decodes an image (an ImageData, ImageBitmap, <img>, <video> frame, canvas, VideoFrame, or an
 * encoded Blob / File) to its exact 8-bit pixels (no colour management, no premultiplication; EXIF
 * orientation applied), shrunk when `fit(width, height)` returns a smaller [width, height]
 * (smoothly, or nearest neighbour with `smooth: false`, for labels). Resolves to {image, width,
 * height}: the ImageData and the source's own size. */
export async function toImageData(source, fit = (w, h) => [w, h], { smooth = true } = {}) {
  if (!isImageSource(source)) {
    throw new UsageError(`${describe(source)} is not an image: pass an ImageData, ImageBitmap, <img>, <video>, canvas, VideoFrame or an image Blob`, 'bad-argument');
  }
  // An <img> still loading is waited for (a broken one fails below, with the reason).
  if ('HTMLImageElement' in globalThis && source instanceof HTMLImageElement && !source.complete) await source.decode().catch(() => {});
  if ('ImageData' in globalThis && source instanceof ImageData) {
    const [width, height] = fit(source.width, source.height);
    // The pixels as given: no round trip through a canvas where the size stays.
    if (width === source.width && height === source.height) return { image: source, width, height };
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    const what = source instanceof Blob ? (source.name ?? 'This file') : describe(source);
    throw new ImageError(`${what} is not an image this browser can decode (JPEG, PNG or WebP): ${e.message}`, 'bad-image', { cause: e });
  }
  try {
    const [width, height] = fit(bitmap.width, bitmap.height);
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext('2d');
    context.imageSmoothingEnabled = smooth;
    context.imageSmoothingQuality = 'high';
    context.drawImage(bitmap, 0, 0, width, height);
    return { image: context.getImageData(0, 0, width, height), width: bitmap.width, height: bitmap.height };
  } finally {
    bitmap.close();
  }
}

/** Draws an ImageData (a class map, heat map or mask of this API) on a canvas, sized to it. */
export function drawImageData(canvas, image) {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d').putImageData(image, 0, 0);
}

function describe(value) {
  if (value === null || value === undefined) return String(value);
  return value.constructor?.name ? `a ${value.constructor.name}` : typeof value;
}

// A copy of a view's bytes that can be transferred to the Worker (the caller keeps its own).
function transferableCopy(view) {
  return view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
}

// RGBA bytes from the Worker as an ImageData, uncopied.
function imageData(rgba, width, height) {
  return new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length), width, height);
}

// --- models from URLs ----------------------------------------------------------------------------

// Downloaded models are kept in this Cache Storage cache, each with the server's validators it
// was downloaded with (in this header): a redeployed model is downloaded again.
const MODEL_CACHE = 'rpl-models';
const MODEL_VERSION_HEADER = 'x-rpl-model-version';
/** File names this API takes as models (the Worker then checks their first bytes). */
export const MODEL_FILE = /\.(safetensors|pth|pt|bin|ckpt|tar)$/i;

// A model file's version as its server states it (ETag, Last-Modified, size), or null.
function versionOf(headers) {
  const parts = ['etag', 'last-modified', 'content-length'].filter((name) => headers.has(name)).map((name) => `${name}=${headers.get(name)}`);
  return parts.length ? parts.join('; ') : null;
}

// The version the server has now, from a HEAD request; null when it cannot say (offline, or
// no validators it lets the page read).
async function serverVersion(url, signal) {
  try {
    const response = await fetch(url, { method: 'HEAD', cache: 'no-store', signal });
    return response.ok ? versionOf(response.headers) : null;
  } catch {
    return null;
  }
}

function cancelled(name, cause) {
  return new CancelledError(`loading ${name} was cancelled; the model in use is kept`, 'cancelled', { cause });
}

// fetch() rejects with a bare TypeError ("Failed to fetch") when it gets no readable response.
async function fetchExplained(url, options, name) {
  try {
    return await fetch(url, options);
  } catch (e) {
    if (e?.name === 'AbortError') throw cancelled(name, e);
    if (!(e instanceof TypeError)) throw e;
    const crossOrigin = new URL(url, location.href).origin !== location.origin;
    throw new ModelError(crossOrigin
      ? `${url} could not be fetched: its server may not allow cross-origin requests (CORS) from this page, or it is unreachable (${e.message})`
      : `${url} could not be fetched: the server is unreachable (${e.message})`, 'fetch-failed', { cause: e });
  }
}

// The body of a response as a Blob, read chunk by chunk: onProgress({phase: 'downloading',
// bytes, totalBytes}) after each (totalBytes 0 where the server does not say).
async function readWithProgress(response, onProgress, signal, name) {
  const totalBytes = Number(response.headers.get('content-length')) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let bytes = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.length;
      onProgress?.({ phase: 'downloading', bytes, totalBytes, tensors: 0, totalTensors: 0 });
    }
  } catch (e) {
    if (signal?.aborted) throw cancelled(name, e);
    throw new ModelError(`downloading ${name} failed after ${bytes} bytes: ${e.message}`, 'fetch-failed', { cause: e });
  }
  return new Blob(chunks);
}

// Weights from this browser's cache while the server still has the same version; else
// downloaded again (a redeployed model) and cached with their version. Offline, the cached copy.
async function fetchModel(url, { cache: useCache, onProgress, signal, name }) {
  const cache = useCache && 'caches' in globalThis ? await caches.open(MODEL_CACHE) : null;
  const [cached, version] = await Promise.all([cache?.match(url), serverVersion(url, signal)]);
  if (cached && (version === null || cached.headers.get(MODEL_VERSION_HEADER) === version)) return cached.blob();
  // Not the browser's HTTP cache either: this cache is the one place models are kept.
  const response = await fetchExplained(url, { cache: 'no-store', signal }, name);
  if (!response.ok) throw new ModelError(`${url}: HTTP ${response.status} ${response.statusText}`, 'fetch-failed');
  const bytes = await readWithProgress(response, onProgress, signal, name);
  if (cache) {
    const headers = { 'content-type': 'application/octet-stream', [MODEL_VERSION_HEADER]: versionOf(response.headers) ?? '' };
    await cache.put(url, new Response(bytes, { headers }));
  }
  return bytes;
}

// --- the session ---------------------------------------------------------------------------------

/** A network in a Web Worker: start one with `RplSession.create()` (or `new RplSession()` and
 * await `ready`). Calls run one at a time, in the order made. */
export class RplSession {
  /** Starts a session and resolves once its backend is running. */
  static async create(options = {}) {
    const session = new RplSession(options);
    await session.ready;
    return session;
  }

  /** Starts the Worker and its backend; `ready` resolves to `info`. Options: backend ('auto':
   * WebGPU on a hardware adapter, else the CPU; 'webgpu': WebGPU even on a software adapter;
   * 'cpu'), dtype ('float32', or 'float16' where the adapter has shader-f16), threads (the CPU
   * path's; 0: every core, where the page is cross-origin isolated), convolution (WebGPU's:
   * CONVOLUTIONS), workerUrl. */
  constructor({ backend = 'auto', dtype = 'float32', threads = 0, convolution = 'direct', workerUrl = new URL('./worker.js', import.meta.url) } = {}) {
    if (!['auto', 'webgpu', 'cpu'].includes(backend)) throw new UsageError(`unknown backend '${backend}': auto, webgpu or cpu`, 'bad-argument');
    if (!['float32', 'float16'].includes(dtype)) throw new UsageError(`unknown dtype '${dtype}': float32 or float16`, 'bad-argument');
    if (!CONVOLUTIONS.includes(convolution)) throw new UsageError(`unknown convolution '${convolution}': ${CONVOLUTIONS.join(', ')}`, 'bad-argument');
    this.workerUrl = workerUrl;
    this.options = {
      preferCpu: backend === 'cpu', forceWebgpu: backend === 'webgpu', halfPrecision: dtype === 'float16',
      threads: Math.max(0, Math.floor(threads)), convolution,
    };
    /** Called with a fatal RplError when the session cannot go on (a lost GPU device): restart() it. */
    this.onFatal = null;
    /** What the backend is: set once `ready` resolves. */
    this.info = null;
    /** The loaded model ({name, description, bytes, sha256}: the file's size and SHA-256, null until
     * it is known: provenance() waits for it), or null. */
    this.model = null;
    this.modelHash = null; // {token, promise, resolve}: the Worker is hashing the model's file
    /** The most pixels the loaded model can take on this device (segment() shrinks larger images). */
    this.maxPixels = Infinity;
    this.pending = new Map();
    this.nextId = 1;
    this.disposed = false;
    /** The classes: {id, name, colour}, once `ready` resolves. */
    this.legend = [];
    /** The outliers pasteOutliers() draws: {name, heldOut (never in the demo model's training)}. */
    this.outlierKinds = [];
    this.lastImage = null; // sizes of the last segmentation, for masks
    this.ready = this.start();
  }

  // A Worker, the module in it and the backend; resolves to info.
  start() {
    this.worker = new Worker(this.workerUrl, { type: 'module' });
    this.worker.onmessage = ({ data }) => this.onReply(data);
    this.worker.onerror = (event) => {
      this.failAll(rplError(`the inference worker failed: ${event.message}`, 'worker-failed', { fatal: true }));
    };
    const started = (async () => {
      const info = await this.request('init', this.options);
      const { classes, outlierKinds } = await this.request('legend');
      this.legend = classes;
      this.outlierKinds = outlierKinds;
      this.info = info;
      return info;
    })();
    // A session that never started must not also report an unhandled rejection.
    started.catch(() => {});
    return started;
  }

  onReply(data) {
    if (data.event === 'fatal') {
      this.onFatal?.(rplError(data.error, 'device-lost', { fatal: true }));
      return;
    }
    if (data.event === 'model-hash') {
      if (this.modelHash?.token !== data.token) return;
      if (this.model) {
        this.model.sha256 = data.sha256;
        if (data.error) this.model.hashError = data.error;
      }
      this.settleHash();
      return;
    }
    if (data.event === 'progress') {
      const { phase, tensors, totalTensors, bytes, totalBytes } = data;
      this.pending.get(data.id)?.onProgress?.({ phase, tensors, totalTensors, bytes, totalBytes });
      return;
    }
    const request = this.pending.get(data.id);
    if (!request) return;
    this.pending.delete(data.id);
    if (data.ok) request.resolve(data.result);
    else request.reject(rplError(data.error, data.code, { fatal: Boolean(data.fatal) }));
  }

  // The hash being waited for will not come (another model, or a new Worker).
  settleHash() {
    this.modelHash?.resolve();
    this.modelHash = null;
  }

  failAll(error) {
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }

  /** A Worker operation by name (worker.js), for tests and tools: resolves to its reply. */
  request(op, args = {}, transfer = [], onProgress = null) {
    if (this.disposed) return Promise.reject(new BackendError('this session was disposed', 'disposed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  // A request that a signal can cancel (loads: the Worker stops at its next step).
  cancellable(op, args, onProgress, signal) {
    const id = this.nextId;
    const onAbort = () => this.worker.postMessage({ op: 'cancel', target: id });
    signal?.addEventListener('abort', onAbort, { once: true });
    return this.request(op, args, [], onProgress).finally(() => signal?.removeEventListener('abort', onAbort));
  }

  /** A fresh Worker and backend (after a fatal error): the old one's requests fail; load the
   * model again. Resolves to the new info. */
  restart() {
    this.worker.terminate();
    this.failAll(new BackendError('the inference worker was restarted', 'worker-restarted', { fatal: true }));
    this.settleHash();
    [this.info, this.model, this.maxPixels, this.lastImage] = [null, null, Infinity, null];
    this.ready = this.start();
    return this.ready;
  }

  /** Ends the session: the Worker and its memory (GPU buffers too) go; later calls reject. */
  dispose() {
    if (this.disposed) return;
    this.worker.terminate();
    this.failAll(new BackendError('this session was disposed', 'disposed'));
    this.settleHash();
    this.disposed = true;
  }

  // --- models ----------------------------------------------------------------------------------

  /** Loads a model: a URL (downloaded, kept in Cache Storage while the server's copy is the same
   * version, unless cache is false), a File or Blob, or bytes (an ArrayBuffer or typed array).
   * A .pth as torch.save writes it (the released checkpoint as downloaded) or safetensors.
   * onProgress({phase, bytes, totalBytes, tensors, totalTensors}) follows it; an AbortSignal
   * cancels it (CancelledError; the model in use stays). With keep, a float32 copy is stored in
   * this browser as it loads (keptModels(), loadKept()). Resolves to {name, description, kept,
   * keptFailure, ms}. */
  async loadModel(source, { name, onProgress = null, signal, keep = false, cache = true } = {}) {
    let blob;
    if (typeof source === 'string' || source instanceof URL) {
      const url = String(source);
      name ??= decodeURIComponent(new URL(url, location.href).pathname.split('/').pop() || 'model');
      if (signal?.aborted) throw cancelled(name);
      blob = await fetchModel(url, { cache, onProgress, signal, name });
    } else if (source instanceof Blob) {
      [blob, name] = [source, name ?? source.name ?? 'model'];
    } else if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
      [blob, name] = [new Blob([source]), name ?? 'model'];
    } else {
      throw new UsageError(`${describe(source)} is not a model: pass a URL, a File or Blob, or bytes`, 'bad-argument');
    }
    if (signal?.aborted) throw cancelled(name);
    return this.loadWith(this.cancellable('loadFile', { file: blob, name, keep }, onProgress, signal), name);
  }

  // After a load's reply: the model (named as given, else as kept) and what it can take on this device.
  async loadWith(load, name) {
    const reply = await load;
    name ??= reply.entry.name;
    const { description, bytes = null, sha256 = null } = reply;
    this.model = { name, description, bytes, sha256 };
    this.settleHash();
    if (reply.hashing) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      this.modelHash = { token: reply.hashing, promise, resolve };
    }
    this.maxPixels = (await this.request('maxPixels')).pixels;
    return { ...this.model, kept: reply.kept ?? null, keptFailure: reply.keptFailure ?? null, ms: reply.ms };
  }

  /** What results come from: {version (the project's), source (the hash of the sources the
   * module was built from, as `rpl --version` prints it), module ('webgpu' or 'threads'), model:
   * {name, bytes, sha256} (the file's SHA-256, as sha256sum prints it; null for random weights,
   * or with hashError where the file could not be read again) or null}. A model file is hashed
   * after it loads, between requests (about 5 s for the released 672 MB): this waits for it. */
  async provenance() {
    await this.ready;
    await this.modelHash?.promise;
    const { version, source, module } = this.info.build;
    const model = this.model && { name: this.model.name, bytes: this.model.bytes, sha256: this.model.sha256 };
    if (this.model?.hashError) model.hashError = this.model.hashError;
    return { version, source, module, model };
  }

  /** [{key, name, description, sourceBytes, bytes, date}]: the models kept in this browser. */
  async keptModels() {
    return (await this.request('keptModels')).models;
  }

  /** Loads a kept model by its key, as loadModel() does, without the original file. */
  loadKept(key, { onProgress = null, signal } = {}) {
    return this.loadWith(this.cancellable('loadKept', { key }, onProgress, signal));
  }

  /** Forgets every model this API stored in this browser: the kept copies and the downloads'
   * cache (and model files in any other cache of this origin). Resolves to {kept, downloads}. */
  async forgetModels() {
    const kept = (await this.keptModels()).length;
    await this.request('forgetKept');
    let downloads = 0;
    for (const name of 'caches' in globalThis ? await caches.keys() : []) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) {
        if (MODEL_FILE.test(new URL(request.url).pathname) && (await cache.delete(request))) downloads += 1;
      }
    }
    return { kept, downloads };
  }

  /** Loads safetensors bytes (an ArrayBuffer, transferred to the Worker). */
  loadWeights(name, bytes) {
    return this.loadWith(this.request('load', { name, bytes }, [bytes]), name);
  }

  /** Random weights at width 1/widthDivisor (1: the released width), for benchmarks. */
  loadRandomWeights(widthDivisor) {
    return this.loadWith(this.request('loadRandom', { widthDivisor }), `random 1/${widthDivisor}`);
  }

  // --- images ----------------------------------------------------------------------------------

  /** The inference size of a width x height image: its longer side at most maxSide (0: any),
   * its pixels at most maxPixels (never enlarged). [width, height, why it shrank, or ''] */
  inferenceSize(width, height, maxSide = 0) {
    const bySide = maxSide ? maxSide / Math.max(width, height) : 1;
    const byPixels = Math.sqrt(this.maxPixels / (width * height));
    const scale = Math.min(1, bySide, byPixels);
    if (scale === 1) return [width, height, ''];
    const why = byPixels < bySide ? 'the largest this device can run with this model' : 'the chosen inference size';
    return [Math.max(1, Math.floor(width * scale)), Math.max(1, Math.floor(height * scale)), why];
  }

  /** Segments an image (any that toImageData() takes) at its inference size and scores it in
   * `score` mode. Where the caller shrank the image itself, sourceSize: [width, height] before
   * (evaluate() then shrinks masks of that size with it). Resolves to {width, height, image (the
   * ImageData the network saw), sourceWidth, sourceHeight, shrunk (why it was shrunk, or ''),
   * classImages: {out1, out2} (ImageData), classesPresent (train ids in either head), mode,
   * baseline, scoreRange: [lo, hi], ms}. */
  async segment(source, { score = 'energy', maxSide = 0, sourceSize = null } = {}) {
    await this.ready;
    let shrunk = '';
    const decoded = await toImageData(source, (w, h) => {
      const [width, height, why] = this.inferenceSize(w, h, maxSide);
      shrunk = why;
      return [width, height];
    });
    const { image } = decoded;
    const rgba = transferableCopy(image.data);
    const reply = await this.request('segment', { width: image.width, height: image.height, rgba, mode: score }, [rgba]);
    const { width, height } = reply;
    const [sourceWidth, sourceHeight] = sourceSize ?? [decoded.width, decoded.height];
    this.lastImage = { width, height, sourceWidth, sourceHeight, scoreRange: reply.scoreRange };
    const classImages = Object.fromEntries(HEADS.map((head) => [head, imageData(reply.classImages[head], width, height)]));
    return { ...reply, classImages, image, sourceWidth, sourceHeight, shrunk };
  }

  /** The last image's scores in another mode, without running the network again:
   * {mode, baseline, scoreRange}. */
  async rescore(score) {
    const reply = await this.request('rescore', { mode: score });
    if (this.lastImage) this.lastImage.scoreRange = reply.scoreRange;
    return reply;
  }

  /** The last image's whole maps: {classes: {out1, out2} (Uint8Array, train ids), scores:
   * {out1, out2} (Float32Array)}, row-major. */
  scores() {
    return this.request('resultArrays');
  }

  /** One pixel of the last image: {classes, names, probabilities, scores}, each {out1, out2}. */
  pixel(x, y) {
    return this.request('pixel', { x, y });
  }

  /** The heat map of `head`'s score over the image as an ImageData, its colours spanning
   * range [lo, hi] (the last scoreRange by default), blended with the image by opacity. With
   * before, the image kept by keepBefore(), scored as the last objectChange() scored it. */
  async heatImage(head, { range, opacity = 0.6, before = false } = {}) {
    const [lo, hi] = range ?? this.lastImage?.scoreRange ?? [0, 1];
    const { rgba } = await this.request('heat', { head, lo, hi, opacity, before });
    const { width, height } = before ? this.beforeImage : this.lastImage;
    return imageData(rgba, width, height);
  }

  /** Keeps the last segmented image as "before": segment the changed image, then objectChange(). */
  async keepBefore() {
    await this.request('keepBefore');
    this.beforeImage = { width: this.lastImage.width, height: this.lastImage.height };
  }

  /** What changed on `object` ({width, height, values}: nonzero on its pixels, such as
   * pasteOutliers()'s lastObject) from the image keepBefore() kept to the last one, both scored
   * in the last score mode: {pixels, inside: {out1, out2}, outside: {out1, out2}, each
   * {before, after, change} (mean scores), out1Class: {id, name, share (of the object's pixels
   * out1 gives that class), confidence (out1's mean softmax probability of its label there)},
   * sameClassOnInliers (the share of known pixels where out2 gives out1's class: the inliers of
   * `truth`, the image's ground truth as evaluate() takes it, or without it every pixel off the
   * object)}. */
  async objectChange(object, { truth = null } = {}) {
    for (const mask of [object, ...(truth ? [truth] : [])]) {
      if (!(mask?.values instanceof Uint8Array)) {
        throw new UsageError(`${describe(mask)} is not a mask: pass {width, height, values: Uint8Array}`, 'bad-argument');
      }
    }
    const bytes = transferableCopy(object.values);
    const known = truth ? { truth: transferableCopy(truth.values), width: truth.width, height: truth.height } : { truth: null };
    const { ms, ...change } = await this.request('objectChange', { object: bytes, ...known }, [bytes, ...(truth ? [known.truth] : [])]);
    return change;
  }

  /** The pixels of `head` scoring above `threshold`, drawn over the image: {share (of pixels),
   * image (ImageData)}. */
  async maskImage(head, threshold) {
    const { share, rgba } = await this.request('mask', { head, threshold });
    return { share, image: imageData(rgba, this.lastImage.width, this.lastImage.height) };
  }

  /** AUROC, AP, FPR95 and the ROC and PR curves of both heads against a ground-truth mask: 0
   * inlier, 1 OoD, 255 ignored; either {width, height, values} or an image (its first channel;
   * one of the last image's source size is shrunk with it, nearest neighbour). {out1, out2} */
  async evaluate(mask) {
    const { width, height, values } = isImageSource(mask) ? await this.maskValues(mask) : mask ?? {};
    if (!(values instanceof Uint8Array)) {
      throw new UsageError(`${describe(mask)} is not a mask: pass an image, or {width, height, values: Uint8Array}`, 'bad-argument');
    }
    const bytes = transferableCopy(values);
    return this.request('evaluate', { width, height, mask: bytes }, [bytes]);
  }

  async maskValues(source) {
    const last = this.lastImage;
    const fit = (w, h) => (last && w === last.sourceWidth && h === last.sourceHeight ? [last.width, last.height] : [w, h]);
    const { image } = await toImageData(source, fit, { smooth: false });
    const values = new Uint8Array(image.width * image.height);
    for (let i = 0; i < values.length; i += 1) values[i] = image.data[4 * i];
    return { width: image.width, height: image.height, values };
  }

  /** The experiment RPL is built on: `image` (an ImageData) with objects drawn in, in order.
   * `outliers`: [{kind (a name from outlierKinds), x, y (where it stands: its bottom centre, in
   * pixels), size (its height in pixels), seed (its colours and shape)}], or {cutout (an index
   * into `cutouts`), x, y, size} for a region cut from an image: `cutouts` are ImageData whose
   * opaque pixels (alpha 128 or more, as cutOut() gives them) are the object. Resolves to {image
   * (ImageData), mask ({width, height, values}: `baseMask`, the image's own ground truth, or all
   * inlier, with 1 on the objects' pixels: what evaluate() takes), lastObject ({width, height,
   * values}: 1 on the last object's pixels, for objectChange()), pastedPixels (the objects'
   * pixels)}. */
  async pasteOutliers(image, outliers, { baseMask = null, cutouts = [] } = {}) {
    if (!(image instanceof ImageData)) throw new UsageError(`${describe(image)} is not an ImageData`, 'bad-argument');
    if (!Array.isArray(outliers)) throw new UsageError(`${describe(outliers)} is not a list of outliers`, 'bad-argument');
    if (!Array.isArray(cutouts) || !cutouts.every((c) => c instanceof ImageData)) {
      throw new UsageError('cutouts is not a list of ImageData', 'bad-argument');
    }
    const { width, height } = image;
    const rgba = transferableCopy(image.data);
    const mask = baseMask ? transferableCopy(baseMask.values) : null;
    const pieces = cutouts.map((c) => ({ width: c.width, height: c.height, rgba: transferableCopy(c.data) }));
    const transfer = [rgba, ...(mask ? [mask] : []), ...pieces.map((c) => c.rgba)];
    const reply = await this.request('paste', { width, height, rgba, mask, placements: JSON.stringify(outliers), cutouts: pieces }, transfer);
    return {
      image: imageData(reply.rgba, width, height),
      mask: { width, height, values: reply.mask },
      lastObject: { width, height, values: reply.lastObject },
      pastedPixels: reply.pastedPixels,
    };
  }

  /** A region of `image` (an ImageData) to paste as an object: the pixels whose centres lie
   * inside `outline` ([[x, y], ...] in pixels: a rectangle's corners or a lasso's path, at least
   * three points) and are opaque, cropped to their box. Resolves to {image (ImageData, transparent
   * outside the region), pixels (the region's)}. */
  async cutOut(image, outline) {
    if (!(image instanceof ImageData)) throw new UsageError(`${describe(image)} is not an ImageData`, 'bad-argument');
    if (!Array.isArray(outline) || !outline.every((p) => Array.isArray(p) && p.length === 2)) {
      throw new UsageError('the outline is not a list of [x, y] points', 'bad-argument');
    }
    const rgba = transferableCopy(image.data);
    const reply = await this.request('cutOut', { width: image.width, height: image.height, rgba, outline: outline.flat() }, [rgba]);
    return { image: imageData(reply.rgba, reply.width, reply.height), pixels: reply.pixels };
  }

  /** The score of `head` as the bytes of a .npy file (float32, H x W). */
  async npy(head) {
    return (await this.request('npy', { head })).bytes;
  }

  /** Benchmarks: runs the network on an ImageData through `stage` (trunk, aspp, residual block,
   * decoder, or score: the whole pass) and waits for it; the reply's `ms` times it, its
   * `convolutions` count the layers run each way ({kernel, products, implicit, taps, tiles}). */
  runThrough(image, stage) {
    const rgba = transferableCopy(image.data);
    return this.request('runThrough', { width: image.width, height: image.height, rgba, stage }, [rgba]);
  }

  /** {wasmBytes, deviceBytesReserved, deviceBytesInUse}: the Worker's memory; constructorRuns:
   * how often the module's static constructors ran (constant once it started: a figure that grows
   * with each call means every call into the module pays for them). */
  memory() {
    return this.request('memory');
  }
}
