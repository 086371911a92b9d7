// Model files as visitors have them, opened in the page: the paper's .pth as torch.save writes
// it (plain and wrapped), safetensors in float32 and int8, read in slices in the Worker with
// progress and a Cancel button, kept in this browser for the next visit, and every bad file
// refused with the model in use kept.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, FIXTURES, FLOAT32_TOLERANCE, startServer, launchBrowser, readSafetensors, assertClose } from './harness.mjs';

const OUT = join(ROOT, 'target', 'browser-test');
const BIN = process.env.RPL_BIN ?? join(ROOT, 'target', 'release', 'rpl');
const PLAIN = join(FIXTURES, 'rpl_w8.pth');
const WRAPPED = join(FIXTURES, 'rpl_w8_wrapped.pth');
const CASE = 'case_64x128';
// tests/int8.rs: int8 moves the random-weight fixture network's energies by 10.2 % to 21.2 % of
// the largest reference value (float16: 3.2 % to 6.7 %); its bound is 25 %, and so is this one.
const INT8_TOLERANCE = 0.25;
let server;

before(async () => {
  server = await startServer();
  mkdirSync(OUT, { recursive: true });
});
after(() => server?.close());

/** Converts the plain fixture .pth with the command line; returns the file's path. */
function convert(name, flags = []) {
  const path = join(OUT, name);
  execFileSync(BIN, ['convert', PLAIN, path, ...flags]);
  return path;
}

