// The page: picks images and models, hands them to the session (rpl.js, the public API and
// nothing else), draws what comes back. No computation on the results happens here.
import { CONVOLUTIONS, MODEL_FILE, RplSession, drawImageData, toImageData } from './rpl.js';

// Type-checked against rpl.d.ts (tsc --noEmit in the tests); the page's own elements are any.
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const backendParam = params.get('backend');
// ?conv= chooses how WebGPU runs the convolutions (for comparing them); an unknown one is said.
const convParam = params.get('conv');
const convolution = CONVOLUTIONS.find((c) => c === convParam) ?? 'direct';
const convNote = convParam !== null && convParam !== convolution ? ` (?conv=${convParam} is none of ${CONVOLUTIONS.join(', ')})` : '';
const session = new RplSession({
  backend: backendParam === 'cpu' || backendParam === 'webgpu' ? backendParam : 'auto',
  dtype: params.get('dtype') === 'f16' ? 'float16' : 'float32',
  threads: Math.max(0, Math.floor(Number(params.get('threads')) || 0)),
  convolution,
  // ?test-hooks lets tests destroy the GPU device (see worker.js).
  ...(params.has('test-hooks') ? { workerUrl: new URL('./worker.js?test-hooks', import.meta.url) } : {}),
});
// The bundled model and samples sit beside the page's scripts (in a deployed folder, inside its
// content-hashed directory): found from this module, not from the page's address.
const BUNDLED_MODEL = new URL('../models/rpl-demo.safetensors', import.meta.url).href;
const SAMPLES = new URL('../models/samples/', import.meta.url).href;

// The network's two heads, as the Worker names them, and where the page shows each.
/** @type {{name: import('./rpl.js').Head, label: string, classView: string, heatView: string, colour: string}[]} */
const HEADS = [
  { name: 'out1', label: 'out1 (closed set)', classView: 'class-view', heatView: 'heat-view-1', colour: '#888' },
  { name: 'out2', label: 'out2 (RPL)', classView: 'class-view-2', heatView: 'heat-view', colour: '#e53935' },
];
// The OoD mask and the .npy export show the head with the RPL block.
const RPL_HEAD = HEADS[1];

const state = {
  backend: null, // 'webgpu' or 'cpu'
  backendLine: '',
  modelName: null,
  runs: 0,
  result: null, // the last segmentation: sizes, classes, scores, score range
  image: null, // the ImageData sent to the network
  sourceSize: null, // [width, height] of the image before it was shrunk to the inference size
  imageName: null, // for exported files: the file's name, the sample's, or 'camera'
  imageChoices: 0, // images asked for so far, by the visitor or the first visit's sample
  threshold: null, // {mode, value}: the visitor's threshold, in the units of that score mode
  legend: [],
  reloadModel: null, // () => the model loaded again, after a Worker restart
  get maxPixels() { return session.maxPixels; }, // the most pixels the model can take on this device
  loading: null, // the AbortController of the load under way
  // The experiment on the image on screen: its base (the image as opened: {image, name,
  // sourceSize, mask (a sample's ground truth, or null), sample (its name, or null)}), the
  // objects pasted into it, their mask and pixels, and a promise of the last change's run.
  experiment: { base: null, outliers: [], mask: null, lastObject: null, pastedPixels: 0, change: null, applied: Promise.resolve() },
  // Regions cut from images, to paste as objects: [{image (ImageData, opaque on the object), name}],
  // kept for the visit whatever image is on screen.
  cutouts: [],
  truth: null, // the ground truth last evaluated (evaluated again in a new score mode)
  samples: [], // the sample scenes' index
};

// A shared experiment's score mode and threshold, from the link (see updateLink).
if ([...$('score-mode').options].some((o) => o.value === params.get('score'))) $('score-mode').value = params.get('score');
if (params.has('threshold') && Number.isFinite(Number(params.get('threshold')))) {
  state.threshold = { mode: $('score-mode').value, value: Number(params.get('threshold')) };
}

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// Every failure ends up here: the message on the status line; the last result stays on screen.
// A fatal one (lost GPU device, crashed module) restarts the Worker first.
function showError(e) {
  if (e?.fatal) return recover(e.message);
  status(e.message, true);
  return undefined;
}

// Actions wait for a recovery under way, so that they reach the new Worker.
function reportErrors(action) {
  return (...args) => Promise.resolve(recovering).then(() => action(...args)).catch(showError);
}

// At most one call of `task` in flight: calls made meanwhile wait, and only the latest of them
// runs once it is done (the others resolve at once, having done nothing). For requests that
// follow the pointer or a slider: the page never queues stale work in the Worker.
function latestWins(task) {
  let running = false;
  let waiting = null; // {args, resolve, reject} of the latest call made while running
  const start = (args) => {
    running = true;
    return Promise.resolve().then(() => task(...args)).finally(() => {
      running = false;
      if (waiting) {
        const next = waiting;
        waiting = null;
        start(next.args).then(next.resolve, next.reject);
      }
    });
  };
  return (...args) => {
    if (!running) return start(args);
    waiting?.resolve();
    return new Promise((resolve, reject) => { waiting = { args, resolve, reject }; });
  };
}

// Image work (a segmentation with its views, a new score mode, an evaluation) runs one at a
// time: the views' follow-up requests reach the Worker before another image replaces its result.
/** @type {Promise<unknown>} */
let imageWork = Promise.resolve();
/** @template T @param {() => T | Promise<T>} task @returns {Promise<T>} */
function exclusive(task) {
  const run = imageWork.then(task);
  imageWork = run.catch(() => {});
  return run;
}

// --- starting ----------------------------------------------------------------------------------

// The CPU backend: why not WebGPU, and on how many threads (or why one).
function cpuLine(info) {
  const threads = info.threads > 1 ? `${info.threads} threads` : `one thread: ${info.threadsReason}`;
  return `CPU, ${threads} (${info.fallbackReason})`;
}

// The status line once the session (re)starts.
function showBackend(started) {
  return started.then((info) => {
    state.backend = info.backend;
    state.backendLine = info.backend === 'webgpu' ? `WebGPU on ${info.adapter}` : cpuLine(info);
    if (info.dtype === 'f16') state.backendLine += ', float16';
    if (info.halfPrecisionError) state.backendLine += ` (float32: ${info.halfPrecisionError})`;
    // The convolution is named where it is not the default, or where ?conv= asked for one.
    if (info.backend === 'webgpu' && (info.convolution !== 'direct' || convParam !== null)) state.backendLine += `, ${info.convolution} convolutions${convNote}`;
    state.legend = session.legend;
    showOutlierKinds();
    const { version, source, module } = info.build;
    $('about').textContent = `rpl-web ${version}, built from sources ${source} (rpl --version prints the same), ${module} module`;
    status(`${state.backendLine}. Ready.`);
    return info;
  }, (e) => {
    status(`Could not start: ${e.message}`, true);
    throw e;
  });
}
let ready = showBackend(session.ready);

