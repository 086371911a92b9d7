// The browser path: the page's Worker runs the fixture network on WebGPU (Chromium's
// SwiftShader where there is no GPU), then on the CPU fallback (on every core where the page is
// cross-origin isolated, else on one thread), and reproduces the reference.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  FIXTURES, FLOAT32_TOLERANCE, startServer, launchBrowser, convertedFixtureModel, readSafetensors,
  assertClose, argmaxWithMargin,
} from './harness.mjs';

const CASES = ['case_64x128', 'case_97x161'];
const DEFAULT_BINDING_LIMIT = 128 * 1024 * 1024; // WebGPU's default maxStorageBufferBindingSize
let server;
let plainServer; // without the cross-origin isolation headers
let modelUrl;

before(async () => {
  server = await startServer();
  plainServer = await startServer({ isolated: false });
  modelUrl = convertedFixtureModel();
});
after(() => {
  server?.close();
  plainServer?.close();
});

async function runCases({ webgpu, origin = server.url, query = '' }) {
  const browser = await launchBrowser({ webgpu });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // SwiftShader is a software adapter, which the page passes over unless told: told here.
    await page.goto(`${origin}/index.html?model=none${webgpu ? '&backend=webgpu' : ''}${query}`);
    const info = await page.evaluate(async () => {
      const info = await window.rpl.ready;
      const adapter = navigator.gpu && (await navigator.gpu.requestAdapter());
      return {
        ...info, adapterLimit: adapter ? adapter.limits.maxStorageBufferBindingSize : null,
        cores: navigator.hardwareConcurrency, isolated: self.crossOriginIsolated,
        status: document.getElementById('status').textContent,
      };
    });
    const description = await page.evaluate((url) => window.rpl.loadModelFromUrl(url), modelUrl);
    assert.match(description, /width 1\/8/);
    // A Rust error reaches the page as an Error with its message; the loaded model stays.
    const message = await page.evaluate(() =>
      window.rpl.loadModel('garbage.safetensors', new Uint8Array([1, 2, 3, 4]).buffer).then(() => 'loaded', (e) => e.message));
    assert.match(message, /garbage\.safetensors.*not a readable safetensors/);
    const results = [];
    for (const name of CASES) {
      const result = await page.evaluate(async (url) => {
        const blob = await (await fetch(url)).blob();
        const r = await window.rpl.segmentBlob(blob);
        // The page draws from pictures of the maps; the maps themselves come on request.
        const { classes, scores } = await window.rpl.session.scores();
        return {
          width: r.width, height: r.height, ms: r.ms, mode: r.mode,
          classes: Array.from(classes.out1), energy: Array.from(scores.out2), energyOut1: Array.from(scores.out1),
        };
      }, `/tests/fixtures/rpl_w8/${name}.png`);
      results.push({ name, ...result });
    }
    // One more pass, through the benchmark's call: how many convolutions ran each way.
    const { convolutions } = await page.evaluate(async () => {
      const image = new ImageData(new Uint8ClampedArray(48 * 32 * 4).fill(128), 48, 32);
      return window.rpl.session.runThrough(image, 'score');
    });
    // The module's static constructors ran once, when it started, not on each call into it.
    const { constructorRuns } = await page.evaluate(() => window.rpl.session.memory());
    assert.equal(constructorRuns, 1, 'static constructors run once per module, not on every call into it');
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
    return { info, results, convolutions };
  } finally {
    await browser.close();
  }
}

