// The page: picks files, hands them to the Worker, draws what comes back.
import { RplClient, decodeImage } from './rpl-client.js';

const $ = (id) => document.getElementById(id);
const client = new RplClient();
const params = new URLSearchParams(location.search);

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function draw(canvas, width, height, rgba) {
  canvas.width = width;
  canvas.height = height;
  const pixels = rgba instanceof Uint8ClampedArray ? rgba : new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.length);
  canvas.getContext('2d').putImageData(new ImageData(pixels, width, height), 0, 0);
}

let backendLine = '';
let modelLine = 'No model loaded';
const ready = client.init({ preferCpu: params.get('backend') === 'cpu' }).then((info) => {
  backendLine = info.backend === 'webgpu' ? `WebGPU on ${info.adapter}` : `CPU (${info.fallbackReason})`;
  status(`${backendLine}. Choose a model.`);
  return info;
}, (e) => {
  status(`Could not start: ${e.message}`, true);
  throw e;
});

async function loadModel(name, bytes) {
  await ready;
  status(`Loading ${name}…`);
  const { description, ms } = await client.loadWeights(name, bytes);
  modelLine = `Model: ${name} (${description})`;
  status(`${backendLine}. ${modelLine}, loaded in ${ms.toFixed(0)} ms.`);
  $('image-file').disabled = false;
  return description;
}

async function loadModelFromUrl(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return loadModel(url.split('/').pop(), await response.arrayBuffer());
}

async function segmentBlob(blob) {
  const image = await decodeImage(blob);
  draw($('input-view'), image.width, image.height, image.data);
  status(`${backendLine}. ${modelLine}. Running on ${image.width}x${image.height}…`);
  const result = await client.segment(image);
  draw($('class-view'), result.width, result.height, result.classImage);
  draw($('heat-view'), result.width, result.height, result.heatImage);
  status(`${backendLine}. ${modelLine}. Done in ${result.ms.toFixed(0)} ms.`);
  return result;
}

function reportErrors(action) {
  return (event) => action(event).catch((e) => status(e.message, true));
}

$('model-file').addEventListener('change', reportErrors(async (event) => {
  const file = event.target.files[0];
  if (file) await loadModel(file.name, await file.arrayBuffer());
}));
$('image-file').addEventListener('change', reportErrors(async (event) => {
  const file = event.target.files[0];
  if (file) await segmentBlob(file);
}));

// For tests and benchmarks driving the page.
window.rpl = { client, ready, loadModel, loadModelFromUrl, segmentBlob, decodeImage };