// A new Worker, the model loaded again and the last image run again: the page goes on as before.
let recovering = null;
function recover(reason) {
  recovering ??= (async () => {
    status(`${reason}: restarting the inference worker…`, true);
    ready = showBackend(session.restart());
    await ready;
    if (state.reloadModel) await useModel(state.modelName, state.reloadModel);
    if (state.image && state.reloadModel) await exclusive(() => runNetwork(state.image, state.imageName, state.sourceSize));
    status(`${state.backendLine}. Recovered from: ${reason}.${state.reloadModel ? '' : ' Open the model again.'}`);
  })().catch((e) => status(`Could not recover from ${reason}: ${e.message}. Reload the page.`, true))
    .finally(() => { recovering = null; });
  return recovering;
}
session.onFatal = (error) => recover(error.message);

// --- models ------------------------------------------------------------------------------------

// Loads a model through `load()` (a session load resolving to {description, ms, ...});
// `reload` loads it again should the Worker restart. Resolves to the load's reply.
async function useModel(name, load, reload = load) {
  await ready;
  status(`${state.backendLine}. Loading ${name}…`);
  const reply = await load();
  state.modelName = name;
  state.reloadModel = reload;
  showModelLine(name, reply.description);
  status(`${state.backendLine}. ${name} loaded in ${(reply.ms / 1000).toFixed(1)} s.`);
  return reply;
}

// The model line, with the file's SHA-256 once the Worker has hashed it (after the load).
function showModelLine(name, description) {
  const line = $('model-line');
  const model = session.model;
  const show = (settled) => {
    const { sha256, bytes, hashError } = model;
    const unknown = hashError ? `SHA-256 unknown: ${hashError}` : 'SHA-256 not known';
    const hash = sha256 ? `SHA-256 ${sha256.slice(0, 16)}…` : settled ? unknown : 'SHA-256 being computed…';
    line.textContent = `Model: ${name} (${description}), ${hash}`;
    // The whole hash on hover, to compare with the one published beside a checkpoint.
    line.title = sha256 ? `SHA-256 ${sha256} (${bytes} bytes)` : '';
  };
  show(false);
  session.provenance().then(() => {
    if (session.model === model) show(true);
  }, () => {});
}

// A model's bytes (an ArrayBuffer or Blob, or a promise of one), read as a file is; `reload`
// gives them again (from the file or the cache).
async function loadModel(name, bytes, reload = null) {
  const load = async (what) => session.loadModel(new Blob([await what]), { name });
  return (await useModel(name, () => load(bytes), reload && (() => load(reload())))).description;
}

// `task(onProgress, signal)` with the progress bar and Cancel button of a load shown until it
// settles: a download's bytes and speed, then the weights read in steps.
async function withLoadProgress(label, task) {
  const bar = $('download');
  bar.hidden = false;
  $('cancel-load').hidden = false;
  const started = performance.now();
  const onProgress = ({ phase, tensors, totalTensors, bytes, totalBytes }) => {
    bar.max = totalBytes || 1;
    bar.value = totalBytes ? bytes : 0;
    const seconds = (performance.now() - started) / 1000;
    $('download-text').textContent = phase === 'downloading'
      ? `${label}: ${formatBytes(bytes)}${totalBytes ? ` of ${formatBytes(totalBytes)}` : ''}, ${formatBytes(bytes / Math.max(seconds, 1e-3))}/s`
      : `${label}: ${phase}, tensor ${tensors} of ${totalTensors}, `
        + `${formatBytes(bytes)} of ${formatBytes(totalBytes)} of weights (${seconds.toFixed(0)} s)`;
  };
  const loading = new AbortController();
  state.loading = loading;
  try {
    return await task(onProgress, loading.signal);
  } finally {
    if (state.loading === loading) state.loading = null;
    bar.hidden = true;
    $('cancel-load').hidden = true;
    $('download-text').textContent = '';
  }
}

// A model file as the visitor has it (the released .pth, or safetensors): read in slices in the
// Worker, a float32 copy kept in this browser as it loads. The model in use stays on any failure.
function loadModelFile(file) {
  return withLoadProgress(`Loading ${file.name} (${formatBytes(file.size)})`, async (onProgress, signal) => {
    const reply = await useModel(file.name, () => session.loadModel(file, { keep: true, onProgress, signal }));
    if (reply.kept) {
      state.reloadModel = () => session.loadKept(reply.kept.key);
      status(`${$('status').textContent} Kept in this browser (${formatBytes(reply.kept.bytes)}) for your next visit.`);
    } else if (reply.keptFailure) {
      status(`${$('status').textContent} Not kept for the next visit: ${reply.keptFailure}.`);
    }
    await showKeptModels();
    return reply;
  });
}

function loadKeptModel(entry) {
  return withLoadProgress(`Loading ${entry.name} from this browser`,
    (onProgress, signal) => useModel(entry.name, () => session.loadKept(entry.key, { onProgress, signal })));
}

// The models kept in this browser, each a button that loads it.
async function showKeptModels() {
  const models = await session.keptModels();
  const list = $('kept-models');
  list.replaceChildren();
  list.hidden = models.length === 0;
  for (const entry of models) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `Use ${entry.name} (${formatBytes(entry.bytes)}, kept ${entry.date.slice(0, 10)})`;
    button.title = entry.description;
    button.addEventListener('click', reportErrors(() => loadKeptModel(entry)));
    list.append(button);
  }
  return models;
}

function formatBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`;
}

// A model by URL: downloaded with its progress, or taken from this browser's cache while the
// server's copy is the same version.
function loadModelFromUrl(url) {
  const name = url.split('/').pop();
  return withLoadProgress(`Downloading ${name}`, async (onProgress, signal) => (await useModel(name,
    () => session.loadModel(url, { name, onProgress, signal }), () => session.loadModel(url, { name }))).description);
}

// Each file input is emptied once read, so that picking the same file again runs it again.
function onFile(input, action) {
  $(input).addEventListener('change', reportErrors(async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (file) await action(file);
  }));
}

onFile('model-file', loadModelFile);
$('cancel-load').addEventListener('click', () => state.loading?.abort());
$('model-url-form').addEventListener('submit', reportErrors(async (event) => {
  event.preventDefault();
  const url = $('model-url').value.trim();
  if (url) await loadModelFromUrl(url);
}));
// Every copy of a model this page made: the kept files, the downloads' cache, and any model
// response in another cache (the service worker's).
$('forget-models').addEventListener('click', reportErrors(async () => {
  const { kept, downloads } = await session.forgetModels();
  await showKeptModels();
  status(kept + downloads ? `Forgot ${kept} kept and ${downloads} downloaded models: the next load reads or downloads again.`
    : 'No models were kept in this browser.');
}));

// --- images ------------------------------------------------------------------------------------

// The inference size of a width x height image: its longer side at most the chosen size, its
// pixels at most what the device can run (never enlarged). Returns [width, height, why].
function inferenceSize(width, height) {
  return session.inferenceSize(width, height, Number($('max-side').value));
}

// Runs the network on an ImageData; the views change only once it has succeeded. Call it
// through exclusive().
/** @param {ImageData} image @param {string} name @param {[number, number]} [sourceSize] */
async function runNetwork(image, name, sourceSize = [image.width, image.height]) {
  // Only WebGPU compiles shaders on the first run; the CPU backend has none.
  const compiling = state.runs === 0 && state.backend === 'webgpu' ? ' (the first run also compiles the GPU shaders)' : '';
  status(`${state.backendLine}. Running on ${image.width}x${image.height}${compiling}…`);
  const result = await session.segment(image, { score: $('score-mode').value, sourceSize });
  state.runs += 1;
  state.image = image;
  state.imageName = name;
  state.sourceSize = sourceSize;
  state.result = result;
  drawImageData($('input-view'), image);
  for (const head of HEADS) drawImageData($(head.classView), result.classImages[head.name]);
  showLegend(result);
  await showScores(result);
  return result;
}

// A name for exported files: the file's own (without its extension), safe in any file system.
function imageNameOf(source) {
  const name = (source.name ?? '').replace(/\.[^.]*$/, '').replace(/[^\w.-]+/g, '_');
  return name || 'image';
}

// An image file (or camera frame) through the network at its inference size; `name` names its
// exports (the file's name by default). Returns the result.
async function segmentBlob(source, name = imageNameOf(source)) {
  state.imageChoices += 1;
  // An image chosen while the starting model loads runs once it is in.
  if (!state.modelName) await initialModel?.catch(() => {});
  if (!state.modelName) throw new Error('No model is loaded yet: wait for the demo model, or open one.');
  let why = '';
  const decoded = await toImageData(source, (w, h) => {
    const [width, height, reason] = inferenceSize(w, h);
    why = reason;
    return /** @type {[number, number]} */ ([width, height]);
  });
  const { image } = decoded;
  const result = await exclusive(() => runNetwork(image, name, [decoded.width, decoded.height]));
  resetExperiment({ image, name, sourceSize: [decoded.width, decoded.height], mask: null, sample: null });
  state.metrics = null;
  state.truth = null;
  $('metrics').hidden = true;
  $('curves').hidden = true;
  const resized = why ? ` (shrunk from ${decoded.width}x${decoded.height}: ${why})` : '';
  status(`${state.backendLine}. Done in ${result.ms.toFixed(0)} ms at ${image.width}x${image.height}${resized}.`);
  return result;
}

function showLegend(result) {
  const present = new Set(result.classesPresent);
  const list = $('legend');
  list.replaceChildren(...state.legend.filter((c) => present.has(c.id)).map((c) => {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${c.colour.join(',')})`;
    item.append(swatch, c.name);
    return item;
  }));
}

// Heat maps of both heads on one colour scale, the bar in score units, the thresholded mask.
// The visitor's threshold stays (clamped to the new range) until the score mode, and with it
// the units, changes.
async function showScores(scores) {
  const [lo, hi] = scores.scoreRange;
  state.result = { ...state.result, ...scores };
  const slider = $('threshold');
  slider.min = lo;
  slider.max = hi;
  slider.step = (hi - lo) / 1000 || 0.001;
  if (state.threshold?.mode !== scores.mode) state.threshold = null;
  slider.value = Math.min(hi, Math.max(lo, state.threshold?.value ?? lo + 0.5 * (hi - lo)));
  $('bar-lo').textContent = lo.toFixed(2);
  $('bar-hi').textContent = hi.toFixed(2);
  $('bar-unit').textContent = `${scores.mode}${scores.baseline ? ' (baseline)' : ''}`;
  await Promise.all([drawHeat(), drawMask()]);
}

const drawHeat = latestWins(async () => {
  const r = state.result;
  if (!r) return;
  const [lo, hi] = r.scoreRange;
  const opacity = Number($('opacity').value);
  const images = await Promise.all(HEADS.map((head) => session.heatImage(head.name, { range: [lo, hi], opacity })));
  HEADS.forEach((head, i) => drawImageData($(head.heatView), images[i]));
});

const drawMask = latestWins(async () => {
  const r = state.result;
  if (!r) return;
  const threshold = Number($('threshold').value);
  const { share, image } = await session.maskImage(RPL_HEAD.name, threshold);
  drawImageData($('mask-view'), image);
  $('threshold-value').textContent = threshold.toFixed(3);
  $('mask-share').textContent = `${(100 * share).toFixed(2)} % of pixels`;
  state.result.maskShare = share;
});

function drawColourBar() {
  const canvas = $('colour-bar');
  const context = canvas.getContext('2d');
  // The same blue-cyan-green-yellow-red ramp as the heat maps.
  const gradient = context.createLinearGradient(0, 0, canvas.width, 0);
  ['#0000ff', '#00ffff', '#00ff00', '#ffff00', '#ff0000'].forEach((c, i) => gradient.addColorStop(i / 4, c));
  context.fillStyle = gradient;
  context.fillRect(0, 0, canvas.width, canvas.height);
}
drawColourBar();

onFile('image-file', segmentBlob);
// A new score mode: the heat maps, the metrics and the before and after, all in its units.
function changeScoreMode() {
  return exclusive(async () => {
    updateLink();
    if (!state.result) return;
    await showScores(await session.rescore($('score-mode').value));
    if (state.truth) await evaluateMask(state.truth);
    if (!$('before-after').hidden && state.experiment.lastObject) await showBeforeAfter(state.experiment.lastObject);
  });
}
$('score-mode').addEventListener('change', reportErrors(changeScoreMode));
// Slider moves during image work wait for it (its views first), then only the latest one runs.
$('opacity').addEventListener('input', reportErrors(() => imageWork.then(drawHeat)));
// The visitor's threshold, in the units of the score mode on screen.
function setThreshold(value) {
  if (value !== undefined) $('threshold').value = String(value);
  if (state.result) state.threshold = { mode: state.result.mode, value: Number($('threshold').value) };
  linkLater();
}
$('threshold').addEventListener('input', reportErrors(() => {
  setThreshold();
  return imageWork.then(drawMask);
}));
$('max-side').addEventListener('change', () => status(`${state.backendLine}. The next image runs at the new size.`));

// Drop or paste an image anywhere; a PNG dropped on the ground-truth field is a mask.
document.addEventListener('dragover', (event) => event.preventDefault());
document.addEventListener('drop', reportErrors(async (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (!file) return;
  if (event.target.closest?.('#ground-truth')) return evaluateMaskFile(file);
  if (MODEL_FILE.test(file.name)) return loadModelFile(file);
  await segmentBlob(file);
}));
document.addEventListener('paste', reportErrors(async (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith('image/'));
  if (file) await segmentBlob(file);
}));

