// What the page does around its inferences: the first visit's sample and the visitor's own
// image, the threshold kept across images, slider and hover requests that never queue up,
// exported file names, the shader-compilation notice on WebGPU only, the camera stopped by an
// error, a model URL the browser refuses (CORS) and a redeployed model picked up. Small images
// (64x48) and the demo model (width 1/8), on SwiftShader.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launchBrowser, openBeforeModel, waitForRuns } from './harness.mjs';

const BAD = join(ROOT, 'tests', 'bad_inputs');
const SMALL = join(BAD, 'scene_64x48.png');
const DEMO_MODEL = join(ROOT, 'models', 'rpl-demo.safetensors');
const WORK = join(ROOT, 'target', 'browser-test', 'page-controls');
let server;

before(async () => {
  server = await startServer();
  mkdirSync(WORK, { recursive: true });
});
after(() => server?.close());

const statusText = (page) => page.textContent('#status');
const waitForStatus = (page, pattern, timeout = 120_000) => page
  .waitForFunction((source) => new RegExp(source).test(document.getElementById('status').textContent), pattern.source, { timeout })
  .catch(async () => assert.fail(`the status never matched ${pattern}: it reads "${await statusText(page)}"`));

/** A page that records the status lines it shows (window.statusLines). */
async function newPage(browser) {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.addInitScript(() => {
    window.statusLines = [];
    document.addEventListener('DOMContentLoaded', () => {
      const line = document.getElementById('status');
      new MutationObserver(() => window.statusLines.push(line.textContent)).observe(line, { childList: true, characterData: true, subtree: true });
    });
  });
  return page;
}

/** Opens the page without a model at start, then loads the demo model as a URL. */
async function openWithDemoModel(page, query = '') {
  await page.goto(`${server.url}/index.html?model=none&offline=no${query}`);
  await page.evaluate(() => window.rpl.loadModelFromUrl('models/rpl-demo.safetensors'));
}

/** Picks an image file and waits for its result (the page's run count reaching `runs`). */
async function segmentFile(page, path, runs) {
  await page.setInputFiles('#image-file', path);
  await waitForRuns(page, runs);
}

/** Counts the page's requests to the Worker by operation, from now on (window.requestCounts). */
const countRequests = (page) => page.evaluate(() => {
  const { session } = window.rpl;
  const request = session.request.bind(session);
  window.requestCounts = {};
  session.request = (op, ...rest) => {
    window.requestCounts[op] = (window.requestCounts[op] ?? 0) + 1;
    return request(op, ...rest);
  };
});

/** The threshold slider's state. */
const slider = (page) => page.evaluate(() => {
  const s = document.getElementById('threshold');
  return { value: Number(s.value), min: Number(s.min), max: Number(s.max), step: Number(s.step) };
});

/** Drops an image file served at `url` on the page, named `name`. */
const dropImage = (page, url, name) => page.evaluate(async ([u, n]) => {
  const blob = await (await fetch(u)).blob();
  const data = new DataTransfer();
  data.items.add(new File([blob], n, { type: 'image/png' }));
  document.querySelector('main').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
}, [url, name]);

/** The name the page gives the file a click on `selector` downloads. */
async function downloadName(page, selector) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  return download.suggestedFilename();
}

