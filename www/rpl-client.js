// The page's handle on the Worker: each call returns a promise of the Worker's reply.
// The network's two heads are named 'out1' (the closed-set network) and 'out2' (with the RPL
// block): in requests, and as the keys of every per-head pair in replies.
export class RplClient {
  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.workerUrl = workerUrl;
    this.pending = new Map();
    this.nextId = 1;
    /** Called with a reason when the Worker cannot go on (a lost GPU device): restart() it. */
    this.onFatal = null;
    this.start();
  }

  start() {
    this.worker = new Worker(this.workerUrl, { type: 'module' });
    this.worker.onmessage = ({ data }) => {
      if (data.event === 'fatal') {
        this.onFatal?.(data.error);
        return;
      }
      if (data.event === 'progress') {
        this.pending.get(data.id)?.onProgress?.(data);
        return;
      }
      const { resolve, reject } = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.ok) {
        resolve(data.result);
      } else {
        // fatal: the Worker cannot go on (lost GPU device, crashed module); restart() it.
        reject(Object.assign(new Error(data.error), { fatal: Boolean(data.fatal) }));
      }
    };
    this.worker.onerror = (event) => {
      const error = Object.assign(new Error(`the inference worker failed: ${event.message}`), { fatal: true });
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
    };
  }

  /** A fresh Worker (the old one's requests fail); call init() and load weights again. */
  restart() {
    this.worker.terminate();
    const error = Object.assign(new Error('the inference worker was restarted'), { fatal: true });
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.start();
  }

  request(op, args = {}, transfer = [], onProgress = null) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  /** `op` on a copy of an ImageData's pixels (transferred: the caller keeps its image). */
  requestWithImage(op, imageData, args) {
    const rgba = imageData.data.buffer.slice(0);
    return this.request(op, { width: imageData.width, height: imageData.height, rgba, ...args }, [rgba]);
  }

  /** Starts WebGPU, or the CPU backend where WebGPU is missing or only a software adapter
   * (unless forceWebgpu): {backend, adapter, dtype, fallbackReason, ...}; halfPrecision asks for
   * float16 where the adapter has shader-f16 (halfPrecisionError says why not). The CPU backend
   * runs on every core the browser reports, or on `threads` (1: the single-threaded module),
   * where the page is cross-origin isolated: info.threads says how many, info.threadsReason why
   * only one. */
  init({ preferCpu = false, forceWebgpu = false, halfPrecision = false, threads = 0 } = {}) {
    return this.request('init', { preferCpu, forceWebgpu, halfPrecision, threads });
  }

  /** Loads safetensors weights from bytes (an ArrayBuffer, transferred to the Worker). */
  loadWeights(name, bytes) {
    return this.request('load', { name, bytes }, [bytes]);
  }

  /** Loads a model from a File or Blob, read in slices inside the Worker: a .pth as torch.save
   * writes it (plain, or wrapped under model / state_dict, keys with or without module.) or
   * safetensors. `onProgress({phase, tensors, totalTensors, bytes, totalBytes})` follows it;
   * cancelLoad() stops it (the model in use stays). With `keep`, a float32 copy is stored in this
   * browser as it loads. Resolves to {description, kept: {key, name, bytes, date, ...} or null,
   * keptFailure: why it could not be kept, or null}. */
  loadFile(file, { name = file.name, keep = false, onProgress = null } = {}) {
    this.loading = this.nextId;
    return this.request('loadFile', { file, name, keep }, [], onProgress);
  }

  /** Stops the latest loadFile() or loadKept() at its next step (within about 16 MB of weights). */
  cancelLoad() {
    if (this.loading !== undefined) this.worker.postMessage({ op: 'cancel', target: this.loading });
  }

  /** [{key, name, description, sourceBytes, bytes, date}]: the models kept in this browser. */
  keptModels() {
    return this.request('keptModels');
  }

  /** Loads a kept model by its key (as loadFile does, without reading the original file). */
  loadKept(key, { onProgress = null } = {}) {
    this.loading = this.nextId;
    return this.request('loadKept', { key }, [], onProgress);
  }

  /** Removes every model kept in this browser. */
  forgetKept() {
    return this.request('forgetKept');
  }

  loadRandomWeights(widthDivisor) {
    return this.request('loadRandom', { widthDivisor });
  }

  /** Segments RGBA pixels (an ImageData) and scores them in `mode` (energy, entropy, ...):
   * {width, height, classImages: {out1, out2} (RGBA), classesPresent, mode, baseline, scoreRange}. */
  segment(imageData, mode = 'energy') {
    return this.requestWithImage('segment', imageData, { mode });
  }

  /** The last image's whole maps (tests and tools): {classes: {out1, out2}, scores: {out1, out2}}. */
  resultArrays() {
    return this.request('resultArrays');
  }

  /** Benchmarks: runs the network on an ImageData through `stage` (trunk, aspp, residual block,
   * decoder, or score: the whole pass) and waits for it; the reply's `ms` times it. */
  runThrough(imageData, stage) {
    return this.requestWithImage('runThrough', imageData, { stage });
  }

  /** The last image's scores in another mode, without running the network again:
   * {mode, baseline, scoreRange}. */
  rescore(mode) {
    return this.request('rescore', { mode });
  }

  /** One pixel of the last image: {classes, names, probabilities, scores}, each {out1, out2}. */
  pixel(x, y) {
    return this.request('pixel', { x, y });
  }

  /** RGBA heat map of `head` ('out1' or 'out2') over the image, on the score range [lo, hi]. */
  heat(head, lo, hi, opacity) {
    return this.request('heat', { head, lo, hi, opacity });
  }

  /** {share, rgba}: the pixels of `head` scoring above `threshold`. */
  mask(head, threshold) {
    return this.request('mask', { head, threshold });
  }

  /** Metrics of both heads against a mask (bytes 0 / 1 / 255, the image's size): {out1, out2}. */
  evaluate(width, height, mask) {
    const bytes = mask.buffer.slice(0);
    return this.request('evaluate', { width, height, mask: bytes }, [bytes]);
  }

  /** The score of `head` as .npy bytes. */
  npy(head) {
    return this.request('npy', { head });
  }

  legend() {
    return this.request('legend');
  }

  /** The most pixels the loaded model can take on this device (its largest tensor must fit). */
  maxPixels() {
    return this.request('maxPixels');
  }

  /** {wasmBytes, deviceBytesReserved, deviceBytesInUse}: the Worker's memory. */
  memory() {
    return this.request('memory');
  }
}

/** Decodes an image file to its exact 8-bit pixels (no colour management, no premultiplication;
 * EXIF orientation applied), shrunk when `fit(width, height)` returns a smaller [width, height]
 * (smoothly, or nearest neighbour with `smooth: false`, for labels).
 * Returns {image, width, height}: the ImageData and the file's own size. */
export async function decodeImage(blob, fit = (w, h) => [w, h], { smooth = true } = {}) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
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