// --- reading a pixel ---------------------------------------------------------------------------

const cursor = { x: 0, y: 0 };

// Hover and arrow keys ask for the pixel under the cursor: the latest position wins.
const showPixel = latestWins(async (x, y) => {
  const r = state.result;
  if (!r) return;
  const info = await session.pixel(x, y);
  const top = (probabilities) => [...probabilities].map((p, id) => ({ p, id })).sort((a, b) => b.p - a.p).slice(0, 3)
    .map(({ p, id }) => `${state.legend[id]?.name ?? id} ${(100 * p).toFixed(1)} %`).join(', ');
  $('pixel-info').textContent = `(${x}, ${y}) ` + HEADS.map(({ name }) =>
    `${name}: ${info.names[name]} [${top(info.probabilities[name])}], score ${info.scores[name].toFixed(3)}`).join(' · ');
});

for (const id of ['input-view', 'class-view', 'class-view-2', 'heat-view-1', 'heat-view', 'mask-view']) {
  const canvas = $(id);
  // Not event.currentTarget: reportErrors runs the handler after the event's dispatch, when it is null.
  canvas.addEventListener('mousemove', reportErrors(async (event) => {
    const box = canvas.getBoundingClientRect();
    cursor.x = Math.min(canvas.width - 1, Math.floor(((event.clientX - box.left) / box.width) * canvas.width));
    cursor.y = Math.min(canvas.height - 1, Math.floor(((event.clientY - box.top) / box.height) * canvas.height));
    await imageWork.then(() => showPixel(cursor.x, cursor.y));
  }));
}
$('input-view').addEventListener('keydown', reportErrors(async (event) => {
  const r = state.result;
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (!r || !(event.key in moves)) return;
  event.preventDefault();
  const step = event.shiftKey ? 10 : 1;
  cursor.x = Math.max(0, Math.min(r.width - 1, cursor.x + moves[event.key][0] * step));
  cursor.y = Math.max(0, Math.min(r.height - 1, cursor.y + moves[event.key][1] * step));
  await imageWork.then(() => showPixel(cursor.x, cursor.y));
}));

// --- the experiment: paste an outlier ----------------------------------------------------------

// Objects are {kind, x, y, size, seed}: where each stands (its bottom centre) and its size as
// fractions of the image (a shared link gives the same places at any size), rounded as the link
// writes them, so that the page and the link compute with the same numbers.
const fraction = (value) => Math.round(Math.min(1, Math.max(0, value)) * 1e4) / 1e4;

function showOutlierKinds() {
  const select = $('outlier-kind');
  if (select.options.length) return;
  select.append(...[['held out: never in the demo model\'s training', true], ['seen in training', false]].map(([label, heldOut]) => {
    const group = document.createElement('optgroup');
    group.label = String(label);
    for (const kind of session.outlierKinds.filter((k) => k.heldOut === heldOut)) {
      group.append(new Option(`${kind.name} (${heldOut ? 'held out' : 'training'})`, kind.name));
    }
    return group;
  }));
}

// A new image on screen: nothing pasted into it yet.
function resetExperiment(base) {
  state.experiment = { base, outliers: [], mask: null, lastObject: null, pastedPixels: 0, change: null, applied: Promise.resolve() };
  $('before-after').hidden = true;
  showExperiment();
  updateLink();
}

function showExperiment() {
  const { base, outliers, pastedPixels } = state.experiment;
  $('undo-outlier').disabled = outliers.length === 0;
  $('clear-outliers').disabled = outliers.length === 0;
  const m = state.metrics;
  const figures = m ? `: AUROC out1 ${m.out1.auroc.toFixed(4)}, out2 ${m.out2.auroc.toFixed(4)}; `
    + `FPR95 out1 ${m.out1.fpr95.toFixed(4)}, out2 ${m.out2.fpr95.toFixed(4)}` : '';
  const unlinked = base?.sample && outliers.some((o) => !o.kind) ? ' (the link leaves the cut-outs out: images stay on this machine)' : '';
  $('experiment-report').textContent = !base ? '' : outliers.length === 0 ? 'Nothing pasted yet.'
    : `${outliers.map(objectName).join(', ')} pasted on ${pastedPixels} pixels${figures}${unlinked}`;
}

// The base image with the objects drawn in, segmented, and evaluated against their mask (with a
// sample's own ground truth); with `compare`, the last object's before and after. Through
// exclusive().
async function pasteAndRun(compare) {
  const { base, outliers } = state.experiment;
  compare &&= outliers.length > 0 && state.result !== null;
  if (compare) await session.keepBefore();
  const { width, height } = base.image;
  const placements = outliers.map(({ x, y, size, ...object }) => ({ ...object, x: x * width, y: y * height, size: size * height }));
  const cutouts = state.cutouts.map((c) => c.image);
  const pasted = await session.pasteOutliers(base.image, placements, { baseMask: base.mask, cutouts });
  const result = await runNetwork(pasted.image, base.name, base.sourceSize);
  Object.assign(state.experiment, { mask: pasted.mask, lastObject: pasted.lastObject, pastedPixels: pasted.pastedPixels, change: null });
  if (outliers.length || base.mask) {
    await evaluateMask(pasted.mask);
  } else {
    state.metrics = null;
    state.truth = null;
    $('metrics').hidden = true;
    $('curves').hidden = true;
  }
  if (compare) await showBeforeAfter(pasted.lastObject);
  $('before-after').hidden = !compare;
  showExperiment();
  updateLink();
  const what = outliers.length ? `${outliers.length} pasted object${outliers.length > 1 ? 's' : ''}` : 'no pasted object';
  status(`${state.backendLine}. Done in ${result.ms.toFixed(0)} ms with ${what}.`);
}

// The last object's effect: both heads' score maps before and after on one colour scale, their
// mean scores on it and elsewhere, and the label the closed-set head gave it.
async function showBeforeAfter(object) {
  const change = await session.objectChange(object, { truth: state.experiment.mask });
  const options = { range: state.result.scoreRange, opacity: Number($('opacity').value) };
  const views = await Promise.all(HEADS.flatMap(({ name }) => [true, false].map((before) => session.heatImage(name, { ...options, before }))));
  ['before-1', 'after-1', 'before-2', 'after-2'].forEach((id, i) => drawImageData($(id), views[i]));
  const figure = (value) => (Number.isFinite(value) ? value.toFixed(3) : '–');
  $('change-table').querySelector('tbody').replaceChildren(...HEADS.map(({ name, label }) => {
    const row = document.createElement('tr');
    const head = document.createElement('th');
    head.scope = 'row';
    head.textContent = `${label}, ${state.result.mode}`;
    const cells = ['inside', 'outside'].flatMap((where) => ['before', 'after', 'change'].map((key) => {
      const cell = document.createElement('td');
      cell.textContent = figure(change[where][name][key]);
      return cell;
    }));
    row.append(head, ...cells);
    return row;
  }));
  const { name, share, confidence } = change.out1Class;
  $('closed-set-label').textContent = `out1 labels ${(100 * share).toFixed(0)} % of the object's ${change.pixels} pixels `
    + `"${name}", with a mean softmax confidence of ${(100 * confidence).toFixed(1)} %: a closed-set network has no class for `
    + 'something it never saw, so it picks one, often confidently.';
  state.experiment.change = change;
  showSwipe();
}

