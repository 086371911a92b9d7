// The demo page as a user drives it: the bundled model and the first sample shown at once, an
// upload through the file input, every view, the threshold, ground truth and its metrics, errors
// that leave the page working, the model cache, and no request leaving the page's origin.
// Screenshots go to target/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launchBrowser } from './harness.mjs';

const SAMPLE = join(ROOT, 'models', 'samples', 'scene_0000.png');
const SAMPLE_MASK = join(ROOT, 'models', 'samples', 'scene_0000_ood.png');
const SMALL = join(ROOT, 'tests', 'bad_inputs', 'scene_64x48.png');
const MODEL = join(ROOT, 'models', 'rpl-demo.safetensors');
const SHOTS = join(ROOT, 'target', 'screenshots');
const BIN = process.env.RPL_BIN ?? join(ROOT, 'target', 'release', 'rpl');
let server;

before(async () => {
  server = await startServer();
  mkdirSync(SHOTS, { recursive: true });
});
after(() => server?.close());

/** A float32 .npy file's values. */
function readNpy(path) {
  const bytes = readFileSync(path);
  const headerLength = bytes.readUInt16LE(8);
  const data = bytes.subarray(10 + headerLength);
  return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
}

const statusText = (page) => page.textContent('#status');
const waitForStatus = (page, pattern, timeout = 180_000) =>
  page.waitForFunction((source) => new RegExp(source).test(document.getElementById('status').textContent), pattern.source, { timeout });

