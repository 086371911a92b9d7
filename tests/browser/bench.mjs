// Benchmark (not a test): times the browser path in headless Chromium and prints a table.
//   node tests/browser/bench.mjs [--cpu] [--runs N] [--skip-released]
// Fixture model (width 1/8) at 256x512; the released-size model with random weights made in
// the page at 64x128 and 128x256. SwiftShader emulates the GPU on the CPU: the released model
// at 128x256 (about 235 GFLOP) takes minutes there.
import { startServer, launchBrowser, convertedFixtureModel } from './harness.mjs';

const argv = process.argv.slice(2);
const webgpu = !argv.includes('--cpu');
const runs = Number(argv[argv.indexOf('--runs') + 1]) || 3;
const skipReleased = argv.includes('--skip-released');

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const server = await startServer();
const modelUrl = convertedFixtureModel();
const browser = await launchBrowser({ webgpu });
const rows = [];
try {
  const page = await browser.context.newPage();
  const pageStarted = Date.now();
  await page.goto(`${server.url}/index.html?model=none`);
  const info = await page.evaluate(() => window.rpl.ready);
  console.log(`backend: ${info.backend}, adapter: ${info.adapter}${info.fallbackReason ? ` (${info.fallbackReason})` : ''}`);
  rows.push(['wasm load (fetch + compile + instantiate)', `${info.wasmMs.toFixed(0)} ms`]);
  rows.push(['page open to backend ready', `${Date.now() - pageStarted} ms`]);

  // Segments a synthetic image `count` times; returns the times in ms.
  const timeSegments = (height, width, count) => page.evaluate(async ([height, width, count]) => {
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) >>> 24;
    const image = new ImageData(pixels, width, height);
    const times = [];
    for (let i = 0; i < count; i++) times.push((await window.rpl.client.segment(image)).ms);
    return times;
  }, [height, width, count]);

  const measure = async (label, height, width, count) => {
    const [first, ...rest] = await timeSegments(height, width, 1 + count);
    rows.push([`${label} ${height}x${width}: first inference (shader compilation)`, `${first.toFixed(0)} ms`]);
    if (rest.length) rows.push([`${label} ${height}x${width}: steady state, median of ${rest.length}`, `${median(rest).toFixed(0)} ms`]);
    console.log(`${label} ${height}x${width}: ${[first, ...rest].map((t) => t.toFixed(0)).join(', ')} ms`);
  };

  const loaded = await page.evaluate(async (url) => {
    const bytes = await (await fetch(url)).arrayBuffer();
    return window.rpl.client.loadWeights('rpl_w8.safetensors', bytes);
  }, modelUrl);
  rows.push(['fixture weights load (10.6 MB safetensors)', `${loaded.ms.toFixed(0)} ms`]);
  await measure('fixture model (width 1/8)', 256, 512, runs);

  if (!skipReleased) {
    const random = await page.evaluate(() => window.rpl.client.loadRandomWeights(1));
    rows.push(['released-size model: random weights made', `${random.ms.toFixed(0)} ms`]);
    await measure('released-size model', 64, 128, runs);
    await measure('released-size model', 128, 256, 1);
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`\n| ${webgpu ? 'WebGPU' : 'CPU fallback'} in headless Chromium | time |\n|---|---|`);
for (const [what, value] of rows) console.log(`| ${what} | ${value} |`);