test('a first visit shows the first sample with its ground truth, unless the visitor picks an image first', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    // The first sample at the smallest inference size: its ground truth is shrunk with it.
    const first = await newPage(browser);
    await openBeforeModel(first, `${server.url}/index.html?offline=no`, (p) => p.selectOption('#max-side', '256'));
    await first.evaluate(() => window.rpl.firstResult);
    const shown = await first.evaluate(() => ({ runs: window.rpl.state.runs, name: window.rpl.state.imageName, width: window.rpl.state.image.width, nOod: window.rpl.state.metrics?.out2?.nOod }));
    assert.equal(shown.runs, 1);
    assert.equal(shown.name, 'scene_0000');
    assert.equal(shown.width, 256);
    assert.ok(shown.nOod > 0, `the sample's metrics: ${JSON.stringify(shown)}`);
    assert.ok(await first.locator('#metrics').isVisible());
    await first.close();

    // The visitor's image picked before the model is in: shown, and no sample after it.
    const picked = await newPage(browser);
    await openBeforeModel(picked, `${server.url}/index.html?offline=no`, (p) => p.setInputFiles('#image-file', SMALL));
    await waitForRuns(picked, 1, /Done in \d+ ms at 64x48\./);
    await picked.evaluate(() => window.rpl.firstResult);
    await picked.waitForTimeout(1000);
    assert.deepEqual(await picked.evaluate(() => [window.rpl.state.runs, window.rpl.state.imageName]), [1, 'scene_64x48']);
    assert.ok(await picked.locator('#metrics').isHidden());
    assert.deepEqual(picked.errors, []);
    await picked.close();

    // An image dropped while the sample runs: it replaces the sample, and the sample's evaluation
    // gives way to it.
    const dropped = await newPage(browser);
    await openBeforeModel(dropped, `${server.url}/index.html?offline=no`, (p) => p.selectOption('#max-side', '256'));
    await waitForStatus(dropped, /Running on 256x128/);
    await dropImage(dropped, '/tests/bad_inputs/scene_64x48.png', 'dropped.png');
    await waitForRuns(dropped, 2, /Done in \d+ ms at 64x48\./);
    await dropped.evaluate(() => window.rpl.firstResult);
    // Two results drawn: the sample's, then the visitor's.
    assert.equal(await dropped.evaluate(() => window.rpl.state.runs), 2);
    assert.equal(await dropped.evaluate(() => window.rpl.state.imageName), 'dropped');
    assert.equal(await dropped.evaluate(() => window.rpl.state.metrics ?? null), null);
    assert.ok(await dropped.locator('#metrics').isHidden());
    assert.ok(!(await dropped.evaluate(() => document.getElementById('status').classList.contains('error'))), await statusText(dropped));
    assert.deepEqual(dropped.errors, []);
  } finally {
    await browser.close();
  }
});

