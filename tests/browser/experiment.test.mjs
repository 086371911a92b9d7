// The experiment RPL is built on, as a student runs it on the page: paste an unknown object into
// a known scene, and see what each head makes of it. The pasted pixels become the ground truth;
// undo and a shared link give back the same figures. Screenshots go to target/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launchBrowser } from './harness.mjs';

const SHOTS = join(ROOT, 'target', 'screenshots');
let server;

before(async () => {
  server = await startServer();
  mkdirSync(SHOTS, { recursive: true });
});
after(() => server?.close());

/** The metrics the page shows (both heads' AUROC, AP, FPR95 and pixel counts). */
const shownMetrics = (page) => page.evaluate(() => {
  const { metrics } = window.rpl.state;
  return metrics && Object.fromEntries(['out1', 'out2'].map((head) => {
    const { auroc, ap, fpr95, nInlier, nOod } = metrics[head];
    return [head, { auroc, ap, fpr95, nInlier, nOod }];
  }));
});

/** Waits for the pasted objects to be segmented and evaluated; returns how many there are. */
const settled = (page) => page.evaluate(async () => {
  await window.rpl.state.experiment.applied;
  await window.rpl.imageWork;
  return window.rpl.state.experiment.outliers.length;
});

/** Presses on the input view at (fx, fy) (fractions of it), drags to (tx, ty), releases. */
async function dragOnInput(page, [fx, fy], [tx, ty] = [fx, fy]) {
  await page.locator('#input-view').scrollIntoViewIfNeeded();
  const box = await page.locator('#input-view').boundingBox();
  await page.mouse.move(box.x + fx * box.width, box.y + fy * box.height);
  await page.mouse.down();
  await page.mouse.move(box.x + tx * box.width, box.y + ty * box.height, { steps: 4 });
  await page.mouse.up();
}

test('paste an outlier: out2 rises on it more than out1, the automatic mask is the ground truth, undo and a shared link reproduce the figures', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/index.html`);
    await page.evaluate(() => window.rpl.firstResult);
    const scores = () => page.evaluate(async () => {
      const { scores: s } = await window.rpl.session.scores();
      return { out1: Array.from(s.out1), out2: Array.from(s.out2) };
    });
    const before = await scores();
    const sample = await shownMetrics(page);
    const kinds = await page.$$eval('#outlier-kind option', (options) => options.map((o) => [o.value, o.textContent]));
    assert.ok(kinds.some(([value, text]) => value === 'checker-star' && /held out/.test(text)), JSON.stringify(kinds));
    assert.ok(kinds.some(([value, text]) => value === 'ball' && /training/.test(text)), JSON.stringify(kinds));

    // A held-out object (never seen in training) dragged onto the road.
    await page.selectOption('#outlier-kind', 'checker-star');
    await page.fill('#outlier-size', '0.3');
    await dragOnInput(page, [0.3, 0.9], [0.5, 0.92]);
    assert.equal(await settled(page), 1);
    const after = await scores();
    const pasted = await page.evaluate(() => window.rpl.state.experiment.pastedPixels);
    assert.ok(pasted > 500, `the object covers ${pasted} pixels`);
    // Before and after, as the page shows them, checked against the scores read here.
    const { change, lastObject } = await page.evaluate(() => ({
      change: window.rpl.state.experiment.change, lastObject: Array.from(window.rpl.state.experiment.lastObject.values),
    }));
    const onObject = lastObject.flatMap((m, i) => (m ? [i] : []));
    assert.equal(change.pixels, onObject.length);
    const mean = (values) => onObject.reduce((sum, i) => sum + values[i], 0) / onObject.length;
    for (const head of ['out1', 'out2']) {
      assert.ok(Math.abs(change.inside[head].before - mean(before[head])) < 1e-9, `${head} before: ${change.inside[head].before}`);
      assert.ok(Math.abs(change.inside[head].after - mean(after[head])) < 1e-9, `${head} after: ${change.inside[head].after}`);
    }
    assert.ok(change.inside.out2.change > change.inside.out1.change,
      `out2's mean score on the object rises by ${change.inside.out2.change}, out1's by ${change.inside.out1.change}`);
    assert.ok(await page.locator('#before-after').isVisible(), 'before and after are shown');
    assert.match(await page.textContent('#closed-set-label'), /^out1 labels \d+ % of the object's \d+ pixels "[a-z ]+"/);
    const one = await shownMetrics(page);
    assert.ok(one.out2.nOod >= pasted, `the pasted pixels are OoD in the metrics: ${one.out2.nOod}`);
    assert.match(await page.textContent('#experiment-report'), /out2/);
    await page.screenshot({ path: join(SHOTS, '9-pasted-outlier.png'), fullPage: true });
    await page.locator('#experiment').screenshot({ path: join(SHOTS, '9-experiment.png') });

    // The same mask dropped by hand (a PNG of its values) gives the same figures.
    const png = await page.evaluate(async () => {
      const { width, height, values } = window.rpl.state.experiment.mask;
      const canvas = new OffscreenCanvas(width, height);
      const image = new ImageData(width, height);
      values.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
      canvas.getContext('2d').putImageData(image, 0, 0);
      return Array.from(new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer()));
    });
    await page.evaluate(() => { window.rpl.state.metrics = null; });
    await page.setInputFiles('#mask-file', { name: 'pasted_mask.png', mimeType: 'image/png', buffer: Buffer.from(png) });
    await page.waitForFunction(() => window.rpl.state.metrics !== null, null, { timeout: 60_000 });
    assert.deepEqual(await shownMetrics(page), one, 'the mask dropped by hand');

    // A training kind, placed with the keyboard (Enter at the view's cursor); undo restores the
    // figures exactly, and so does clearing to the sample's own.
    await page.selectOption('#outlier-kind', 'ball');
    await page.focus('#input-view');
    for (let i = 0; i < 8; i += 1) await page.keyboard.press('Shift+ArrowRight');
    await page.keyboard.press('Enter');
    assert.equal(await settled(page), 2);
    const two = await shownMetrics(page);
    assert.notDeepEqual(two, one, 'a second object changes the figures');
    const link = await page.evaluate(() => location.href);
    await page.click('#undo-outlier');
    assert.equal(await settled(page), 1);
    assert.deepEqual(await shownMetrics(page), one, 'undo');
    assert.equal(await page.locator('#before-after').isVisible(), false, 'no before and after for an undo');
    await page.click('#clear-outliers');
    assert.equal(await settled(page), 0);
    assert.deepEqual(await shownMetrics(page), sample, 'clear all');

    // The link taken with two objects opens, in another browser, on the same figures.
    const elsewhere = await launchBrowser({ webgpu: false });
    try {
      const other = await elsewhere.context.newPage();
      other.on('pageerror', (e) => errors.push(e.message));
      await other.goto(link);
      await other.evaluate(() => window.rpl.firstResult);
      assert.equal(await settled(other), 2);
      assert.deepEqual(await shownMetrics(other), two, `the shared link ${link}`);
    } finally {
      await elsewhere.close();
    }
    assert.deepEqual(errors, [], 'no uncaught errors in the pages');
  } finally {
    await browser.close();
  }
});