// Before and after in one view per head: the image before left of the line, after right of it.
function showSwipe() {
  const swipe = /** @type {HTMLInputElement} */ (document.querySelector('input[name="before-after-view"]:checked')).value === 'swipe';
  $('swipe-views').hidden = !swipe;
  $('swipe-control').hidden = !swipe;
  $('side-views').hidden = swipe;
  if (!swipe) return;
  for (const [view, before, after] of [['swipe-1', 'before-1', 'after-1'], ['swipe-2', 'before-2', 'after-2']].map((ids) => ids.map($))) {
    Object.assign(view, { width: after.width, height: after.height });
    const context = view.getContext('2d');
    context.drawImage(after, 0, 0);
    const split = Math.round(Number($('swipe-position').value) * after.width);
    if (split > 0) context.drawImage(before, 0, 0, split, before.height, 0, 0, split, before.height);
    context.fillStyle = '#fff';
    context.fillRect(split - 1, 0, 2, after.height);
  }
}
for (const radio of document.querySelectorAll('input[name="before-after-view"]')) radio.addEventListener('change', showSwipe);
$('swipe-position').addEventListener('input', showSwipe);
// Dragging across either swipe view moves the line.
for (const id of ['swipe-1', 'swipe-2']) {
  $(id).addEventListener('pointermove', (event) => {
    if (!event.buttons) return;
    $('swipe-position').value = String(inputFraction(event, $(id))[0]);
    showSwipe();
  });
}

// Changes the objects (`change(outliers)`) and runs the scene again; with `compare` (a placed or
// moved object), before and after are shown.
function changeExperiment(change, compare = false) {
  const experiment = state.experiment;
  if (!experiment.base) throw new Error('Open an image or a sample first, then paste objects into it.');
  change(experiment.outliers);
  const run = exclusive(async () => {
    if (state.experiment === experiment) await pasteAndRun(compare);
  });
  experiment.applied = run.catch(() => {});
  return run;
}

// The chosen object at (x, y): a generator kind, whose seed (colours and shape) counts the objects
// so that the same actions give the same scene, or a cut-out (the list's value `cutout:INDEX`).
function newOutlier(x, y) {
  const where = { x: fraction(x), y: fraction(y), size: fraction(Number($('outlier-size').value)) };
  const choice = $('outlier-kind').value;
  if (choice.startsWith('cutout:')) return { cutout: Number(choice.slice('cutout:'.length)), ...where };
  return { kind: choice, ...where, seed: state.experiment.outliers.length + 1 };
}

const objectName = (outlier) => outlier.kind ?? state.cutouts[outlier.cutout].name;

// Whether the point (fractions of the image) falls on `outlier`'s box, standing on its foot: a
// generated object about as wide as it is tall, a cut-out as its own shape.
function onOutlier(outlier, [x, y]) {
  const { width, height } = state.experiment.base.image;
  const cut = outlier.kind ? null : state.cutouts[outlier.cutout].image;
  const aspect = cut ? cut.width / cut.height : 1;
  return Math.abs(x - outlier.x) <= (aspect * outlier.size * height) / width / 2 && y <= outlier.y && y >= outlier.y - outlier.size;
}

// Where a pointer event falls on a canvas (the input view by default), as fractions of it.
function inputFraction(event, canvas = $('input-view')) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height];
}

// Press where the object should stand, drag, let go: a new object, or the last one moved when
// the press was on it.
let pressedAt = null;
$('input-view').addEventListener('pointerdown', (event) => {
  if (!state.experiment.base || event.button !== 0) return;
  pressedAt = inputFraction(event);
  $('input-view').setPointerCapture(event.pointerId);
});
$('input-view').addEventListener('pointerup', (event) => {
  if (!pressedAt) return;
  const [start, [x, y]] = [pressedAt, inputFraction(event)];
  pressedAt = null;
  reportErrors(() => changeExperiment((outliers) => {
    const last = outliers.at(-1);
    if (last && onOutlier(last, start)) outliers[outliers.length - 1] = { ...last, x: fraction(x), y: fraction(y) };
    else outliers.push(newOutlier(x, y));
  }, true))();
});
// Enter pastes at the input's keyboard cursor (the arrow keys move it).
$('input-view').addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' || !state.result || !state.experiment.base) return;
  event.preventDefault();
  const { width, height } = state.result;
  const [x, y] = [(cursor.x + 0.5) / width, (cursor.y + 0.5) / height];
  reportErrors(() => changeExperiment((outliers) => outliers.push(newOutlier(x, y)), true))();
});
$('undo-outlier').addEventListener('click', reportErrors(() => changeExperiment((outliers) => outliers.pop())));
$('clear-outliers').addEventListener('click', reportErrors(() => changeExperiment((outliers) => outliers.splice(0))));

// --- the experiment: objects cut from any image --------------------------------------------------

// The image to cut from ({image, name}), the outline being drawn (image pixels) and where the
// drag began.
const cutting = { source: null, outline: null, start: null };
// The image to cut from keeps at most this many pixels a side.
const CUT_SIDE = 1024;

async function openCutSource(source, name) {
  const { image } = await toImageData(source, (w, h) => {
    const [width, height] = session.inferenceSize(w, h, CUT_SIDE);
    return /** @type {[number, number]} */ ([width, height]);
  });
  Object.assign(cutting, { source: { image, name }, outline: null, start: null });
  $('cutout-views').hidden = false;
  $('cut-whole').disabled = false;
  drawCutSource();
}

// The image to cut from, with the outline drawn so far.
function drawCutSource() {
  const canvas = $('cutout-source');
  drawImageData(canvas, cutting.source.image);
  if (!cutting.outline) return;
  const context = canvas.getContext('2d');
  context.lineWidth = Math.max(1, canvas.width / 300);
  context.strokeStyle = '#ffeb3b';
  context.beginPath();
  cutting.outline.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
  context.closePath();
  context.stroke();
}

// Where a pointer event falls on the image to cut from, in its pixels.
function cutPoint(event) {
  const { width, height } = cutting.source.image;
  const [fx, fy] = inputFraction(event, $('cutout-source'));
  return [fx * width, fy * height];
}

