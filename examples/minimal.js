// @ts-check
// rpl-web in your page: pick an image, see which pixels the network finds out of distribution.
import { RplError, RplSession, drawImageData } from '../www/rpl.js';

const byId = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
/** @type {HTMLInputElement} */ const input = byId('image');
/** @type {HTMLElement} */ const status = byId('status');

// WebGPU where the machine has a GPU, else the CPU; the model's download shows its progress.
const session = await RplSession.create();
await session.loadModel('../models/rpl-demo.safetensors', {
  onProgress: ({ bytes, totalBytes }) => { status.textContent = `Loading the model: ${bytes} of ${totalBytes} bytes`; },
});
status.textContent = `Ready (${session.info?.backend}). Pick an image.`;
input.disabled = false;

input.addEventListener('change', async () => {
  const file = input.files?.[0];
  if (!file) return;
  try {
    const result = await session.segment(file, { maxSide: 512 });
    // The out-of-distribution mask of out2 (with the RPL block): scores above the middle of the range.
    const [lo, hi] = result.scoreRange;
    const { share, image } = await session.maskImage('out2', (lo + hi) / 2);
    drawImageData(byId('photo'), result.image);
    drawImageData(byId('mask'), image);
    status.textContent = `${(100 * share).toFixed(1)} % of pixels out of distribution (${result.ms.toFixed(0)} ms)`;
  } catch (error) {
    status.textContent = error instanceof RplError ? `${error.code}: ${error.message}` : String(error);
  }
});
