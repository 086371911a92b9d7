// Every bad input of tests/BAD_INPUTS.md in the page: a readable error naming the problem (or
// the image read correctly), the last result kept, the page usable afterwards. Then a lost GPU
// device, inferences in a row without growth, the Content-Security-Policy, and the page offline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launchBrowser, openBeforeModel, waitForRuns } from './harness.mjs';

const BAD = join(ROOT, 'tests', 'bad_inputs');
const DEMO_MODEL = join(ROOT, 'models', 'rpl-demo.safetensors');
let server;

before(async () => {
  server = await startServer();
});
after(() => server?.close());

const statusText = (page) => page.textContent('#status');
const waitForStatus = (page, pattern, timeout = 120_000) => page
  .waitForFunction((source) => new RegExp(source).test(document.getElementById('status').textContent), pattern.source, { timeout })
  .catch(async () => assert.fail(`the status never matched ${pattern}: it reads "${await statusText(page)}"`));

/** Opens the page with the demo model, the 64x48 scene picked before the model is in (so no
 * sample is shown first), and waits for its result; returns the page. */
async function openPage(browser, query = '') {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await openBeforeModel(page, `${server.url}/index.html${query}`, (p) => p.setInputFiles('#image-file', join(BAD, 'scene_64x48.png')));
  await waitForRuns(page, 1, /Done in \d+ ms at 64x48\./);
  assert.match(await page.textContent('#model-line'), /rpl-demo\.safetensors/);
  return page;
}

async function segmentFile(page, path, done = /Done in \d+ ms/) {
  const runs = await page.evaluate(() => window.rpl.state.runs);
  await page.setInputFiles('#image-file', path);
  // The run counts once the views are drawn; the status line then says how it went.
  await page.waitForFunction(([n, source]) => window.rpl.state.runs > n && new RegExp(source).test(document.getElementById('status').textContent),
    [runs, done.source], { timeout: 120_000 })
    .catch(async () => assert.fail(`${path}: no new run matching ${done}; the status reads "${await statusText(page)}"`));
  assert.equal(await page.evaluate(() => window.rpl.state.runs), runs + 1);
}

/** What is on screen: the views' pixels, hashed, and the run count. */
const screenState = (page) => page.evaluate(() => {
  const hash = (id) => {
    const canvas = document.getElementById(id);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let h = 0;
    for (let i = 0; i < data.length; i += 7) h = (h * 31 + data[i]) >>> 0;
    return `${canvas.width}x${canvas.height}:${h}`;
  };
  return { runs: window.rpl.state.runs, views: ['input-view', 'class-view', 'heat-view', 'mask-view'].map(hash) };
});

/** The demo model's bytes, its safetensors header edited by `edit(header)`; null header = keep. */
function editedModel(edit) {
  const bytes = Buffer.from(readFileSync(DEMO_MODEL));
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  edit(header, bytes, 8 + length);
  // Same length, padded with spaces as safetensors allows, so the data offsets stay valid.
  const text = JSON.stringify(header).padEnd(length, ' ');
  assert.equal(Buffer.byteLength(text), length, 'the edited header fits the original one');
  bytes.write(text, 8, 'utf8');
  return bytes;
}

