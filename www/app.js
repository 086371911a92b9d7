// The page: picks images and models, hands them to the Worker, draws what comes back.
// No computation on the results happens here: the Worker (Rust) answers every question.
import { RplClient, decodeImage } from './rpl-client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?test-hooks lets tests destroy the GPU device (see worker.js).
const client = new RplClient(params.has('test-hooks') ? new URL('./worker.js?test-hooks', import.meta.url) : undefined);
const BUNDLED_MODEL = 'models/rpl-demo.safetensors';
const SAMPLES = 'models/samples/';
const MODEL_CACHE = 'rpl-models';

const state = {
  backendLine: '',
  modelName: null,
  runs: 0,
  result: null, // the last segmentation: sizes, classes, scores, score range
  image: null, // the ImageData sent to the network
  legend: [],
  modelSource: null, // () => the model's bytes again, to reload it after a Worker restart
  maxPixels: Infinity, // the most pixels the model can take on this device
};

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

function draw(canvas, width, height, rgba) {
  canvas.width = width;
  canvas.height = height;
  const pixels = new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length);
  canvas.getContext('2d').putImageData(new ImageData(pixels, width, height), 0, 0);
}

// --- starting ----------------------------------------------------------------------------------

function startBackend() {
  return client.init({ preferCpu: params.get('backend') === 'cpu', halfPrecision: params.get('dtype') === 'f16' }).then(async (info) => {
    state.backendLine = info.backend === 'webgpu' ? `WebGPU on ${info.adapter}` : `CPU (${info.fallbackReason})`;
    if (info.dtype === 'f16') state.backendLine += ', float16';
    if (info.halfPrecisionError) state.backendLine += ` (float32: ${info.halfPrecisionError})`;
    state.legend = (await client.legend()).classes;
    status(`${state.backendLine}. Ready.`);
    return info;
  }, (e) => {
    status(`Could not start: ${e.message}`, true);
    throw e;
  });
}
let ready = startBackend();

// A new Worker, the model loaded again and the last image run again: the page goes on as before.
let recovering = null;
function recover(reason) {
  recovering ??= (async () => {
    status(`${reason}: restarting the inference worker…`, true);
    client.restart();
    ready = startBackend();
    await ready;
    if (state.modelSource) await loadModel(state.modelName, await state.modelSource(), state.modelSource);
    if (state.image && state.modelSource) await runNetwork(state.image);
    status(`${state.backendLine}. Recovered from: ${reason}.${state.modelSource ? '' : ' Open the model again.'}`);
  })().catch((e) => status(`Could not recover from ${reason}: ${e.message}. Reload the page.`, true))
    .finally(() => { recovering = null; });
  return recovering;
}
client.onFatal = recover;

// --- models ------------------------------------------------------------------------------------

// `reload` gives the bytes again (from the file or the cache) should the Worker restart.
async function loadModel(name, bytes, reload = null) {
  await ready;
  status(`${state.backendLine}. Loading ${name}…`);
  const { description, ms } = await client.loadWeights(name, await bytes);
  state.modelName = name;
  state.modelSource = reload;
  state.maxPixels = (await client.maxPixels()).pixels;
  $('model-line').textContent = `Model: ${name} (${description})`;
  status(`${state.backendLine}. ${name} loaded in ${ms.toFixed(0)} ms.`);
  return description;
}

function formatBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`;
}

// The body of a response, read chunk by chunk with a progress bar (bytes and speed).
async function readWithProgress(response, label) {
  const total = Number(response.headers.get('content-length')) || 0;
  const bar = $('download');
  const text = $('download-text');
  bar.hidden = false;
  bar.max = total || 1;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  const started = performance.now();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    bar.value = total ? received : 0;
    const seconds = (performance.now() - started) / 1000;
    text.textContent = `${label}: ${formatBytes(received)}${total ? ` of ${formatBytes(total)}` : ''}, ${formatBytes(received / Math.max(seconds, 1e-3))}/s`;
  }
  bar.hidden = true;
  text.textContent = '';
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes.buffer;
}

// Weights from the cache when this browser has them, else downloaded once and cached.
async function fetchModel(url) {
  const cache = 'caches' in self ? await caches.open(MODEL_CACHE) : null;
  const cached = cache && (await cache.match(url));
  if (cached) return cached.arrayBuffer();
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  const bytes = await readWithProgress(response, `Downloading ${url.split('/').pop()}`);
  if (cache) await cache.put(url, new Response(bytes.slice(0), { headers: { 'content-type': 'application/octet-stream' } }));
  return bytes;
}

async function loadModelFromUrl(url) {
  return loadModel(url.split('/').pop(), await fetchModel(url), () => fetchModel(url));
}

// Each file input is emptied once read, so that picking the same file again runs it again.
function onFile(input, action) {
  $(input).addEventListener('change', reportErrors(async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (file) await action(file);
  }));
}

onFile('model-file', (file) => loadModel(file.name, file.arrayBuffer(), () => file.arrayBuffer()));
$('model-url-form').addEventListener('submit', reportErrors(async (event) => {
  event.preventDefault();
  const url = $('model-url').value.trim();
  if (url) await loadModelFromUrl(url);
}));
$('forget-models').addEventListener('click', reportErrors(async () => {
  const removed = 'caches' in self && (await caches.delete(MODEL_CACHE));
  status(removed ? 'Cached models forgotten: the next load downloads again.' : 'No cached models.');
}));

// --- images ------------------------------------------------------------------------------------

// The inference size of a width x height image: its longer side at most the chosen size, its
// pixels at most what the device can run (never enlarged). Returns [width, height, why].
function inferenceSize(width, height) {
  const maxSide = Number($('max-side').value);
  const bySide = maxSide ? maxSide / Math.max(width, height) : 1;
  const byPixels = Math.sqrt(state.maxPixels / (width * height));
  const scale = Math.min(1, bySide, byPixels);
  if (scale === 1) return [width, height, ''];
  const why = byPixels < bySide ? 'the largest this device can run with this model' : 'the chosen inference size';
  return [Math.max(1, Math.floor(width * scale)), Math.max(1, Math.floor(height * scale)), why];
}

// Runs the network on an ImageData; the views change only once it has succeeded.
async function runNetwork(image) {
  const firstRun = state.runs === 0;
  status(`${state.backendLine}. Running on ${image.width}x${image.height}${firstRun ? ' (the first run also compiles the GPU shaders)' : ''}…`);
  const result = await client.segment(image, $('score-mode').value);
  state.runs += 1;
  state.image = image;
  state.result = result;
  draw($('input-view'), image.width, image.height, image.data);
  draw($('class-view'), result.width, result.height, result.classImage);
  draw($('class-view-2'), result.width, result.height, result.classImageOut2);
  showLegend(result);
  await showScores(result);
  return result;
}

// An image file (or camera frame) through the network at its inference size.
async function segmentBlob(source) {
  if (!state.modelName) throw new Error('No model is loaded yet: wait for the demo model, or open one.');
  let why = '';
  const decoded = await decodeOrExplain(source, (w, h) => {
    const [width, height, reason] = inferenceSize(w, h);
    why = reason;
    return [width, height];
  });
  const { image } = decoded;
  const result = await runNetwork(image);
  $('metrics').hidden = true;
  $('curves').hidden = true;
  const resized = why ? ` (shrunk from ${decoded.width}x${decoded.height}: ${why})` : '';
  status(`${state.backendLine}. Done in ${result.ms.toFixed(0)} ms at ${image.width}x${image.height}${resized}.`);
  return result;
}

async function decodeOrExplain(blob, fit) {
  try {
    return await decodeImage(blob, fit);
  } catch (e) {
    throw new Error(`${blob.name ?? 'This file'} is not an image this browser can decode (JPEG, PNG or WebP): ${e.message}`);
  }
}

function showLegend(result) {
  const present = new Set([...result.classes, ...result.classesOut2]);
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
async function showScores(scores) {
  const [lo, hi] = scores.scoreRange;
  state.result = { ...state.result, ...scores };
  const slider = $('threshold');
  slider.min = lo;
  slider.max = hi;
  slider.step = (hi - lo) / 1000 || 0.001;
  slider.value = lo + 0.5 * (hi - lo);
  $('bar-lo').textContent = lo.toFixed(2);
  $('bar-hi').textContent = hi.toFixed(2);
  $('bar-unit').textContent = `${scores.mode}${scores.baseline ? ' (baseline)' : ''}`;
  await Promise.all([drawHeat(), drawMask()]);
}

async function drawHeat() {
  const r = state.result;
  if (!r) return;
  const [lo, hi] = r.scoreRange;
  const opacity = Number($('opacity').value);
  const [one, two] = await Promise.all([client.heat(1, lo, hi, opacity), client.heat(2, lo, hi, opacity)]);
  draw($('heat-view-1'), r.width, r.height, one.rgba);
  draw($('heat-view'), r.width, r.height, two.rgba);
}

async function drawMask() {
  const r = state.result;
  if (!r) return;
  const threshold = Number($('threshold').value);
  const { share, rgba } = await client.mask(2, threshold);
  draw($('mask-view'), r.width, r.height, rgba);
  $('threshold-value').textContent = threshold.toFixed(3);
  $('mask-share').textContent = `${(100 * share).toFixed(2)} % of pixels`;
  state.result.maskShare = share;
}

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
$('score-mode').addEventListener('change', reportErrors(async () => {
  if (!state.result) return;
  await showScores(await client.rescore($('score-mode').value));
}));
$('opacity').addEventListener('input', reportErrors(drawHeat));
$('threshold').addEventListener('input', reportErrors(drawMask));
$('max-side').addEventListener('change', () => status(`${state.backendLine}. The next image runs at the new size.`));

// Drop or paste an image anywhere; a PNG dropped on the ground-truth field is a mask.
document.addEventListener('dragover', (event) => event.preventDefault());
document.addEventListener('drop', reportErrors(async (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (!file) return;
  if (event.target.closest?.('#ground-truth')) return evaluateMaskFile(file);
  await segmentBlob(file);
}));
document.addEventListener('paste', reportErrors(async (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith('image/'));
  if (file) await segmentBlob(file);
}));

// --- reading a pixel ---------------------------------------------------------------------------

let pixelBusy = false;
const cursor = { x: 0, y: 0 };

async function showPixel(x, y) {
  const r = state.result;
  if (!r || pixelBusy) return;
  pixelBusy = true;
  try {
    const info = await client.pixel(x, y);
    const top = (probabilities) => [...probabilities].map((p, id) => ({ p, id })).sort((a, b) => b.p - a.p).slice(0, 3)
      .map(({ p, id }) => `${state.legend[id]?.name ?? id} ${(100 * p).toFixed(1)} %`).join(', ');
    $('pixel-info').textContent = `(${x}, ${y}) out1: ${info.names[0]} [${top(info.probabilities[0])}], score ${info.scores[0].toFixed(3)} · `
      + `out2: ${info.names[1]} [${top(info.probabilities[1])}], score ${info.scores[1].toFixed(3)}`;
  } finally {
    pixelBusy = false;
  }
}

for (const id of ['input-view', 'class-view', 'class-view-2', 'heat-view-1', 'heat-view', 'mask-view']) {
  $(id).addEventListener('mousemove', reportErrors(async (event) => {
    const canvas = event.currentTarget;
    const box = canvas.getBoundingClientRect();
    cursor.x = Math.min(canvas.width - 1, Math.floor(((event.clientX - box.left) / box.width) * canvas.width));
    cursor.y = Math.min(canvas.height - 1, Math.floor(((event.clientY - box.top) / box.height) * canvas.height));
    await showPixel(cursor.x, cursor.y);
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
  await showPixel(cursor.x, cursor.y);
}));

// --- ground truth ------------------------------------------------------------------------------

// The mask's values are its first channel (8-bit grey PNGs decode with R = G = B).
async function maskBytes(blob) {
  const { image } = await decodeOrExplain(blob);
  const values = new Uint8Array(image.width * image.height);
  for (let i = 0; i < values.length; i += 1) values[i] = image.data[4 * i];
  return { width: image.width, height: image.height, values };
}

async function evaluateMaskFile(blob) {
  if (!state.result) throw new Error('Segment an image first, then drop its ground-truth mask.');
  const mask = await maskBytes(blob);
  const metrics = await client.evaluate(mask.width, mask.height, mask.values);
  const rows = [['out1 (closed set)', metrics.out1], ['out2 (RPL)', metrics.out2]].map(([name, m]) => {
    const row = document.createElement('tr');
    const cells = [name, m.auroc, m.ap, m.fpr95].map((v, i) => {
      const cell = document.createElement(i ? 'td' : 'th');
      if (!i) cell.scope = 'row';
      cell.textContent = i ? v.toFixed(4) : v;
      return cell;
    });
    row.append(...cells);
    return row;
  });
  $('metrics').querySelector('tbody').replaceChildren(...rows);
  $('metrics').hidden = false;
  $('curves').hidden = false;
  plotCurves($('roc-curve'), [metrics.out1.roc, metrics.out2.roc], 'false positive rate', 'true positive rate');
  plotCurves($('pr-curve'), [metrics.out1.pr, metrics.out2.pr], 'recall', 'precision');
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
  const colours = ['#888', '#e53935'];
  curves.forEach((points, k) => {
    context.strokeStyle = colours[k];
    context.lineWidth = 2;
    context.beginPath();
    for (let i = 0; i < points.length; i += 2) {
      const x = pad + points[i] * (width - pad - 8);
      const y = 8 + (1 - points[i + 1]) * (height - pad - 16);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    }
    context.stroke();
  });
  context.fillStyle = colours[0];
  context.fillText('out1', width - 80, height - pad - 24);
  context.fillStyle = colours[1];
  context.fillText('out2 (RPL)', width - 80, height - pad - 12);
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

for (const button of document.querySelectorAll('[data-export]')) {
  button.addEventListener('click', () => $(button.dataset.export).toBlob((blob) => download(blob, `${button.dataset.export}.png`)));
}
$('export-npy').addEventListener('click', reportErrors(async () => {
  const { bytes } = await client.npy(2);
  download(new Blob([bytes], { type: 'application/octet-stream' }), `score_${state.result?.mode ?? 'energy'}.npy`);
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
  const video = document.createElement('video');
  video.srcObject = stream;
  video.muted = true;
  await video.play();
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
  const frame = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  const context = frame.getContext('2d');
  while (running) {
    const started = performance.now();
    context.drawImage(video, 0, 0);
    await segmentBlob(context.getImageData(0, 0, frame.width, frame.height));
    const fps = 1000 / (performance.now() - started);
    status(`${state.backendLine}. Camera: ${fps.toFixed(1)} frames per second (nothing leaves this machine).`);
  }
}));

// --- first run: the bundled demo model and its samples -----------------------------------------

async function showSamples() {
  const response = await fetch(`${SAMPLES}index.json`);
  if (!response.ok) return;
  const gallery = $('samples');
  for (const sample of await response.json()) {
    const button = document.createElement('button');
    button.type = 'button';
    const outliers = sample.outliers.length ? sample.outliers.join(', ') : 'no outliers';
    button.title = `${sample.name}: ${sample.context}, ${outliers}`;
    const thumb = document.createElement('img');
    thumb.src = SAMPLES + sample.image;
    thumb.alt = `Sample scene ${sample.name} (${sample.context}, ${outliers})`;
    button.append(thumb);
    button.addEventListener('click', reportErrors(async () => {
      await segmentBlob(await (await fetch(SAMPLES + sample.image)).blob());
      // The samples carry their ground truth: show the metrics at once.
      await evaluateMaskFile(await (await fetch(SAMPLES + sample.ood)).blob());
    }));
    gallery.append(button);
  }
}

if (params.get('model') !== 'none') {
  loadModelFromUrl(params.get('model') ?? BUNDLED_MODEL).catch(showError);
  showSamples().catch((e) => status(`Sample scenes: ${e.message}`, true));
}

// Offline once opened: the service worker keeps the page, the module and the demo model.
const offlineReady = 'serviceWorker' in navigator && params.get('offline') !== 'no'
  ? navigator.serviceWorker.register('service-worker.js').then(() => navigator.serviceWorker.ready)
    .catch((e) => console.warn(`No offline copy: ${e.message}`))
  : Promise.resolve(null);

// For tests and benchmarks driving the page.
window.rpl = {
  client, get ready() { return ready; }, state, loadModel, loadModelFromUrl, segmentBlob, evaluateMaskFile, decodeImage,
  get recovering() { return recovering; }, offlineReady,
};
