// The Web Worker that owns the network: all inference runs here, off the page's thread.
// Messages: {id, op, ...args}; replies: {id, ok: true, result} or {id, ok: false, error, code, fatal};
// unasked, {event: 'fatal', error} when the GPU device is lost, and {event: 'model-hash', token,
// sha256, error} once a loaded model file is hashed.
import { fileKey, forgetKept, keptModel, listKept, noteKept, startKeeping } from './model-store.js';

// Two builds of the module (src/web.rs): ./pkg runs the network on WebGPU or on one CPU thread;
// ./pkg-threads (CPU only) on every core, its memory shared with a pool of Workers, which
// browsers allow only on a cross-origin isolated page (./build.sh serve sends the COOP and COEP
// headers; the page's service worker adds them where a host cannot).
let rpl = null; // the module's JavaScript bindings
let wasm = null; // its exports (memory)
const started = {};

// Loads a build once (and its thread pool of `threads` Workers); milliseconds it took.
function startModule(threads) {
  const build = threads > 1 ? 'pkg-threads' : 'pkg';
  started[build] ??= (async () => {
    const begun = performance.now();
    const bindings = await import(`./${build}/rpl_web.js`);
    const exports = await bindings.default();
    if (threads > 1) await bindings.startThreadPool(threads);
    return { bindings, exports, ms: performance.now() - begun };
  })();
  return started[build].then(({ bindings, exports, ms }) => {
    [rpl, wasm] = [bindings, exports];
    return ms;
  });
}

// {threads} for the CPU path, and {reason} where that is one: every core the browser reports
// (or `requested`), where shared memory is allowed.
function cpuThreads(requested) {
  const cores = navigator.hardwareConcurrency || 1;
  if (requested === 1) return { threads: 1, reason: 'one thread requested (?threads=1)' };
  if (!self.crossOriginIsolated) {
    return { threads: 1, reason: 'the page is not cross-origin isolated (no COOP/COEP headers), so the browser allows no shared memory' };
  }
  if (cores < 2 && !requested) return { threads: 1, reason: 'the browser reports one core' };
  return { threads: requested || cores };
}

// The network, its device and the last result (src/web.rs); set by init.
let session = null;
function activeSession() {
  if (!session) throw Object.assign(new Error('the inference backend has not started: init first'), { code: 'not-started' });
  return session;
}

// Set once the session reports its GPU device lost: nothing here can run after it, and the page
// starts a new Worker (a fresh device, or the CPU).
let deviceLost = null;
function onDeviceLost(sentence) {
  deviceLost = sentence;
  // Said at once, not at the next request: the page restarts this Worker right away.
  self.postMessage({ event: 'fatal', error: sentence });
}