function compareWithReference(label, results) {
  for (const r of results) {
    const reference = readSafetensors(join(FIXTURES, `${r.name}.safetensors`));
    const [, classes, height, width] = reference.out1.shape;
    assert.deepEqual([r.height, r.width], [height, width]);
    assert.equal(r.mode, 'energy');
    const e2 = assertClose(`${label} ${r.name} energy`, r.energy, reference.energy.data, FLOAT32_TOLERANCE);
    const e1 = assertClose(`${label} ${r.name} energy_out1`, r.energyOut1, reference.energy_out1.data, FLOAT32_TOLERANCE);
    const expected = argmaxWithMargin(reference.out1.data, classes, 1e-3);
    const wrong = expected.filter((c, i) => c !== null && c !== r.classes[i]).length;
    assert.equal(wrong, 0, `${label} ${r.name}: class map is the argmax of out1`);
    console.log(`${label} ${r.name}: energy rel. error ${e2.toExponential(2)}, energy_out1 ${e1.toExponential(2)}, ${r.ms.toFixed(0)} ms`);
  }
}

// The fixture network's 63 convolutions. At width 1/8: NARROW are strided or too narrow for
// matrix products (burn's kernel runs them there); WIDE_POINTWISE are wide 1x1s (matrix products on the implicit
// path too); 3 have input channels the implicit routine cannot load 4 at a time (the image's 3,
// and 6 + 32 in each of the decoder's two passes: burn's kernel). Our register tiles run all 63.
const CONVOLUTIONS = 63;
const NARROW = 41;
const WIDE_POINTWISE = 3;
const UNALIGNED = 3;

test('WebGPU in the Worker reproduces the reference energies and class maps', { timeout: 600_000 }, async () => {
  const { info, results, convolutions } = await runCases({ webgpu: true });
  assert.equal(info.backend, 'webgpu', `ran on ${info.backend}: ${info.fallbackReason}`);
  // burn's kernel by default, and the status line does not name it.
  assert.equal(info.convolution, 'direct');
  assert.doesNotMatch(info.status, /convolutions/);
  assert.deepEqual(convolutions, { kernel: CONVOLUTIONS, products: 0, implicit: 0, taps: 0, tiles: 0 });
  // The device was asked for the adapter's own limit, above WebGPU's default.
  assert.equal(info.maxStorageBufferBindingSize, info.adapterLimit);
  assert.ok(info.maxStorageBufferBindingSize > DEFAULT_BINDING_LIMIT, `binding limit ${info.maxStorageBufferBindingSize}`);
  console.log(`adapter: ${info.adapter}, maxStorageBufferBindingSize ${info.maxStorageBufferBindingSize}`);
  compareWithReference('webgpu', results);
});

test('?conv=implicit, products and tiles run WebGPU\'s convolutions so, say it, and reproduce the reference too', { timeout: 600_000 }, async () => {
  for (const [convolution, paths] of [
    ['implicit', { kernel: UNALIGNED, products: WIDE_POINTWISE, implicit: CONVOLUTIONS - UNALIGNED - WIDE_POINTWISE, taps: 0, tiles: 0 }],
    ['products', { kernel: NARROW, products: CONVOLUTIONS - NARROW, implicit: 0, taps: 0, tiles: 0 }],
    ['tiles', { kernel: 0, products: 0, implicit: 0, taps: 0, tiles: CONVOLUTIONS }],
  ]) {
    const { info, results, convolutions } = await runCases({ webgpu: true, query: `&conv=${convolution}` });
    assert.equal(info.backend, 'webgpu', `ran on ${info.backend}: ${info.fallbackReason}`);
    assert.equal(info.convolution, convolution);
    assert.match(info.status, new RegExp(`^WebGPU on .*, ${convolution} convolutions\\. Ready\\.`));
    assert.deepEqual(convolutions, paths, `${convolution}: convolutions run each way`);
    compareWithReference(`webgpu, ${convolution} convolutions`, results);
  }
  // An unknown choice is said, and the default runs.
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await browser.context.newPage();
    await page.goto(`${server.url}/index.html?model=none&backend=webgpu&conv=winograd`);
    assert.equal((await page.evaluate(() => window.rpl.ready)).convolution, 'direct');
    await page.waitForFunction(() => /, direct convolutions \(\?conv=winograd is none of direct, products, implicit, tiles\)\. Ready\./
      .test(document.getElementById('status').textContent));
  } finally {
    await browser.close();
  }
});

