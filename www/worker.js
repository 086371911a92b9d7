// The Web Worker that owns the network: all inference runs here, off the page's thread.
// Messages: {id, op, ...args}; replies: {id, ok: true, result} or {id, ok: false, error}.
import init, {
  initBackend, loadWeights, loadRandomWeights, segment, rescore, pixelInfo, heatImage, maskImage,
  evaluateMask, scoreNpy, classLegend,
} from './pkg/rpl_web.js';

const wasmReady = (async () => {
  const started = performance.now();
  await init();
  return performance.now() - started;
})();

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
  async init({ preferCpu }) {
    const wasmMs = await wasmReady;
    let { adapter, reason } = preferCpu ? { reason: 'CPU requested' } : await probeWebgpu();
    if (adapter) {
      try {
        return { ...(await initBackend(true)), adapter: describeAdapter(adapter), wasmMs };
      } catch (e) {
        reason = `WebGPU device failed: ${e.message}`;
      }
    }
    return { ...(await initBackend(false)), fallbackReason: reason, wasmMs };
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
};

// One operation at a time, in arrival order: an await inside one must not let the next start.
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  const { id, op, ...args } = data;
  queue = queue.then(async () => {
    const started = performance.now();
    try {
      if (!(op in ops)) throw new Error(`unknown operation ${op}`);
      const result = await ops[op](args);
      const ms = performance.now() - started;
      const transfer = Object.values(result).filter((v) => ArrayBuffer.isView(v)).map((v) => v.buffer);
      self.postMessage({ id, ok: true, result: { ...result, ms } }, transfer);
    } catch (e) {
      self.postMessage({ id, ok: false, error: e?.message ?? String(e) });
    }
  });
};
