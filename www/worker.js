// The Web Worker that owns the network: all inference runs here, off the page's thread.
// Messages: {id, op, ...args}; replies: {id, ok: true, result} or {id, ok: false, error, fatal};
// unasked, {event: 'fatal', error} when the GPU device is lost.
import init, {
  initBackend, loadWeights, loadRandomWeights, segment, rescore, pixelInfo, heatImage, maskImage,
  evaluateMask, scoreNpy, classLegend, maxInferencePixels, memoryUsage, runThrough,
} from './pkg/rpl_web.js';

let wasm = null;
const wasmReady = (async () => {
  const started = performance.now();
  wasm = await init();
  return performance.now() - started;
})();

// The GPUDevice that wgpu opens, watched for loss: after it, this Worker is done and the page
// starts a new one (a fresh device, or the CPU).
let gpuDevice = null;
let deviceLost = null;
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function watchedRequestDevice(...args) {
    const device = await requestDevice.apply(this, args);
    gpuDevice = device;
    device.lost.then((info) => {
      deviceLost = info.message || info.reason || 'no reason given';
      // Said at once, not at the next request: the page restarts this Worker right away.
      self.postMessage({ event: 'fatal', error: fatalReason(null) });
    });
    return device;
  };
}

// {adapter} where WebGPU has one, else {reason} why it is not used.
async function probeWebgpu() {
  if (!('gpu' in navigator)) return { reason: 'this browser has no WebGPU (navigator.gpu is missing)' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? { adapter } : { reason: 'WebGPU found no adapter' };
  } catch (e) {
    return { reason: `WebGPU adapter request failed: ${e.message}` };
  }
}

// The browser names its adapters better than wgpu can see through WebGPU.
function describeAdapter({ info }) {
  const parts = [info.vendor, info.architecture, info.description].filter(Boolean);
  return parts.length ? parts.join(' ') : 'unnamed adapter';
}

const ops = {
  async init({ preferCpu, halfPrecision = false }) {
    const wasmMs = await wasmReady;
    let { adapter, reason } = preferCpu ? { reason: 'CPU requested' } : await probeWebgpu();
    if (adapter) {
      try {
        // Float16 only where the adapter computes in it (WGSL's shader-f16).
        const half = halfPrecision && adapter.features.has('shader-f16');
        const info = await initBackend(true, half);
        if (halfPrecision && !half) info.halfPrecisionError = 'this adapter has no shader-f16';
        return { ...info, adapter: describeAdapter(adapter), wasmMs };
      } catch (e) {
        reason = `WebGPU device failed: ${e.message}`;
      }
    }
    // The CPU fallback stays in float32: WebAssembly has no half-precision arithmetic.
    const info = await initBackend(false, false);
    if (halfPrecision) info.halfPrecisionError = 'float16 runs on WebGPU only';
    return { ...info, fallbackReason: reason, wasmMs };
  },
  load({ name, bytes }) {
    return { description: loadWeights(name, new Uint8Array(bytes)) };
  },
  loadRandom({ widthDivisor }) {
    return { description: loadRandomWeights(widthDivisor) };
  },
  segment({ width, height, rgba, mode }) {
    return segment(width, height, new Uint8Array(rgba), mode);
  },
  // Benchmarks: the network through one stage, waited for (the reply's ms times it).
  async runThrough({ width, height, rgba, stage }) {
    await runThrough(width, height, new Uint8Array(rgba), stage);
    return {};
  },
  rescore({ mode }) {
    return rescore(mode);
  },
  pixel({ x, y }) {
    return pixelInfo(x, y);
  },
  heat({ head, lo, hi, opacity }) {
    return { rgba: heatImage(head, lo, hi, opacity) };
  },
  mask({ head, threshold }) {
    return maskImage(head, threshold);
  },
  evaluate({ width, height, mask }) {
    return evaluateMask(width, height, new Uint8Array(mask));
  },
  npy({ head }) {
    return { bytes: scoreNpy(head) };
  },
  legend() {
    return { classes: classLegend() };
  },
  maxPixels() {
    return { pixels: maxInferencePixels() };
  },
  // Linear memory of the module and what the GPU allocator holds, for leak checks.
  memory() {
    return { wasmBytes: wasm.memory.buffer.byteLength, ...memoryUsage() };
  },
};

// Test builds (worker URL with ?test-hooks) can lose the device on purpose.
if (new URL(self.location.href).searchParams.has('test-hooks')) {
  ops.destroyDevice = () => {
    gpuDevice?.destroy();
    return {};
  };
}

// After a lost device or a trap in the module (a Rust panic), nothing here can be trusted.
function fatalReason(error) {
  if (deviceLost !== null) return `the GPU device was lost (${deviceLost})`;
  if (error instanceof WebAssembly.RuntimeError) return `the inference module crashed (${error.message})`;
  return null;
}

// One operation at a time, in arrival order: an await inside one must not let the next start.
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  const { id, op, ...args } = data;
  queue = queue.then(async () => {
    const started = performance.now();
    try {
      if (!(op in ops)) throw new Error(`unknown operation ${op}`);
      if (deviceLost !== null && op !== 'memory') throw new Error('device lost');
      const result = await ops[op](args);
      const ms = performance.now() - started;
      const transfer = Object.values(result).filter((v) => ArrayBuffer.isView(v)).map((v) => v.buffer);
      self.postMessage({ id, ok: true, result: { ...result, ms } }, transfer);
    } catch (e) {
      const fatal = fatalReason(e);
      self.postMessage({ id, ok: false, error: fatal ?? e?.message ?? String(e), fatal: fatal !== null });
    }
  });
};