test('without WebGPU the same page falls back to the CPU on every core and reproduces them too', { timeout: 600_000 }, async () => {
  const { info, results, convolutions } = await runCases({ webgpu: false });
  assert.equal(info.backend, 'cpu');
  assert.match(info.fallbackReason, /WebGPU/);
  // Our flex kernel runs every convolution, the trunk's two strided ones too.
  assert.deepEqual(convolutions, { kernel: 0, products: 0, implicit: 0, taps: CONVOLUTIONS, tiles: 0 });
  // serve.py's headers: the threaded module, one thread per core the browser reports.
  assert.equal(info.isolated, true, 'the page served as ./build.sh serve does is cross-origin isolated');
  assert.ok(info.cores > 1, `this test needs a machine with 2 cores or more (${info.cores})`);
  assert.equal(info.threads, info.cores, JSON.stringify(info));
  assert.equal(info.threadsReason, null);
  assert.match(info.status, new RegExp(`^CPU, ${info.cores} threads \\(.*WebGPU.*\\)\\. Ready\\.`));
  compareWithReference(`cpu, ${info.threads} threads`, results);
});

test('where the page is not cross-origin isolated, or one thread is asked for, the CPU path runs on one thread, says why, and reproduces them too', { timeout: 600_000 }, async () => {
  const plain = await runCases({ webgpu: false, origin: plainServer.url });
  assert.equal(plain.info.isolated, false);
  assert.equal(plain.info.threads, 1, JSON.stringify(plain.info));
  assert.match(plain.info.threadsReason, /not cross-origin isolated/);
  assert.match(plain.info.status, /^CPU, one thread: the page is not cross-origin isolated .*\. Ready\./);
  compareWithReference('cpu, one thread', plain.results);

  const asked = await runCases({ webgpu: false, query: '&threads=1' });
  assert.equal(asked.info.isolated, true);
  assert.equal(asked.info.threads, 1, JSON.stringify(asked.info));
  assert.match(asked.info.status, /^CPU, one thread: one thread requested \(\?threads=1\)/);
});

test('on a host without the isolation headers, the service worker supplies them from the second visit on: every core then', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const page = await browser.context.newPage();
    const visit = async () => {
      const info = await page.evaluate(() => window.rpl.ready);
      return { ...info, isolated: await page.evaluate(() => self.crossOriginIsolated), cores: await page.evaluate(() => navigator.hardwareConcurrency) };
    };
    await page.goto(`${plainServer.url}/index.html?model=none`);
    const first = await visit();
    assert.equal(first.isolated, false);
    assert.equal(first.threads, 1);
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.reload();
    const second = await visit();
    assert.equal(second.isolated, true, 'the service worker\'s headers isolate the page');
    assert.equal(second.threads, second.cores, JSON.stringify(second));
    assert.equal(second.threadsReason, null);
  } finally {
    await browser.close();
  }
});

test('a software WebGPU adapter is passed over for the CPU with the reason said; ?backend=webgpu forces it', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await browser.context.newPage();
    for (const [query, backend] of [['', 'cpu'], ['&backend=webgpu', 'webgpu']]) {
      await page.goto(`${server.url}/index.html?model=none${query}`);
      const info = await page.evaluate(() => window.rpl.ready);
      const fallback = await page.evaluate(async () => (await navigator.gpu.requestAdapter()).info.isFallbackAdapter);
      assert.equal(fallback, true, 'SwiftShader is a fallback adapter');
      assert.equal(info.backend, backend, JSON.stringify(info));
      if (backend === 'cpu') {
        assert.match(info.fallbackReason, /only adapter here is a software one \(google swiftshader\), slower than this CPU path/);
        await page.waitForFunction(() => /^CPU, \d+ threads \(WebGPU's only adapter here is a software one .*\)\. Ready\./.test(document.getElementById('status').textContent));
      }
    }
  } finally {
    await browser.close();
  }
});
