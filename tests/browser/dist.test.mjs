// `./build.sh dist`: the folder, served by a plain static server (Python's, no headers of ours),
// runs the page and the minimal example end to end; a redeploy with another model reaches a
// browser that cached the first one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT, FIXTURES, FLOAT32_TOLERANCE, VERSION, startPlainServer, launchBrowser, convertedFixtureModel, readSafetensors, assertClose,
  sha256OfFile, sourceHash,
} from './harness.mjs';

const OUT = join(ROOT, 'target', 'dist-test');
let server;

/** Writes the folder with `model` bundled; returns its hashed directory's name. */
function buildDist(model) {
  execFileSync(join(ROOT, 'build.sh'), ['dist', '--as-built', '--out', OUT, '--model', model], { cwd: ROOT, stdio: 'pipe' });
  const versions = readdirSync(join(OUT, 'v'));
  assert.equal(versions.length, 1, `one hashed directory: ${versions}`);
  return versions[0];
}

let firstVersion;
before(async () => {
  firstVersion = buildDist(join(ROOT, 'models', 'rpl-demo.safetensors'));
  server = await startPlainServer(OUT);
});
after(() => server?.close());

/** Opens the page at the folder's root and waits for its first sample; returns what it shows. */
async function visit(page) {
  await page.goto(`${server.url}/`);
  await page.evaluate(() => window.rpl.firstResult);
  await page.evaluate(() => window.rpl.offlineReady);
  // The model file's hash comes after the load.
  await page.waitForFunction(() => /SHA-256 [0-9a-f]{16}/.test(document.getElementById('model-line').textContent), null, { timeout: 60_000 });
  return page.evaluate(async () => ({
    status: document.getElementById('status').textContent,
    model: document.getElementById('model-line').textContent,
    modelHash: document.getElementById('model-line').title,
    about: document.getElementById('about').textContent,
    runs: window.rpl.state.runs,
    isolated: self.crossOriginIsolated,
    cores: navigator.hardwareConcurrency,
    info: window.rpl.session.info,
    cached: (await (await caches.open('rpl-models')).keys()).map((r) => new URL(r.url).pathname),
  }));
}

/** out2's energy on the fixture case with the model the page loaded (the case image is not part
 * of the folder: its bytes are handed in). */
const caseEnergy = (page) => page.evaluate(async (bytes) => {
  const { session } = window.rpl;
  await session.segment(new Blob([new Uint8Array(bytes)], { type: 'image/png' }));
  return Array.from((await session.scores()).scores.out2);
}, [...readFileSync(join(FIXTURES, 'case_64x128.png'))]);

test('dist/ on a plain static server: the page, the example, and a redeployed model', { timeout: 300_000 }, async () => {
  const reference = readSafetensors(join(FIXTURES, 'case_64x128.safetensors')).energy.data;
  const browser = await launchBrowser({ webgpu: false });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // First visit: no isolation headers from this server, so one thread, said; the demo model.
    const first = await visit(page);
    assert.equal(first.runs, 1, first.status);
    assert.match(first.status, /one thread: the page is not cross-origin isolated/);
    assert.match(first.model, /^Model: rpl-demo\.safetensors \(width 1\/8/);
    // Provenance: the version, the sources the modules were built from, the model file's hash.
    const demoHash = sha256OfFile(join(ROOT, 'models', 'rpl-demo.safetensors'));
    assert.ok(first.model.includes(`SHA-256 ${demoHash.slice(0, 16)}`), first.model);
    assert.ok(first.modelHash.includes(demoHash), first.modelHash);
    assert.equal(first.about, `rpl-web ${VERSION}, built from sources ${sourceHash()} (rpl --version prints the same), webgpu module`);
    assert.deepEqual(first.cached, [`/v/${firstVersion}/models/rpl-demo.safetensors`]);
    const demoEnergy = await caseEnergy(page);
    assert.throws(() => assertClose('the demo model against the fixture model', demoEnergy, reference, FLOAT32_TOLERANCE));

    // The minimal example, from the same folder.
    const example = await browser.context.newPage();
    example.on('pageerror', (e) => errors.push(e.message));
    await example.goto(`${server.url}/examples/minimal.html`);
    await example.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    await example.setInputFiles('#image', join(ROOT, 'models', 'samples', 'scene_0001.png'));
    await example.waitForFunction(() => /out of distribution/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    assert.deepEqual(await example.evaluate(() => [document.getElementById('mask').width, document.getElementById('mask').height]), [512, 256]);
    await example.close();

    // Redeployed with another model (the fixture's): the browser that cached the demo model gets
    // the new one, now cross-origin isolated through the service worker (every core).
    const fixtureModel = join(ROOT, convertedFixtureModel().slice(1));
    const secondVersion = buildDist(fixtureModel);
    assert.notEqual(secondVersion, firstVersion, 'another model, another hashed directory');
    const second = await visit(page);
    assert.equal(second.isolated, true, 'the service worker adds the isolation headers');
    assert.equal(second.info.threads, second.cores, second.status);
    assertClose('the redeployed model', await caseEnergy(page), reference, FLOAT32_TOLERANCE);
    assert.ok(second.modelHash.includes(sha256OfFile(fixtureModel)), `the redeployed model's hash: ${second.modelHash}`);
    assert.match(second.about, /, threads module$/);
    // The old bundled model leaves the cache once the new service worker is active.
    const cachedModels = () => page.evaluate(async () => (await (await caches.open('rpl-models')).keys()).map((r) => new URL(r.url).pathname));
    const current = [`/v/${secondVersion}/models/rpl-demo.safetensors`];
    for (let i = 0; i < 300 && JSON.stringify(await cachedModels()) !== JSON.stringify(current); i += 1) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await cachedModels(), current);
    assert.deepEqual(errors, [], 'no uncaught errors in the pages');
  } finally {
    await browser.close();
  }
});