// A region of the image to cut from becomes an object the list offers (and chooses).
async function addCutout(outline) {
  const { image, pixels } = await session.cutOut(cutting.source.image, outline);
  const name = `cut-out ${state.cutouts.length + 1}`;
  state.cutouts.push({ image, name });
  const group = $('outlier-kind').querySelector('optgroup[data-cutouts]') ?? Object.assign(document.createElement('optgroup'), { label: 'your cut-outs' });
  group.dataset.cutouts = '';
  group.append(new Option(`${name} (${image.width}x${image.height}, from ${cutting.source.name})`, `cutout:${state.cutouts.length - 1}`));
  $('outlier-kind').append(group);
  $('outlier-kind').value = `cutout:${state.cutouts.length - 1}`;
  drawImageData($('cutout-preview'), image);
  $('cutout-caption').textContent = `${name}: ${pixels} pixels, chosen in the Object list; press on the input to paste it`;
}

onFile('cutout-file', (file) => openCutSource(file, imageNameOf(file)));
$('cutout-from-input').addEventListener('click', reportErrors(() => {
  const base = state.experiment.base;
  if (!base) throw new Error('Open an image or a sample first, then cut from it.');
  return openCutSource(base.image, base.name);
}));
$('cut-whole').addEventListener('click', reportErrors(() => {
  const { width, height } = cutting.source.image;
  return addCutout([[0, 0], [width, 0], [width, height], [0, height]]);
}));
$('cutout-source').addEventListener('pointerdown', (event) => {
  if (!cutting.source || event.button !== 0) return;
  cutting.start = cutPoint(event);
  cutting.outline = [cutting.start];
  $('cutout-source').setPointerCapture(event.pointerId);
});
$('cutout-source').addEventListener('pointermove', (event) => {
  if (!cutting.start) return;
  const [x, y] = cutPoint(event);
  const [x0, y0] = cutting.start;
  const lasso = /** @type {HTMLInputElement} */ (document.querySelector('input[name="cut-shape"]:checked')).value === 'lasso';
  cutting.outline = lasso ? [...cutting.outline, [x, y]] : [[x0, y0], [x, y0], [x, y], [x0, y]];
  drawCutSource();
});
$('cutout-source').addEventListener('pointerup', () => {
  if (!cutting.start) return;
  const outline = cutting.outline;
  cutting.start = null;
  // A press without a drag outlines nothing: no cut.
  if (outline.length > 2) reportErrors(() => addCutout(outline))();
});

// The experiment in the address bar, for a sample (a visitor's own image cannot travel in a
// link): ?sample=NAME&paste=KIND:X:Y:SIZE:SEED,...&score=MODE&threshold=VALUE.
const LINK_KEYS = ['sample', 'paste', 'score', 'threshold'];
function updateLink() {
  const url = new URL(location.href);
  for (const key of LINK_KEYS) url.searchParams.delete(key);
  const { base, outliers } = state.experiment;
  if (base?.sample) {
    url.searchParams.set('sample', base.sample);
    const linked = outliers.filter((o) => o.kind);
    if (linked.length) url.searchParams.set('paste', linked.map((o) => [o.kind, o.x, o.y, o.size, o.seed].join(':')).join(','));
    url.searchParams.set('score', $('score-mode').value);
    if (state.threshold) url.searchParams.set('threshold', String(state.threshold.value));
  }
  history.replaceState(history.state, '', url);
}
// Browsers limit how often the address may change: a slider's moves update it once they pause.
let linkTimer = null;
function linkLater() {
  clearTimeout(linkTimer);
  linkTimer = setTimeout(updateLink, 300);
}

// A link's objects: refused whole, with the reason, if any is not KIND:X:Y:SIZE:SEED.
function parsePasted(text) {
  const kinds = new Set(session.outlierKinds.map((k) => k.name));
  return text.split(',').map((item) => {
    const [kind, ...parts] = item.split(':');
    const [x, y, size, seed] = parts.map(Number);
    if (!kinds.has(kind) || parts.length !== 4 || ![x, y, size, seed].every(Number.isFinite) || size <= 0) {
      throw new Error(`The link's object "${item}" is not KIND:X:Y:SIZE:SEED with a known kind (${[...kinds].join(', ')})`);
    }
    return { kind, x: fraction(x), y: fraction(y), size: fraction(size), seed };
  });
}

// --- the guided path ---------------------------------------------------------------------------

// Five steps a class can walk through on the live page: each one action, and an observation
// read off the page's own figures once it is done. All steps use one scene and one held-out
// object, set up by whichever step runs first.
const GUIDE_SCENE = { sample: 'scene_0000', object: { kind: 'checker-star', x: 0.5, y: 0.92, size: 0.3, seed: 1 } };
const percent = (value, digits = 1) => `${(100 * value).toFixed(digits)} %`;
const GUIDE = [
  {
    title: 'The closed-set network labels everything',
    text: 'A segmentation network learns a fixed list of classes: the 19 of Cityscapes (road, car, '
      + 'person, vegetation…). It has no answer for "none of these", so every pixel gets one of them, even '
      + 'an object it has never seen. Paste such an object into a street and look at what out1 calls it.',
    action: 'Paste a held-out object',
    paper: '§1 Introduction',
    run: async () => {},
    observe: ({ change }) => `out1 labels ${percent(change.out1Class.share, 0)} of the object's ${change.pixels} pixels `
      + `"${change.out1Class.name}", with a mean softmax confidence of ${percent(change.out1Class.confidence)}: a confident mistake.`,
  },
  {
    title: 'Energy: how well any known class fits',
    text: 'The anomaly score is the energy, −log Σ exp(logit) over the classes. Where one class fits '
      + 'well (a large logit, as on the road the network knows), the energy is low; where no class fits, '
      + 'all logits stay small and the energy is high. Show the energy and compare the object with the rest.',
    action: 'Score with energy',
    paper: '§3 Method (the energy-based score)',
    run: () => setScoreMode('energy'),
    observe: ({ change }) => `out1's mean energy is ${change.inside.out1.after.toFixed(2)} on the object and `
      + `${change.outside.out1.after.toFixed(2)} elsewhere: the closed-set network finds the object only a little `
      + 'odd, because its logits were never trained to be small on anything.',
  },
  {
    title: 'The residual block raises the score on the unknown',
    text: 'RPL adds a residual block beside the frozen network (out2). Trained with outliers pasted into '
      + 'street scenes, it pushes the logits down on anything unknown and leaves the known pixels alone. '
      + 'Swipe between before and after the object was pasted, for both heads.',
    action: 'Compare before and after',
    paper: '§3 Method (residual pattern learning)',
    run: async () => {
      await setScoreMode('energy');
      $('before-after').querySelector('input[value="swipe"]').checked = true;
      showSwipe();
      $('before-after').scrollIntoView({ block: 'nearest' });
    },
    observe: ({ change }) => `Pasting the object raised out2's mean energy on it by ${change.inside.out2.change.toFixed(2)}, `
      + `out1's by ${change.inside.out1.change.toFixed(2)}; out2 gives out1's class to `
      + `${percent(change.sameClassOnInliers, 2)} of the known (inlier) pixels: the segmentation of what the network knows barely changes.`,
  },
  {
    title: 'A threshold makes a mask; FPR95 measures it',
    text: 'The pixels whose score is above a threshold form the OoD mask. A low threshold catches all of '
      + 'the object but flags known pixels too; a high one misses parts of it. FPR95 is the share of '
      + 'known pixels flagged at the threshold that catches 95 % of the unknown ones: lower is better.',
    action: 'Threshold at the object\'s mean out2 score',
    paper: '§4 Experiments (evaluation metrics)',
    run: async () => {
      await setScoreMode('energy');
      setThreshold(state.experiment.change.inside.out2.after);
      await imageWork.then(drawMask);
    },
    observe: ({ metrics }) => `The mask (out2 above ${$('threshold-value').textContent}) covers ${$('mask-share').textContent}. `
      + `FPR95: out2 ${percent(metrics.out2.fpr95, 2)}, out1 ${percent(metrics.out1.fpr95, 2)}; `
      + `AUROC: out2 ${metrics.out2.auroc.toFixed(4)}, out1 ${metrics.out1.auroc.toFixed(4)}.`,
  },
  {
    title: 'A baseline score on the same object',
    text: 'Max-softmax, the largest class probability (negated: higher means more anomalous), is the '
      + 'classic baseline of Hendrycks and Gimpel: it only asks how sure the network is. Score the same '
      + 'scene with it and compare with the energy of step 4.',
    action: 'Score with max-softmax',
    paper: '§4 Experiments (comparison with other methods)',
    run: () => setScoreMode('max-softmax'),
    observe: ({ metrics }) => `With max-softmax: FPR95 out2 ${percent(metrics.out2.fpr95, 2)}, out1 ${percent(metrics.out1.fpr95, 2)}; `
      + `AUROC out2 ${metrics.out2.auroc.toFixed(4)}, out1 ${metrics.out1.auroc.toFixed(4)}`
      + (guide.energy ? ` (energy: FPR95 out2 ${percent(guide.energy.out2.fpr95, 2)}, AUROC out2 ${guide.energy.out2.auroc.toFixed(4)}).` : '.'),
  },
];
const guide = { step: 0, energy: null };