test('the threshold stays across images, slider and hover requests never queue up, exports are named', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await newPage(browser);
    await openWithDemoModel(page, '&backend=webgpu');
    await segmentFile(page, SMALL, 1);
    assert.ok((await page.evaluate(() => window.statusLines)).some((line) => line.includes('compiles the GPU shaders')),
      'WebGPU announces its shader compilation on the first run');

    // A threshold chosen on one image stays on the next (clamped to its range) in the same mode.
    const chosen = await page.evaluate(() => {
      const s = document.getElementById('threshold');
      s.value = Number(s.min) + 0.8 * (Number(s.max) - Number(s.min));
      s.dispatchEvent(new Event('input'));
      return Number(s.value);
    });
    await page.waitForFunction((text) => document.getElementById('threshold-value').textContent === text, chosen.toFixed(3));
    await segmentFile(page, join(BAD, 'grey.png'), 2);
    const next = await slider(page);
    const kept = Math.min(next.max, Math.max(next.min, chosen));
    const middle = next.min + 0.5 * (next.max - next.min);
    assert.ok(Math.abs(kept - middle) > next.step, 'the chosen threshold is not where a reset would put it');
    assert.ok(Math.abs(next.value - kept) <= next.step, `threshold ${next.value}, chosen ${chosen}, range [${next.min}, ${next.max}]`);

    // Another score mode has other units: the threshold starts again at the middle of its range.
    await page.selectOption('#score-mode', 'entropy');
    await page.waitForFunction(() => window.rpl.state.result.mode === 'entropy' && document.getElementById('bar-unit').textContent === 'entropy');
    const entropy = await slider(page);
    assert.ok(Math.abs(entropy.value - (entropy.min + 0.5 * (entropy.max - entropy.min))) <= entropy.step, JSON.stringify(entropy));

    // 30 slider moves at once: one mask request runs, then only the latest; it is what is shown.
    await countRequests(page);
    const last = await page.evaluate(() => {
      const s = document.getElementById('threshold');
      for (let i = 0; i < 30; i += 1) {
        s.value = Number(s.min) + (0.1 + (0.8 * i) / 29) * (Number(s.max) - Number(s.min));
        s.dispatchEvent(new Event('input'));
      }
      return Number(s.value);
    });
    await page.waitForFunction((text) => document.getElementById('threshold-value').textContent === text, last.toFixed(3));
    await page.waitForTimeout(300);
    const masks = await page.evaluate(() => window.requestCounts.mask);
    assert.ok(masks <= 2, `${masks} mask requests for 30 slider moves`);
    const share = await page.evaluate(async (t) => {
      const { scores } = await window.rpl.session.scores();
      return [window.rpl.state.result.maskShare, scores.out2.filter((s) => s > Math.fround(t)).length / scores.out2.length];
    }, last);
    assert.equal(share[0], share[1], 'the mask is the latest threshold\'s');

    // 30 pointer moves over the input: at most two pixel requests; the last position is read out.
    await page.evaluate(() => {
      const canvas = document.getElementById('input-view');
      const box = canvas.getBoundingClientRect();
      for (let i = 0; i < 30; i += 1) {
        const [x, y] = [i, i + 10];
        canvas.dispatchEvent(new MouseEvent('mousemove', {
          bubbles: true,
          clientX: box.left + ((x + 0.5) * box.width) / canvas.width,
          clientY: box.top + ((y + 0.5) * box.height) / canvas.height,
        }));
      }
    });
    await page.waitForFunction(() => document.getElementById('pixel-info').textContent.startsWith('(29, 39) out1: '));
    await page.waitForTimeout(300);
    const pixels = await page.evaluate(() => window.requestCounts.pixel);
    assert.ok(pixels <= 2, `${pixels} pixel requests for 30 pointer moves`);
    assert.match(await page.textContent('#pixel-info'), /^\(29, 39\) out1: .*score -?\d+\.\d{3} · out2: .*score -?\d+\.\d{3}$/);

    // Exports: the image's name, the head and the score mode.
    for (const [selector, name] of [
      ['[data-export="input-view"]', 'grey_input.png'],
      ['[data-export="class-view"]', 'grey_out1_classes.png'],
      ['[data-export="class-view-2"]', 'grey_out2_classes.png'],
      ['[data-export="heat-view-1"]', 'grey_out1_entropy.png'],
      ['[data-export="heat-view"]', 'grey_out2_entropy.png'],
      ['[data-export="mask-view"]', 'grey_out2_entropy_mask.png'],
      ['#export-npy', 'grey_out2_entropy.npy'],
    ]) {
      assert.equal(await downloadName(page, selector), name);
    }
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

test('on the CPU the first run announces no shader compilation', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await newPage(browser);
    await openWithDemoModel(page, '&backend=cpu');
    await segmentFile(page, SMALL, 1);
    const lines = await page.evaluate(() => window.statusLines);
    assert.ok(lines.some((line) => /^CPU, (\d+ threads|one thread: .*) \(CPU requested\)\. Running on 64x48…$/.test(line)), lines.join('\n'));
    assert.ok(!lines.some((line) => line.includes('shaders')), lines.join('\n'));
  } finally {
    await browser.close();
  }
});

/** A 64x48 Y4M video of `frames` grey frames, for Chromium's fake camera. */
function writeCameraVideo(path, frames = 3) {
  const [width, height] = [64, 48];
  const frame = Buffer.concat([Buffer.from('FRAME\n'), Buffer.alloc(width * height, 120), Buffer.alloc((width * height) / 2, 128)]);
  writeFileSync(path, Buffer.concat([Buffer.from(`YUV4MPEG2 W${width} H${height} F30:1 Ip A1:1 C420jpeg\n`), ...Array(frames).fill(frame)]));
}

