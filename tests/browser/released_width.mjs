// Loads a released-width checkpoint (672 MB; make one with make_released_pth.py) in headless
// Chromium as a visitor does, on WebGPU and on the CPU fallback, and prints the load time, the
// memory it took and the first 64x128 segmentation's time. A measurement, not a CI test.
// Usage: node tests/browser/released_width.mjs /path/to/released.pth
import { statSync } from 'node:fs';
import { startServer, launchBrowser } from './harness.mjs';

const path = process.argv[2];
if (!path) throw new Error('usage: node tests/browser/released_width.mjs RELEASED.pth');
const MB = (n) => (n / 2 ** 20).toFixed(0);
const server = await startServer();
try {
  for (const query of ['backend=webgpu', 'backend=webgpu&dtype=f16', 'backend=cpu']) {
    const browser = await launchBrowser({ webgpu: query !== 'backend=cpu' });
    try {
      const page = await browser.context.newPage();
      const worker = new Promise((resolve) => page.on('worker', resolve));
      await page.goto(`${server.url}/index.html?model=none&offline=no&${query}`);
      const info = await page.evaluate(() => window.rpl.ready);
      const heap = async () => (await (await worker).evaluate(() => self.performance.memory?.usedJSHeapSize ?? null));
      // The worker's JS heap at its peak is sampled while the load runs.
      let peakHeap = 0;
      const sampler = setInterval(async () => { peakHeap = Math.max(peakHeap, (await heap().catch(() => 0)) ?? 0); }, 250);
      const started = Date.now();
      await page.setInputFiles('#model-file', path);
      await page.waitForFunction(() => !/Loading /.test(document.getElementById('status').textContent), null, { timeout: 1_800_000 });
      const loadSeconds = (Date.now() - started) / 1000;
      clearInterval(sampler);
      const status = await page.textContent('#status');
      const memory = await page.evaluate(() => window.rpl.session.memory());
      const first = await page.evaluate(async () => {
        const canvas = new OffscreenCanvas(128, 64);
        const context = canvas.getContext('2d');
        context.fillStyle = '#557';
        context.fillRect(0, 0, 128, 64);
        context.fillStyle = '#e33';
        context.fillRect(40, 20, 30, 20);
        const started = performance.now();
        const result = await window.rpl.session.segment(context.getImageData(0, 0, 128, 64));
        return { ms: performance.now() - started, width: result.width, height: result.height };
      });
      console.log(`${info.backend}${info.dtype === 'f16' ? ' float16' : ' float32'}${info.halfPrecisionError ? ` (${info.halfPrecisionError})` : ''}: `
        + `${MB(statSync(path).size)} MiB file loaded in ${loadSeconds.toFixed(1)} s; status "${status}"; `
        + `wasm memory ${MB(memory.wasmBytes)} MiB, GPU allocator ${MB(memory.deviceBytesReserved ?? 0)} MiB reserved / ${MB(memory.deviceBytesInUse ?? 0)} MiB in use, `
        + `worker JS heap peak ${peakHeap ? `${MB(peakHeap)} MiB` : 'not exposed'}; first ${first.width}x${first.height} segmentation ${(first.ms / 1000).toFixed(1)} s`);
    } finally {
      await browser.close();
    }
  }
} finally {
  server.close();
}