function setScoreMode(mode) {
  if ($('score-mode').value === mode) return Promise.resolve();
  $('score-mode').value = mode;
  return changeScoreMode();
}

// The guide's scene and object, unless they are on screen already.
async function guideScene() {
  const { base, outliers } = state.experiment;
  const { kind, x, y } = GUIDE_SCENE.object;
  if (base?.sample === GUIDE_SCENE.sample && outliers.length === 1 && outliers[0].kind === kind && outliers[0].x === x && outliers[0].y === y) return;
  const sample = state.samples.find((s) => s.name === GUIDE_SCENE.sample);
  if (!sample) throw new Error(`The guided path needs the sample scene ${GUIDE_SCENE.sample}, which is missing here.`);
  await showSample(sample);
  await changeExperiment((list) => list.push({ ...GUIDE_SCENE.object }), true);
}

function showGuideStep() {
  const step = GUIDE[guide.step];
  $('guide-steps').querySelectorAll('button').forEach((button, i) => {
    if (i === guide.step) button.setAttribute('aria-current', 'step');
    else button.removeAttribute('aria-current');
  });
  $('guide-heading').textContent = `Step ${guide.step + 1} of ${GUIDE.length}: ${step.title}`;
  $('guide-text').textContent = step.text;
  $('guide-action').textContent = step.action;
  $('guide-observation').textContent = '';
  $('guide-paper').textContent = `Liu et al., ICCV 2023 (arXiv 2211.14512), ${step.paper}`;
  $('guide-back').disabled = guide.step === 0;
  $('guide-next').disabled = guide.step === GUIDE.length - 1;
}

$('guide-steps').replaceChildren(...GUIDE.map((step, i) => {
  const item = document.createElement('li');
  const button = Object.assign(document.createElement('button'), { type: 'button', textContent: `${i + 1}. ${step.title}` });
  button.addEventListener('click', () => {
    guide.step = i;
    showGuideStep();
    $('guide-action').focus();
  });
  item.append(button);
  return item;
}));
for (const [id, move] of /** @type {[string, number][]} */ ([['guide-back', -1], ['guide-next', 1]])) {
  $(id).addEventListener('click', () => {
    guide.step = Math.min(GUIDE.length - 1, Math.max(0, guide.step + move));
    showGuideStep();
  });
}
$('guide-action').addEventListener('click', reportErrors(async () => {
  const step = GUIDE[guide.step];
  $('guide-action').disabled = true;
  try {
    await guideScene();
    await step.run();
    await state.experiment.applied;
    await imageWork;
    if ($('score-mode').value === 'energy') guide.energy = state.metrics;
    $('guide-observation').textContent = step.observe({ change: state.experiment.change, metrics: state.metrics });
  } finally {
    $('guide-action').disabled = false;
  }
}));
showGuideStep();

// --- ground truth ------------------------------------------------------------------------------

// A ground-truth mask image (its first channel; one of the image's size before it was shrunk is
// shrunk with it).
function evaluateMaskFile(blob) {
  return exclusive(() => evaluateMask(blob));
}

// Through exclusive(): the metrics are of the image on screen.
async function evaluateMask(mask) {
  if (!state.result) throw new Error('Segment an image first, then drop its ground-truth mask.');
  const metrics = await session.evaluate(mask);
  state.truth = mask;
  const rows = HEADS.map(({ name, label }) => {
    const m = metrics[name];
    const row = document.createElement('tr');
    const cells = [label, m.auroc, m.ap, m.fpr95].map((v, i) => {
      const cell = document.createElement(i ? 'td' : 'th');
      if (!i) cell.scope = 'row';
      cell.textContent = typeof v === 'number' ? v.toFixed(4) : v;
      return cell;
    });
    row.append(...cells);
    return row;
  });
  $('metrics').querySelector('tbody').replaceChildren(...rows);
  $('metrics').hidden = false;
  $('curves').hidden = false;
  plotCurves($('roc-curve'), HEADS.map(({ name }) => metrics[name].roc), 'false positive rate', 'true positive rate');
  plotCurves($('pr-curve'), HEADS.map(({ name }) => metrics[name].pr), 'recall', 'precision');
  state.metrics = metrics;
  return metrics;
}