test('bad images, models and masks give readable errors and keep the last result', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    // On WebGPU (forced on SwiftShader): the size limits below are its buffer bindings.
    const page = await openPage(browser, '?backend=webgpu');

    // Images the page refuses: the error names the file; nothing on screen changes.
    for (const name of ['not_an_image.png', 'truncated.jpg', 'empty.png']) {
      const before = await screenState(page);
      await page.setInputFiles('#image-file', join(BAD, name));
      await page.waitForSelector('#status.error');
      assert.match(await statusText(page), new RegExp(`${name.replace('.', '\\.')} is not an image this browser can decode`));
      assert.deepEqual(await screenState(page), before, `${name}: the last result stays`);
      await page.evaluate(() => document.getElementById('status').classList.remove('error'));
    }

    // Images the page reads: each format at its own size, EXIF rotation applied, tiny ones too.
    for (const [name, size] of [
      ['grey.png', '64x48'], ['alpha.png', '64x48'], ['palette.png', '64x48'], ['rgb16.png', '64x48'],
      ['cmyk.jpg', '64x48'], ['exif_rotated.jpg', '48x64'], ['one_pixel.png', '1x1'], ['three_pixels.png', '3x3'],
    ]) {
      await segmentFile(page, join(BAD, name), new RegExp(`Done in \\d+ ms at ${size}\\.`));
    }
    // The rotated JPEG shows red on top and green on the right, as an image viewer does.
    await segmentFile(page, join(BAD, 'exif_rotated.jpg'));
    const corners = await page.evaluate(() => {
      const { data, width } = window.rpl.state.image;
      const at = (x, y) => Array.from(data.slice(4 * (y * width + x), 4 * (y * width + x) + 3));
      return { topLeft: at(4, 4), topRight: at(45, 4) };
    });
    assert.ok(corners.topLeft[0] > 150 && corners.topLeft[1] < 80, `top left is red: ${corners.topLeft}`);
    assert.ok(corners.topRight[1] > 150 && corners.topRight[0] < 80, `top right is green: ${corners.topRight}`);
    // 12000x9000: shrunk to the inference size before any full-size pixel buffer exists.
    await segmentFile(page, join(BAD, 'huge_12000x9000.png'), /Done in \d+ ms at 512x384 \(shrunk from 12000x9000: the chosen inference size\)/);

    // Asked directly for more than the device's buffers hold: refused before any GPU work.
    const { limit, info } = await page.evaluate(async () => ({ limit: window.rpl.state.maxPixels, info: await window.rpl.ready }));
    const binding = Math.min(info.maxBufferSize, info.maxStorageBufferBindingSize);
    // Full-resolution logits are made in bands: at width 1/8 the largest tensor is the decoder's
    // concatenation, 38 channels at half the height and width (38 x 4 / 4 bytes per pixel).
    assert.equal(limit, Math.floor(binding / 38), 'the decoder features bound the size');
    const side = Math.ceil(Math.sqrt(limit)) + 1;
    const tooLarge = await page.evaluate((n) => {
      const rgba = new ArrayBuffer(4 * n * n);
      return window.rpl.session.request('segment', { width: n, height: n, rgba, mode: 'energy' }, [rgba])
        .then(() => 'ran', (e) => ({ name: e.name, code: e.code, message: e.message }));
    }, side);
    assert.match(tooLarge.message, new RegExp(`${side}x${side} is too large for this device: .* one buffer holds at most ${Math.floor(binding / 2 ** 20)} MB`));
    assert.deepEqual([tooLarge.name, tooLarge.code], ['ImageError', 'image-too-large']);
    // The API's segment() shrinks such an image to what the device holds.
    const [width, height, why] = await page.evaluate((n) => window.rpl.session.inferenceSize(n, n), side);
    assert.ok(width * height <= limit && width === height && width >= side - 2, `${width}x${height} for ${limit} pixels`);
    assert.equal(why, 'the largest this device can run with this model');

    // Models the page refuses: named, the loaded model stays in use.
    await segmentFile(page, join(BAD, 'scene_64x48.png'));
    // Each model is served from target/ and handed to the page's loader as a picked file is.
    const served = join(ROOT, 'target', 'browser-test', 'bad-models');
    mkdirSync(served, { recursive: true });
    const load = (name, bytes) => {
      writeFileSync(join(served, name), bytes);
      return page.evaluate(async (n) => {
        const bytes = await (await fetch(`/target/browser-test/bad-models/${n}`)).arrayBuffer();
        return window.rpl.loadModel(n, bytes).then(() => 'loaded', (e) => e.message);
      }, name);
    };
    const random = Buffer.alloc(4096);
    for (let i = 0, s = 12345; i < random.length; i += 1) random[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
    const demo = readFileSync(DEMO_MODEL);
    const nan = editedModel((header, bytes, start) => {
      bytes.writeUInt16LE(0x7e00, start + header['branch1.aspp.features.0.0.weight'].data_offsets[0]);
    });
    const renamed = editedModel((header) => {
      header['branch1.aspp.features.0.0.weighs'] = header['branch1.aspp.features.0.0.weight'];
      delete header['branch1.aspp.features.0.0.weight'];
    });
    const reshaped = editedModel((header) => {
      const entry = header['branch1.bot_fine.weight'];
      entry.shape = [entry.shape[1], entry.shape[0], 1, 1];
    });
    for (const [name, bytes, expected] of [
      ['random.safetensors', random, /random\.safetensors is not a readable safetensors file/],
      ['truncated.safetensors', demo.subarray(0, demo.length >> 1), /truncated\.safetensors is not a readable safetensors file/],
      ['model.pth', readFileSync(join(BAD, 'calls_os_system.pth')), /model\.pth is not a readable PyTorch checkpoint \(its pickle calls `posix\.system`, which no state dict needs: refused/],
      ['nan.safetensors', nan, /nan\.safetensors: tensor `branch1\.aspp\.features\.0\.0\.weight` holds 1 NaN or infinite values/],
      ['renamed.safetensors', renamed, /missing from the checkpoint[\s\S]*branch1\.aspp\.features\.0\.0\.weight[\s\S]*unexpected[\s\S]*weighs/],
      ['reshaped.safetensors', reshaped, /branch1\.bot_fine\.weight: the network expects \[6, 16, 1, 1\], the checkpoint has \[16, 6, 1, 1\]/],
    ]) {
      const message = await load(name, bytes);
      assert.match(message, expected, `${name}: ${message}`);
    }
    assert.match(await page.textContent('#model-line'), /rpl-demo\.safetensors/, 'the loaded model stays');
    await segmentFile(page, join(BAD, 'scene_64x48.png'));

    // Ground truth that does not fit: named, the metrics table is not touched.
    for (const [name, expected] of [
      ['mask_wrong_size.png', /mask is 32x24, the image 64x48/],
      ['mask_unknown_values.png', /values other than 0 \(inlier\), 1 \(OoD\) and 255 \(ignored\): \[7\]/],
    ]) {
      await page.setInputFiles('#mask-file', join(BAD, name));
      await page.waitForSelector('#status.error');
      assert.match(await statusText(page), expected);
      await page.evaluate(() => document.getElementById('status').classList.remove('error'));
    }
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

test('a lost GPU device restarts the Worker, which reloads the model and the last image', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await openPage(browser, '?test-hooks&backend=webgpu');
    await segmentFile(page, join(BAD, 'scene_64x48.png'));
    const before = await screenState(page);
    await page.evaluate(() => window.rpl.session.request('destroyDevice'));
    // The Worker reports the loss at once; the page restarts it and recovers.
    await waitForStatus(page, /Recovered from: the GPU device was lost/);
    assert.match(await statusText(page), /WebGPU on/, 'a fresh device');
    assert.equal((await screenState(page)).views[0], before.views[0], 'the last image is back on screen');
    await segmentFile(page, join(BAD, 'grey.png'), /Done in \d+ ms at 64x48\./);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

// CI runs 40 (SwiftShader takes seconds per run); RPL_PAGE_RUNS=200 runs the 200.
const PAGE_RUNS = Number(process.env.RPL_PAGE_RUNS ?? 40);
test('inferences in a row: the Worker\'s and the GPU allocator\'s memory and the page\'s JS heap stay flat', { timeout: 3_600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await openPage(browser, '?backend=webgpu');
    const measure = () => page.evaluate(async () => {
      const worker = await window.rpl.session.memory();
      // Collect twice around a pause, so that the last run's promises have let go of it.
      window.gc();
      await new Promise((r) => setTimeout(r, 100));
      window.gc();
      return { ...worker, jsHeap: performance.memory.usedJSHeapSize };
    });
    const run = (count) => page.evaluate(async (n) => {
      const blob = await (await fetch('/tests/bad_inputs/scene_64x48.png')).blob();
      for (let i = 0; i < n; i += 1) await window.rpl.segmentBlob(blob);
    }, count);
    const opened = await page.evaluate(() => window.rpl.state.runs);
    const warmRuns = 10;
    await run(warmRuns);
    const warm = await measure();
    const started = Date.now();
    await run(PAGE_RUNS - warmRuns);
    const after = await measure();
    const seconds = (Date.now() - started) / 1000;
    console.log(`${PAGE_RUNS} inferences: after ${warmRuns} ${JSON.stringify(warm)}, after ${PAGE_RUNS} ${JSON.stringify(after)}, `
      + `the last ${PAGE_RUNS - warmRuns} in ${seconds.toFixed(1)} s`);
    assert.equal(await page.evaluate(() => window.rpl.state.runs), opened + PAGE_RUNS);
    assert.ok(after.jsHeap - warm.jsHeap <= 1 << 20, `the page's JS heap grew by ${after.jsHeap - warm.jsHeap} bytes`);
    assert.ok(after.wasmBytes - warm.wasmBytes <= 1 << 20, `wasm memory grew by ${after.wasmBytes - warm.wasmBytes} bytes`);
    assert.ok(after.deviceBytesReserved <= warm.deviceBytesReserved, `GPU pool grew from ${warm.deviceBytesReserved} to ${after.deviceBytesReserved}`);
    assert.ok(after.deviceBytesInUse <= warm.deviceBytesInUse, `GPU memory in use grew from ${warm.deviceBytesInUse} to ${after.deviceBytesInUse}`);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
  }
});

test('the page obeys its Content-Security-Policy, sends nothing away and works offline once opened', { timeout: 300_000 }, async () => {
  const own = await startServer();
  const browser = await launchBrowser({ webgpu: true });
  const requests = [];
  browser.context.on('request', (r) => requests.push(r.url()));
  try {
    const page = await browser.context.newPage();
    await page.addInitScript(() => {
      window.cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    // A first visit: the visitor's image picked before the model is in.
    await openBeforeModel(page, `${own.url}/index.html`, (p) => p.setInputFiles('#image-file', join(BAD, 'scene_64x48.png')));
    await waitForRuns(page, 1, /Done in \d+ ms at 64x48\./);
    assert.ok(await page.evaluate(() => window.rpl.offlineReady), 'the service worker is installed');
    assert.deepEqual(await page.evaluate(() => window.cspViolations), [], 'the page needs nothing its policy forbids');
    // The policy is in force: an injected inline script does not run, and is reported.
    const injected = await page.evaluate(async () => {
      const script = document.createElement('script');
      script.textContent = 'window.injectedRan = true;';
      document.head.append(script);
      await new Promise((r) => setTimeout(r, 200));
      return { ran: window.injectedRan === true, violations: window.cspViolations };
    });
    assert.equal(injected.ran, false, 'an inline script is blocked');
    assert.match(injected.violations.join(' '), /script-src/);
    const foreign = requests.filter((u) => new URL(u).origin !== own.url && !u.startsWith('blob:') && !u.startsWith('data:'));
    assert.deepEqual(foreign, [], 'no request leaves the page\'s origin');

    // The server goes away: the page, its module and the samples come from the service worker's
    // cache, the model from the page's (its version cannot be checked: the cached copy is used),
    // and the first sample is shown with its ground truth.
    own.close();
    await new Promise((r) => setTimeout(r, 500));
    await page.reload();
    await page.evaluate(() => window.rpl.firstResult);
    assert.match(await page.textContent('#model-line'), /rpl-demo\.safetensors/);
    assert.equal(await page.evaluate(() => window.rpl.state.imageName), 'scene_0000');
    await page.waitForSelector('#metrics:not([hidden])', { timeout: 10_000 });
  } finally {
    own.close();
    await browser.close();
  }
});