test('an error while the camera runs stops the camera and says why', { timeout: 300_000 }, async () => {
  const video = join(WORK, 'camera_64x48.y4m');
  writeCameraVideo(video);
  const browser = await launchBrowser({
    webgpu: true,
    args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', `--use-file-for-fake-video-capture=${video}`],
  });
  try {
    const page = await newPage(browser);
    await page.addInitScript(() => {
      window.cameraStreams = [];
      const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = async (constraints) => {
        const stream = await getUserMedia(constraints);
        window.cameraStreams.push(stream);
        return stream;
      };
    });
    await openWithDemoModel(page);
    await page.click('#camera');
    // Frames follow each other at once: the frame-rate line shows between two of them.
    await page.waitForFunction(() => window.statusLines.some((line) => /Camera: \d+\.\d frames per second/.test(line)), null, { timeout: 120_000 });
    assert.equal(await page.evaluate(() => window.rpl.state.imageName), 'camera');

    // The next frame fails: the camera goes off, its tracks end, the status says why.
    await page.evaluate(() => { window.rpl.session.segment = () => Promise.reject(new Error('injected failure')); });
    await page.waitForSelector('#camera[aria-pressed="false"]', { timeout: 60_000 });
    await waitForStatus(page, /The camera was stopped: injected failure/);
    assert.ok(await page.evaluate(() => document.getElementById('status').classList.contains('error')));
    const tracks = await page.evaluate(() => window.cameraStreams.flatMap((s) => s.getTracks()).map((t) => t.readyState));
    assert.ok(tracks.length > 0 && tracks.every((state) => state === 'ended'), `camera tracks: ${tracks}`);
    assert.equal(await page.textContent('#camera'), 'Camera');
    assert.equal(await downloadName(page, '#export-npy'), 'camera_out2_energy.npy');
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

/** The safetensors file `bytes` with `metadata` added to its header (same tensors). */
function withMetadata(bytes, metadata) {
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  header.__metadata__ = { ...(header.__metadata__ ?? {}), ...metadata };
  const json = JSON.stringify(header);
  const text = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
  const out = Buffer.alloc(8 + text.length + bytes.length - 8 - length);
  out.writeBigUInt64LE(BigInt(text.length), 0);
  out.write(text, 8, 'ascii');
  bytes.copy(out, 8 + text.length, 8 + length);
  return out;
}

test('a model URL the browser refuses is explained; a redeployed model is downloaded again', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await newPage(browser);
    const requests = [];
    page.on('request', (r) => requests.push({ url: r.url(), method: r.method() }));
    await page.goto(`${server.url}/index.html?model=none&offline=no&backend=cpu`);
    await page.evaluate(() => window.rpl.ready);

    // A server on another origin: fetch() rejects with a bare TypeError ("Failed to fetch") both
    // when it sends no CORS headers and when it cannot be reached. (Responses fulfilled by
    // page.route skip the browser's CORS check, so the request fails outright here.)
    await page.route('https://models.example.test/**', (route) => route.abort('failed'));
    await page.fill('#model-url', 'https://models.example.test/rpl.safetensors');
    await page.click('#model-url-form button[type="submit"]');
    await waitForStatus(page, /https:\/\/models\.example\.test\/rpl\.safetensors could not be fetched: its server may not allow cross-origin requests \(CORS\) from this page, or it is unreachable/);

    // A model served here, cached at its first download and checked against the server after.
    const file = join(WORK, 'model.safetensors');
    const url = '/target/browser-test/page-controls/model.safetensors';
    const demo = readFileSync(DEMO_MODEL);
    writeFileSync(file, demo);
    utimesSync(file, new Date('2026-01-01T00:00:00Z'), new Date('2026-01-01T00:00:00Z'));
    const downloads = () => requests.filter((r) => r.method === 'GET' && r.url.endsWith(url)).length;
    const load = () => page.evaluate((u) => window.rpl.loadModelFromUrl(u), url);
    const cachedBytes = () => page.evaluate(async (u) => (await (await (await caches.open('rpl-models')).match(u)).arrayBuffer()).byteLength, url);
    assert.match(await load(), /width 1\/8/);
    assert.equal(downloads(), 1);
    await load();
    assert.equal(downloads(), 1, 'unchanged on the server: loaded from the cache');
    assert.ok(requests.some((r) => r.method === 'HEAD' && r.url.endsWith(url)), 'the version was asked for');

    // Redeployed: a new file (other bytes, a later date) is downloaded and cached in place of the old.
    const redeployed = withMetadata(demo, { release: 'second' });
    writeFileSync(file, redeployed);
    utimesSync(file, new Date('2026-02-01T00:00:00Z'), new Date('2026-02-01T00:00:00Z'));
    await load();
    assert.equal(downloads(), 2, 'the redeployed model was downloaded');
    assert.equal(await cachedBytes(), redeployed.length);
    await load();
    assert.equal(downloads(), 2);

    // The server unreachable: the cached copy is used.
    await page.route(`**${url}`, (route) => route.abort('connectionrefused'));
    assert.match(await load(), /width 1\/8/);
    await page.unroute(`**${url}`);
    assert.equal(downloads(), 2);

    // Forgotten: the next load downloads again.
    await page.click('#forget-models');
    await waitForStatus(page, /Forgot 0 kept and 1 downloaded models/);
    await load();
    assert.equal(downloads(), 3);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});