function plotCurves(canvas, curves, xLabel, yLabel) {
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  const pad = 32;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = getComputedStyle(document.body).color;
  context.fillStyle = context.strokeStyle;
  context.strokeRect(pad, 8, width - pad - 8, height - pad - 8);
  context.fillText(xLabel, pad, height - 8);
  context.save();
  context.translate(12, height - pad);
  context.rotate(-Math.PI / 2);
  context.fillText(yLabel, 0, 0);
  context.restore();
  curves.forEach((points, k) => {
    context.strokeStyle = HEADS[k].colour;
    context.lineWidth = 2;
    context.beginPath();
    for (let i = 0; i < points.length; i += 2) {
      const x = pad + points[i] * (width - pad - 8);
      const y = 8 + (1 - points[i + 1]) * (height - pad - 16);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    }
    context.stroke();
  });
  HEADS.forEach((head, k) => {
    context.fillStyle = head.colour;
    context.fillText(head.label, width - 100, height - pad - 12 * (HEADS.length - k));
  });
}

onFile('mask-file', evaluateMaskFile);

// --- export ------------------------------------------------------------------------------------

function download(blob, name) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// Exported files are named after the image, the head and the score mode:
// street_input.png, street_out1_classes.png, street_out2_energy.png, street_out2_energy_mask.png.
function exportName(viewId) {
  const image = state.imageName ?? 'image';
  const mode = state.result?.mode ?? $('score-mode').value;
  if (viewId === 'input-view') return `${image}_input`;
  if (viewId === 'mask-view') return `${image}_${RPL_HEAD.name}_${mode}_mask`;
  const head = HEADS.find((h) => h.classView === viewId || h.heatView === viewId);
  return head.classView === viewId ? `${image}_${head.name}_classes` : `${image}_${head.name}_${mode}`;
}

for (const button of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[data-export]'))) {
  const view = button.dataset.export;
  button.addEventListener('click', () => $(view).toBlob((blob) => download(blob, `${exportName(view)}.png`)));
}
$('export-npy').addEventListener('click', reportErrors(async () => {
  const bytes = await session.npy(RPL_HEAD.name);
  download(new Blob([bytes], { type: 'application/octet-stream' }), `${exportName(RPL_HEAD.heatView)}.npy`);
}));

// --- camera ------------------------------------------------------------------------------------

let camera = null;
$('camera').addEventListener('click', reportErrors(async () => {
  const button = $('camera');
  if (camera) {
    camera.stop();
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  let running = true;
  camera = {
    stop() {
      running = false;
      stream.getTracks().forEach((t) => t.stop());
      camera = null;
      button.setAttribute('aria-pressed', 'false');
      button.textContent = 'Camera';
    },
  };
  button.setAttribute('aria-pressed', 'true');
  button.textContent = 'Stop camera';
  // Any failure turns the camera off and says why (a fatal one still restarts the Worker).
  try {
    const video = document.createElement('video');
    video.srcObject = stream;
    video.muted = true;
    await video.play();
    const frame = new OffscreenCanvas(video.videoWidth, video.videoHeight);
    const context = frame.getContext('2d');
    while (running) {
      const started = performance.now();
      context.drawImage(video, 0, 0);
      await segmentBlob(context.getImageData(0, 0, frame.width, frame.height), 'camera');
      const fps = 1000 / (performance.now() - started);
      status(`${state.backendLine}. Camera: ${fps.toFixed(1)} frames per second (nothing leaves this machine).`);
    }
  } catch (e) {
    if (running) camera?.stop();
    throw Object.assign(new Error(`The camera was stopped: ${e.message}`), { fatal: e.fatal });
  }
}));

// --- first run: the bundled demo model and its samples -----------------------------------------

// A sample scene with its ground truth: segmented, then evaluated at once, unless another image
// (the visitor's own, dropped meanwhile) has replaced it by then.
async function showSample(sample) {
  const [image, mask] = await Promise.all([SAMPLES + sample.image, SAMPLES + sample.ood].map(async (url) => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
    return response.blob();
  }));
  const result = await segmentBlob(image, sample.name);
  const run = state.runs;
  await exclusive(async () => {
    if (state.runs !== run) return;
    await evaluateMask(mask);
    // Objects pasted into a sample keep its own outliers in the ground truth; it can be shared.
    Object.assign(state.experiment.base, { mask: await session.maskValues(mask), sample: sample.name });
    updateLink();
  });
  return result;
}

// The gallery; returns the samples' list.
async function showSamples() {
  const response = await fetch(`${SAMPLES}index.json`);
  if (!response.ok) return [];
  const samples = await response.json();
  state.samples = samples;
  const gallery = $('samples');
  for (const sample of samples) {
    const button = document.createElement('button');
    button.type = 'button';
    const outliers = sample.outliers.length ? sample.outliers.join(', ') : 'no outliers';
    button.title = `${sample.name}: ${sample.context}, ${outliers}`;
    const thumb = document.createElement('img');
    thumb.src = SAMPLES + sample.image;
    thumb.alt = `Sample scene ${sample.name} (${sample.context}, ${outliers})`;
    button.append(thumb);
    button.addEventListener('click', reportErrors(() => showSample(sample)));
    gallery.append(button);
  }
  return samples;
}

// Models kept from an earlier visit are offered at once, by name, size and date.
ready.then(showKeptModels).catch((e) => console.warn(`Kept models: ${e.message}`));

// The model loading at start (null with ?model=none); images chosen meanwhile wait for it.
let initialModel = null;
// Settles once the first visit shows its first result: the first sample, unless the visitor
// chose an image before the model was in (theirs is shown instead).
let firstResult = Promise.resolve(null);
if (params.get('model') !== 'none') {
  initialModel = loadModelFromUrl(params.get('model') ?? BUNDLED_MODEL);
  initialModel.catch(showError);
  const samples = showSamples().catch((e) => {
    status(`Sample scenes: ${e.message}`, true);
    return [];
  });
  // A shared experiment's sample, and the objects pasted into it.
  firstResult = Promise.all([initialModel, samples]).then(async ([, list]) => {
    if (state.imageChoices !== 0 || !list.length) return null;
    const linked = list.find((s) => s.name === params.get('sample'));
    const result = await showSample(linked ?? list[0]);
    if (linked && params.get('paste')) await changeExperiment((outliers) => outliers.push(...parsePasted(params.get('paste'))));
    return result;
  }).catch((e) => {
    showError(e);
    return null;
  });
}

// Offline once opened: the service worker keeps the page, the module and the demo model.
const offlineReady = 'serviceWorker' in navigator && params.get('offline') !== 'no'
  ? navigator.serviceWorker.register('service-worker.js').then(() => navigator.serviceWorker.ready)
    .catch((e) => console.warn(`No offline copy: ${e.message}`))
  : Promise.resolve(null);

// For tests and benchmarks driving the page.
/** @type {any} */ (window).rpl = {
  session, get ready() { return ready; }, state, loadModel, loadModelFile, loadKeptModel, showKeptModels, loadModelFromUrl, segmentBlob, evaluateMaskFile, decodeImage: toImageData,
  get recovering() { return recovering; }, offlineReady, firstResult, get imageWork() { return imageWork; },
};