async function openPage(context, query = 'model=none') {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/index.html?${query}&offline=no`);
  await page.evaluate(() => window.rpl.ready);
  return { page, errors };
}

const modelLine = (page) => page.textContent('#model-line');
const statusText = (page) => page.textContent('#status');

/** Picks `path` in the model file input and waits for the load to end; returns the status line. */
async function pickModel(page, path) {
  await page.setInputFiles('#model-file', path);
  await page.waitForFunction(() => !/Loading /.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
  return statusText(page);
}

/** The fixture case's energies of out2 under the loaded model, through the page's session. */
function segmentCase(page) {
  return page.evaluate(async (url) => {
    const { image } = await window.rpl.decodeImage(await (await fetch(url)).blob());
    await window.rpl.session.segment(image);
    return Array.from((await window.rpl.session.scores()).scores.out2);
  }, `/tests/fixtures/rpl_w8/${CASE}.png`);
}

test('the .pth as downloaded (plain, wrapped, dropped) and int8 safetensors load in the page; a reload offers the kept copy', { timeout: 900_000 }, async () => {
  const reference = readSafetensors(join(FIXTURES, `${CASE}.safetensors`)).energy.data;
  const cliFloat32 = convert('rpl_w8_cli.safetensors');
  const int8 = convert('rpl_w8_int8.safetensors', ['--int8']);
  const browser = await launchBrowser({ webgpu: true });
  try {
    // On WebGPU (SwiftShader, forced); the bad files below go to the page's default, the CPU here.
    const { page, errors } = await openPage(browser.context, 'model=none&backend=webgpu');

    // Picked: read in slices, with progress up to every tensor, and kept.
    const progress = [];
    await page.exposeFunction('recordProgress', (p) => progress.push(p));
    await page.evaluate(() => {
      const { session } = window.rpl;
      const loadModel = session.loadModel.bind(session);
      session.loadModel = (source, options) => loadModel(source, { ...options, onProgress: (p) => { window.recordProgress(p); options.onProgress?.(p); } });
    });
    const status = await pickModel(page, PLAIN);
    assert.match(status, /rpl_w8\.pth loaded in .* Kept in this browser \(\d+\.\d MB\) for your next visit\./);
    assert.match(await modelLine(page), /Model: rpl_w8\.pth \(width 1\/8/);
    const last = progress.at(-1);
    assert.ok(last && last.tensors === last.totalTensors && last.bytes === last.totalBytes && last.totalTensors === 254, JSON.stringify(last));
    const fromPth = await segmentCase(page);
    const error = assertClose('plain .pth energy', fromPth, reference, FLOAT32_TOLERANCE);

    // The command line's float32 conversion gives the same outputs, bit for bit.
    const fromCli = await page.evaluate(async (url) => {
      await window.rpl.loadModel('cli.safetensors', (await fetch(url)).arrayBuffer());
      const { image } = await window.rpl.decodeImage(await (await fetch('/tests/fixtures/rpl_w8/case_64x128.png')).blob());
      await window.rpl.session.segment(image);
      return Array.from((await window.rpl.session.scores()).scores.out2);
    }, `/target/browser-test/rpl_w8_cli.safetensors`);
    assert.deepEqual(fromCli, fromPth, 'the page-converted and CLI-converted float32 models give identical energies');

    // Dropped on the page: the wrapped checkpoint ({model: {module.branch1.*}, epoch}).
    const dropped = await page.evaluateHandle(async (url) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([await (await fetch(url)).blob()], 'rpl_w8_wrapped.pth'));
      return transfer;
    }, '/tests/fixtures/rpl_w8/rpl_w8_wrapped.pth');
    await page.dispatchEvent('body', 'drop', { dataTransfer: dropped });
    await page.waitForFunction(() => /rpl_w8_wrapped\.pth loaded/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
    assert.deepEqual(await segmentCase(page), fromPth, 'the wrapped checkpoint holds the same weights');

    // int8 safetensors, dequantised at load: within the bound tests/int8.rs states.
    assert.match(await pickModel(page, int8), /rpl_w8_int8\.safetensors loaded/);
    const int8Error = assertClose('int8 energy', await segmentCase(page), reference, INT8_TOLERANCE);
    console.log(`energy rel. error: .pth ${error.toExponential(2)}, int8 ${int8Error.toExponential(2)}`);

    // The next visit: the kept copies are offered by name and size, and run without the files.
    await page.reload();
    await page.evaluate(() => window.rpl.ready);
    await page.waitForSelector('#kept-models button');
    const offered = await page.$$eval('#kept-models button', (buttons) => buttons.map((b) => b.textContent));
    assert.equal(offered.length, 3, offered.join(' | '));
    assert.ok(offered.some((text) => /^Use rpl_w8\.pth \(\d+\.\d MB, kept \d{4}-\d\d-\d\d\)$/.test(text)), offered.join(' | '));
    await page.getByRole('button', { name: /^Use rpl_w8\.pth / }).click();
    await page.waitForFunction(() => /rpl_w8\.pth loaded/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
    assert.deepEqual(await segmentCase(page), fromPth, 'the kept copy gives the same energies as the .pth');

    // Forget: every kept copy goes.
    await page.click('#forget-models');
    await page.waitForFunction(() => /Forgot 3 kept/.test(document.getElementById('status').textContent));
    assert.equal(await page.locator('#kept-models button').count(), 0);
    assert.deepEqual(await page.evaluate(async () => await window.rpl.session.keptModels()), []);
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});

test('a load can be cancelled, and bad model files are refused by name with the model in use kept', { timeout: 900_000 }, async () => {
  // A file cut inside its largest tensor; a zip of photos; another network; a pickle that calls
  // os.system; a 5 GiB file (sparse: it takes no disk).
  const truncated = join(OUT, 'truncated.pth');
  const whole = readFileSync(PLAIN);
  writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length * 0.6)));
  const photos = join(OUT, 'photos.pth');
  execFileSync('python3', ['-c', `import zipfile; z = zipfile.ZipFile(${JSON.stringify(photos)}, "w"); z.writestr("holiday/readme.txt", "photos"); z.close()`]);
  // Before PyTorch 1.6, torch.save wrote bare pickles (protocol opcode 0x80 first).
  const legacy = join(OUT, 'legacy.pth');
  writeFileSync(legacy, Buffer.from([0x80, 0x02, 0x7d, 0x2e]));
  const huge = join(OUT, 'huge.pth');
  const fd = openSync(huge, 'w');
  ftruncateSync(fd, 5 * 2 ** 30);
  closeSync(fd);
  const cases = [
    [truncated, /truncated\.pth is truncated: it ends inside tensor `branch1\.[\w.]+` \(\d+ of its \d+ bytes are there\)/],
    [photos, /photos\.pth is not a readable PyTorch checkpoint \(a zip archive without data\.pkl/],
    [join(ROOT, 'tests', 'bad_inputs', 'other_network.pth'),
      /other_network\.pth does not match the width 1\/8 \(19 classes\) RPL network[^]*branch1\.mod2\.block1\.bn1\.0\.weight: the network expects \[8\], the checkpoint has \[9\]/],
    [join(ROOT, 'tests', 'bad_inputs', 'calls_os_system.pth'), /calls_os_system\.pth .*calls `posix\.system`, which no state dict needs: refused/],
    [legacy, /legacy\.pth was saved by PyTorch before 1\.6 .*which this page does not read: convert it once with `rpl convert legacy\.pth/],
    [huge, /huge\.pth is 5120 MB: more than this browser can read \(4096 MB\)/],
  ];
  const browser = await launchBrowser({ webgpu: true });
  try {
    const { page, errors } = await openPage(browser.context, 'model=/models/rpl-demo.safetensors');
    await page.waitForFunction(() => /Model: rpl-demo/.test(document.getElementById('model-line').textContent), null, { timeout: 120_000 });
    // The first sample runs at once: its status line must not overwrite the ones read below.
    await page.evaluate(() => window.rpl.firstResult);
    const inUse = await modelLine(page);

    // Cancelled at its first step: the model in use stays and nothing is kept.
    await page.evaluate(() => {
      const { session } = window.rpl;
      const loadModel = session.loadModel.bind(session);
      session.loadModel = (source, options) => {
        const cancel = new AbortController();
        const loading = loadModel(source, { ...options, signal: cancel.signal });
        cancel.abort();
        return loading;
      };
    });
    await page.setInputFiles('#model-file', PLAIN);
    await page.waitForFunction(() => /cancelled/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    assert.match(await statusText(page), /loading rpl_w8\.pth was cancelled; the model in use is kept/);
    assert.equal(await modelLine(page), inUse);
    assert.deepEqual(await page.evaluate(async () => await window.rpl.session.keptModels()), []);
    await page.evaluate(() => { delete window.rpl.session.loadModel; });

    for (const [path, expected] of cases) {
      const status = await pickModel(page, path);
      assert.match(status, expected);
      assert.equal(await page.evaluate(() => document.getElementById('status').classList.contains('error')), true, status);
      assert.equal(await modelLine(page), inUse, `${path}: the model in use is kept`);
      assert.equal(await page.isHidden('#cancel-load'), true, 'the Cancel button goes with the load');
    }
    // The kept model still runs.
    const result = await page.evaluate(async () => {
      const { image } = await window.rpl.decodeImage(await (await fetch('/models/samples/scene_0000.png')).blob());
      return (await window.rpl.session.segment(image)).width;
    });
    assert.equal(result, 512);
    assert.deepEqual(await page.evaluate(async () => await window.rpl.session.keptModels()), [], 'no failed load is kept');
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});