// {adapter} where WebGPU has one, else {reason} why it is not used. A software (fallback)
// adapter, such as SwiftShader on a machine without a GPU, runs the network 15-50 times slower
// than the CPU path: it is used only when forced.
async function probeWebgpu(forceWebgpu) {
  if (!('gpu' in navigator)) return { reason: 'this browser has no WebGPU (navigator.gpu is missing)' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (adapter?.info?.isFallbackAdapter && !forceWebgpu) {
      return { reason: `WebGPU's only adapter here is a software one (${describeAdapter(adapter)}), slower than this CPU path; ?backend=webgpu uses it anyway` };
    }
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

// Loads cancelled by a 'cancel' message (which overtakes the queue), by request id: each stops
// at its next step, or at its first if it has not started.
const cancelled = new Set();

// What a load reports between its steps ({event: 'progress', id, phase, tensors, totalTensors,
// bytes, totalBytes}); its promise resolves after a turn of the event loop, where a 'cancel'
// message can arrive, to whether the load goes on.
function progressReporter(id, phase) {
  return async (progress) => {
    self.postMessage({ event: 'progress', id, phase, ...progress });
    await new Promise((resolve) => setTimeout(resolve, 0));
    return !cancelled.has(id);
  };
}

const ops = {
  async init({ preferCpu, forceWebgpu = false, halfPrecision = false, threads: requestedThreads = 0, convolution = 'direct' }) {
    let { adapter, reason } = preferCpu ? { reason: 'CPU requested' } : await probeWebgpu(forceWebgpu);
    if (adapter) {
      try {
        const wasmMs = await startModule(1);
        // Float16 only where the adapter computes in it (WGSL's shader-f16).
        const half = halfPrecision && adapter.features.has('shader-f16');
        session = await rpl.RplSession.start(true, half, convolution, onDeviceLost);
        const info = session.info();
        if (halfPrecision && !half) info.halfPrecisionError = 'this adapter has no shader-f16';
        return { ...info, adapter: describeAdapter(adapter), wasmMs };
      } catch (e) {
        reason = `WebGPU device failed: ${e.message}`;
      }
    }
    let { threads, reason: threadsReason } = cpuThreads(requestedThreads);
    let wasmMs;
    if (threads > 1) {
      try {
        wasmMs = await startModule(threads);
      } catch (e) {
        [threads, threadsReason] = [1, `the threaded module did not start (${e.message})`];
      }
    }
    if (threads === 1) wasmMs = await startModule(1);
    // The CPU fallback stays in float32: WebAssembly has no half-precision arithmetic.
    session = await rpl.RplSession.start(false, false, 'direct', onDeviceLost);
    const info = session.info();
    if (halfPrecision) info.halfPrecisionError = 'float16 runs on WebGPU only';
    return { ...info, fallbackReason: reason, threadsReason: threadsReason ?? null, wasmMs };
  },
  load({ name, bytes }) {
    const reply = activeSession().loadWeights(name, new Uint8Array(bytes));
    stopHashing();
    return reply;
  },
  // A File or Blob, read in slices (a .pth as torch.save writes it, or safetensors). With keep,
  // a float32 copy goes to this browser's storage as it loads, for the next visit. Its SHA-256
  // follows between requests: the reply's `hashing` token names the 'model-hash' event to come.
  async loadFile({ file, name, keep }, id) {
    const keeper = keep ? await startKeeping(await fileKey(file)) : null;
    let reply;
    try {
      const phase = keep ? 'reading, checking, converting to float32 and keeping' : 'reading and checking';
      reply = await activeSession().loadFile(file, name, progressReporter(id, phase), keeper?.write);
    } catch (e) {
      await keeper?.discard();
      throw e;
    }
    const kept = await keeper?.commit({ name, description: reply.description, sourceBytes: file.size });
    return { ...reply, kept: kept ?? null, keptFailure: keeper?.failure ?? null, hashing: hashInBackground(file, kept?.key) };
  },
  // The kept copy is a float32 conversion: the model's hash is the original file's, noted when
  // it was kept (null for copies kept before hashes were).
  async loadKept({ key }, id) {
    const { entry, file } = await keptModel(key);
    const { description } = await activeSession().loadFile(file, entry.name, progressReporter(id, 'reading the kept copy'));
    stopHashing();
    return { description, bytes: entry.sourceBytes, sha256: entry.sha256 ?? null, entry };
  },
  async keptModels() {
    return { models: await listKept() };
  },
  async forgetKept() {
    await forgetKept();
    return {};
  },
  loadRandom({ widthDivisor }) {
    const description = activeSession().loadRandomWeights(widthDivisor);
    stopHashing();
    return { description };
  },
  segment({ width, height, rgba, mode }) {
    return activeSession().segment(width, height, new Uint8Array(rgba), mode);
  },
  // Tests and tools: the last image's class maps and scores, which the page never needs whole.
  resultArrays() {
    return activeSession().resultArrays();
  },
  // Benchmarks: the network through one stage, waited for (the reply's ms times it), and how
  // many convolutions ran each way ({kernel, products, implicit, taps, tiles}).
  async runThrough({ width, height, rgba, stage }) {
    return { convolutions: await activeSession().runThrough(width, height, new Uint8Array(rgba), stage) };
  },
  rescore({ mode }) {
    return activeSession().rescore(mode);
  },
  pixel({ x, y }) {
    return activeSession().pixelInfo(x, y);
  },
  heat({ head, lo, hi, opacity, before = false }) {
    return { rgba: activeSession().heatImage(head, lo, hi, opacity, before) };
  },
  keepBefore() {
    activeSession().keepBefore();
    return {};
  },
  objectChange({ object, truth, width, height }) {
    return activeSession().objectChange(new Uint8Array(object), truth ? new Uint8Array(truth) : undefined, width ?? 0, height ?? 0);
  },
  mask({ head, threshold }) {
    return activeSession().maskImage(head, threshold);
  },
  evaluate({ width, height, mask }) {
    return activeSession().evaluateMask(width, height, new Uint8Array(mask));
  },
  npy({ head }) {
    return { bytes: activeSession().scoreNpy(head) };
  },
  legend() {
    return { classes: rpl.classLegend(), outlierKinds: rpl.outlierKinds() };
  },
  // The experiment: outliers drawn into an image, with their mask (no network pass).
  paste({ width, height, rgba, mask, placements, cutouts }) {
    const sizes = new Uint32Array(cutouts.flatMap((c) => [c.width, c.height]));
    const pieces = cutouts.map((c) => new Uint8Array(c.rgba));
    return rpl.pasteOutliers(width, height, new Uint8Array(rgba), mask ? new Uint8Array(mask) : undefined, placements, sizes, pieces);
  },
  cutOut({ width, height, rgba, outline }) {
    return rpl.cutOut(width, height, new Uint8Array(rgba), new Float32Array(outline));
  },
  maxPixels() {
    return { pixels: activeSession().maxInferencePixels() };
  },
  // Linear memory of the module and what the GPU allocator holds, for leak checks.
  memory() {
    return { wasmBytes: wasm?.memory.buffer.byteLength ?? 0, constructorRuns: rpl?.constructorRuns() ?? 0, ...session?.memoryUsage() };
  },
};

// Test builds (worker URL with ?test-hooks) can lose the device on purpose, as a driver reset
// would: the session destroys it and reports the loss as for any other.
if (new URL(self.location.href).searchParams.has('test-hooks')) {
  ops.destroyDevice = () => {
    activeSession().destroyDevice();
    return {};
  };
}

// The typed arrays of a reply, also inside its {out1, out2} pairs, move to the page uncopied.
function transferables(result) {
  const buffers = new Set();
  const visit = (value, depth) => {
    if (ArrayBuffer.isView(value)) buffers.add(value.buffer);
    else if (depth > 0 && value && typeof value === 'object') Object.values(value).forEach((v) => visit(v, depth - 1));
  };
  visit(result, 2);
  return [...buffers];
}

// After a lost device or a trap in the module (a Rust panic), nothing here can be trusted:
// {reason, code}, or null.
function fatalReason(error) {
  if (deviceLost !== null) return { reason: deviceLost, code: 'device-lost' };
  if (error instanceof WebAssembly.RuntimeError) return { reason: `the inference module crashed (${error.message})`, code: 'module-crashed' };
  return null;
}

// One operation at a time, in arrival order: an await inside one must not let the next start.
let queue = Promise.resolve();

// The model file being hashed: {digest, token, keptKey}; one step of HASH_STEP_BYTES (about 50 ms)
// at a time, queued behind whatever the page asked for, so a request waits one step at most.
const HASH_STEP_BYTES = 8 << 20;
let hashing = null;
let hashTokens = 0;

function stopHashing() {
  hashing?.digest.free();
  hashing = null;
}

// Starts hashing `file` (the model just loaded, in place of any earlier one); returns the token
// of its 'model-hash' event. The kept copy's index entry, if any, gets the hash too.
function hashInBackground(file, keptKey) {
  stopHashing();
  hashTokens += 1;
  hashing = { digest: new rpl.FileDigest(file), token: hashTokens, keptKey };
  scheduleHashStep(hashing);
  return hashTokens;
}

function scheduleHashStep(job) {
  // A macrotask between steps, so that the page's messages join the queue in between.
  setTimeout(() => {
    queue = queue.then(async () => {
      if (hashing !== job) return;
      let sha256;
      try {
        sha256 = job.digest.step(HASH_STEP_BYTES);
      } catch (e) {
        stopHashing();
        self.postMessage({ event: 'model-hash', token: job.token, sha256: null, error: e?.message ?? String(e) });
        return;
      }
      if (sha256 === undefined) {
        scheduleHashStep(job);
        return;
      }
      stopHashing();
      if (job.keptKey) await noteKept(job.keptKey, { sha256 }).catch(() => {});
      self.postMessage({ event: 'model-hash', token: job.token, sha256 });
    });
  }, 0);
}
self.onmessage = ({ data }) => {
  const { id, op, ...args } = data;
  if (op === 'cancel') {
    cancelled.add(args.target);
    return;
  }
  queue = queue.then(async () => {
    const started = performance.now();
    try {
      if (!(op in ops)) throw Object.assign(new Error(`unknown operation ${op}`), { code: 'bad-argument' });
      if (deviceLost !== null && op !== 'memory') throw Object.assign(new Error('device lost'), { code: 'device-lost' });
      const result = await ops[op](args, id);
      cancelled.delete(id);
      const ms = performance.now() - started;
      self.postMessage({ id, ok: true, result: { ...result, ms } }, transferables(result));
    } catch (e) {
      cancelled.delete(id);
      // The module's errors carry a code (src/web.rs); the browser's (storage, a lost file) do not.
      const fatal = fatalReason(e);
      const [error, code] = fatal ? [fatal.reason, fatal.code] : [e?.message ?? String(e), e?.code ?? 'failed'];
      self.postMessage({ id, ok: false, error, code, fatal: fatal !== null });
    }
  });
};