test('a first visit shows the first sample with its metrics; the page segments uploads, scores like the CLI and evaluates ground truth', { timeout: 900_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    const requests = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => requests.push({ url: r.url(), method: r.method() }));
    await page.goto(`${server.url}/index.html`);
    await page.waitForFunction(() => /Model: rpl-demo\.safetensors \(width 1\/\d+/.test(document.getElementById('model-line').textContent), null, { timeout: 120_000 });

    // No click: once the model is in, the first sample is segmented and evaluated as a click does.
    await page.evaluate(() => window.rpl.firstResult);
    assert.equal(await page.evaluate(() => window.rpl.state.runs), 1);
    assert.equal(await page.evaluate(() => window.rpl.state.imageName), 'scene_0000');
    assert.ok(await page.locator('#metrics').isVisible(), 'the sample\'s metrics are shown');
    const viewSizes = () => page.evaluate(() => ['input-view', 'class-view', 'class-view-2', 'heat-view-1', 'heat-view', 'mask-view']
      .map((id) => [document.getElementById(id).width, document.getElementById(id).height]));
    assert.deepEqual(await viewSizes(), Array(6).fill([512, 256]));
    assert.ok(await page.locator('#legend li').count() >= 3, 'the legend lists the classes shown');
    await page.screenshot({ path: join(SHOTS, '1-loaded.png'), fullPage: true });

    // The anomaly map equals the command line's for the same model and image.
    const out = join(ROOT, 'target', 'page-test');
    execFileSync(BIN, ['infer', '--model', MODEL, '--out', out, '--backend', 'flex', SAMPLE]);
    const cli = readNpy(join(out, 'scene_0000_score.npy'));
    const pageScore = await page.evaluate(async () => Array.from((await window.rpl.session.scores()).scores.out2));
    assert.equal(pageScore.length, cli.length);
    const scale = cli.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const worst = pageScore.reduce((m, v, i) => Math.max(m, Math.abs(v - cli[i])), 0);
    assert.ok(worst <= 1e-4 * scale, `page vs CLI score: max difference ${worst} (scale ${scale})`);

    // The threshold slider changes the OoD mask's share.
    const share = async (fraction) => page.evaluate((f) => {
      const slider = document.getElementById('threshold');
      slider.value = Number(slider.min) + f * (Number(slider.max) - Number(slider.min));
      slider.dispatchEvent(new Event('input'));
      return new Promise((resolve) => setTimeout(() => resolve(window.rpl.state.result.maskShare), 500));
    }, fraction);
    const [low, high] = [await share(0.2), await share(0.8)];
    assert.ok(low > high, `a lower threshold marks more pixels: ${low} vs ${high}`);

    // Ground truth through the file input: the metrics equal the CLI's evaluation of the same scene.
    await page.evaluate(() => {
      window.rpl.state.metrics = null;
      document.getElementById('metrics').hidden = true;
    });
    await page.setInputFiles('#mask-file', SAMPLE_MASK);
    await page.waitForSelector('#metrics:not([hidden])');
    const metrics = await page.evaluate(() => window.rpl.state.metrics);
    const json = join(out, 'scene_0000.json');
    execFileSync(BIN, ['eval', '--dataset', 'synthetic', '--model', MODEL, '--count', '1', '--outliers', 'any', '--backend', 'flex', '--json', json]);
    const expected = JSON.parse(readFileSync(json, 'utf8'));
    for (const [head, key] of [['out2', 'rpl'], ['out1', 'baseline']]) {
      for (const metric of ['auroc', 'ap', 'fpr95']) {
        assert.ok(Math.abs(metrics[head][metric] - expected[key][metric]) < 1e-3, `${head} ${metric}: page ${metrics[head][metric]}, CLI ${expected[key][metric]}`);
      }
    }
    assert.equal(await page.locator('#metrics tbody tr').count(), 2);
    await page.screenshot({ path: join(SHOTS, '3-ground-truth.png'), fullPage: true });

    // Upload through the file input: every view is drawn at the image's size; the old metrics go.
    await page.setInputFiles('#image-file', SMALL);
    await waitForStatus(page, /Done in \d+ ms at 64x48/);
    assert.deepEqual(await viewSizes(), Array(6).fill([64, 48]));
    assert.ok(await page.locator('#metrics').isHidden(), 'the sample\'s metrics are gone');
    await page.screenshot({ path: join(SHOTS, '2-segmented.png'), fullPage: true });

    // A file that is no image and a wrong weights file: readable errors, the page keeps working.
    const junk = join(out, 'not-an-image.png');
    writeFileSync(junk, 'this is text, not a PNG');
    await page.setInputFiles('#image-file', junk);
    await page.waitForSelector('#status.error');
    assert.match(await statusText(page), /decode|image/i);
    await page.setInputFiles('#model-file', junk);
    // The status shows "Loading…" and the image's error before the load's verdict: wait for that.
    await waitForStatus(page, /not-an-image\.png is not a checkpoint: neither its first bytes/, 60_000)
      .catch(async () => assert.fail(`no weights error; the status reads: ${await statusText(page)}`));
    assert.match(await page.textContent('#model-line'), /rpl-demo\.safetensors/, 'the loaded model stays');
    await page.screenshot({ path: join(SHOTS, '4-error.png'), fullPage: true });
    await page.setInputFiles('#image-file', SMALL);
    await waitForStatus(page, /Done in \d+ ms/);

    // A reload takes the model from the cache: no second download (a HEAD request checks its version).
    const downloads = () => requests.filter((r) => r.method === 'GET' && r.url.endsWith('rpl-demo.safetensors')).length;
    const before = downloads();
    await page.reload();
    await page.evaluate(() => window.rpl.firstResult);
    assert.equal(downloads(), before, 'the model came from the cache');
    assert.ok(requests.some((r) => r.method === 'HEAD' && r.url.endsWith('rpl-demo.safetensors')), 'its version was checked');

    // Another sample from the gallery: segmented and evaluated against its ground truth in one click.
    assert.ok(await page.locator('#samples button').count() >= 4, 'the gallery shows the sample scenes');
    await page.evaluate(() => { window.rpl.state.metrics = null; });
    await page.locator('#samples button').nth(1).click();
    await page.waitForFunction(() => window.rpl.state.imageName === 'scene_0001' && window.rpl.state.metrics?.out2?.ap > 0, null, { timeout: 180_000 });

    // Drag and drop: an image anywhere on the page, then a mask of its size on the ground-truth panel.
    const runs = await page.evaluate(() => window.rpl.state.runs);
    await page.evaluate(async () => {
      const blob = await (await fetch('/tests/bad_inputs/scene_64x48.png')).blob();
      const data = new DataTransfer();
      data.items.add(new File([blob], 'dropped.png', { type: 'image/png' }));
      document.querySelector('main').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction((n) => window.rpl.state.runs > n, runs, { timeout: 180_000 });
    assert.equal(await page.evaluate(() => window.rpl.state.imageName), 'dropped');
    await page.evaluate(() => { window.rpl.state.metrics = null; });
    await page.evaluate(async () => {
      // 64x48: inliers (0) with an OoD square (1) in the middle.
      const canvas = new OffscreenCanvas(64, 48);
      const context = canvas.getContext('2d');
      context.fillStyle = 'rgb(0, 0, 0)';
      context.fillRect(0, 0, 64, 48);
      context.fillStyle = 'rgb(1, 1, 1)';
      context.fillRect(24, 16, 16, 16);
      const data = new DataTransfer();
      data.items.add(new File([await canvas.convertToBlob({ type: 'image/png' })], 'dropped_ood.png', { type: 'image/png' }));
      document.querySelector('#ground-truth').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => window.rpl.state.metrics?.out2?.nOod === 256, null, { timeout: 60_000 });

    const foreign = requests.map((r) => r.url).filter((u) => !u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:'));
    assert.deepEqual(foreign, [], 'no request leaves the page\'s origin');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('float16 is used where the adapter has shader-f16 and otherwise refused with the reason', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await browser.context.newPage();
    await page.goto(`${server.url}/index.html?dtype=f16&model=none&backend=webgpu`);
    await waitForStatus(page, /Ready\./);
    const hasF16 = await page.evaluate(async () => (await navigator.gpu.requestAdapter()).features.has('shader-f16'));
    // Chromium's SwiftShader has no shader-f16; a GPU adapter usually has.
    const expected = hasF16 ? /WebGPU on .*, float16\. Ready\./ : /WebGPU on .* \(float32: this adapter has no shader-f16\)\. Ready\./;
    assert.match(await statusText(page), expected);
  } finally {
    await browser.close();
  }
});
