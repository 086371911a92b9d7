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

/** A new page on the first visit's sample, collecting its uncaught errors. */
async function firstVisit(browser) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/index.html`);
  await page.evaluate(() => window.rpl.firstResult);
  return { page, errors };
}

/** Presses on the input view at `from` (fractions of it), drags to `to`, releases. */
const dragOnInput = (page, from, to = from) => dragAcross(page, '#input-view', [from, to]);

/** Drags across a canvas through `points` (fractions of it). */
async function dragAcross(page, selector, points) {
  await page.locator(selector).scrollIntoViewIfNeeded();
  const box = await page.locator(selector).boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  await page.mouse.move(...at(points[0]));
  await page.mouse.down();
  for (const point of points.slice(1)) await page.mouse.move(...at(point), { steps: 4 });
  await page.mouse.up();
}

test('paste an outlier: out2 rises on it more than out1, the automatic mask is the ground truth, undo and a shared link reproduce the figures', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const { page, errors } = await firstVisit(browser);
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

/** The last cut-out the page made: its size, opaque pixels and distinct colours there. */
const lastCutout = (page) => page.evaluate(() => {
  const { image, name } = window.rpl.state.cutouts.at(-1);
  const colours = new Set();
  let opaque = 0;
  for (let i = 0; i < image.width * image.height; i += 1) {
    if (image.data[4 * i + 3] >= 128) {
      opaque += 1;
      colours.add(image.data.slice(4 * i, 4 * i + 3).join(','));
    }
  }
  return { name, width: image.width, height: image.height, opaque, colours: [...colours] };
});

test('a cut-out from a user image (rectangle, lasso, a transparent PNG) is pasted and scored', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const { page, errors } = await firstVisit(browser);

    // A rectangle from another scene, opened as a visitor's own file.
    await page.setInputFiles('#cutout-file', join(ROOT, 'models', 'samples', 'scene_0006.png'));
    await page.waitForFunction(() => !document.getElementById('cutout-views').hidden);
    await dragAcross(page, '#cutout-source', [[0.2, 0.4], [0.35, 0.6], [0.45, 0.8]]);
    await page.waitForFunction(() => window.rpl.state.cutouts.length === 1);
    const rectangle = await lastCutout(page);
    assert.equal(rectangle.opaque, rectangle.width * rectangle.height, 'a rectangle is opaque throughout');
    assert.ok(rectangle.width > 20 && rectangle.height > 20, JSON.stringify(rectangle));
    assert.equal(await page.inputValue('#outlier-kind'), 'cutout:0', 'the new cut-out is the chosen object');

    // A lasso (a triangle) cuts fewer pixels than its box.
    await page.check('input[name="cut-shape"][value="lasso"]');
    await dragAcross(page, '#cutout-source', [[0.6, 0.3], [0.9, 0.3], [0.75, 0.9], [0.6, 0.3]]);
    await page.waitForFunction(() => window.rpl.state.cutouts.length === 2);
    const lasso = await lastCutout(page);
    const boxPixels = lasso.width * lasso.height;
    assert.ok(lasso.opaque > boxPixels / 3 && lasso.opaque < boxPixels * 0.7, `a triangle: ${lasso.opaque} of ${boxPixels}`);

    // The rectangle pasted on the road: its pixels become the ground truth, in its own colours.
    await page.selectOption('#outlier-kind', 'cutout:0');
    await page.fill('#outlier-size', '0.3');
    await dragOnInput(page, [0.5, 0.9]);
    assert.equal(await settled(page), 1);
    const pasted = await page.evaluate(() => {
      const { base, mask, lastObject, pastedPixels, change } = window.rpl.state.experiment;
      const image = window.rpl.state.image;
      const inside = [];
      let unchangedOutside = true;
      for (let i = 0; i < lastObject.values.length; i += 1) {
        const pixel = Array.from(image.data.slice(4 * i, 4 * i + 3));
        if (lastObject.values[i]) inside.push(pixel.join(','));
        else if (pixel.join() !== Array.from(base.image.data.slice(4 * i, 4 * i + 3)).join()) unchangedOutside = false;
      }
      const onMask = lastObject.values.reduce((n, v, i) => n + (v && mask.values[i] === 1 ? 1 : 0), 0);
      return { inside, onMask, pastedPixels, unchangedOutside, changePixels: change?.pixels };
    });
    assert.ok(pasted.pastedPixels > 500, `the cut-out covers ${pasted.pastedPixels} pixels`);
    assert.equal(pasted.inside.length, pasted.pastedPixels);
    assert.equal(pasted.onMask, pasted.pastedPixels, 'every pasted pixel is OoD in the ground truth');
    assert.equal(pasted.changePixels, pasted.pastedPixels, 'before and after cover the cut-out');
    assert.ok(pasted.unchangedOutside, 'the image is unchanged outside the cut-out');
    const colours = new Set(rectangle.colours);
    assert.ok(pasted.inside.every((c) => colours.has(c)), 'every pasted pixel is one of the cut-out\'s');
    const metrics = await shownMetrics(page);
    assert.ok(metrics.out2.nOod >= pasted.pastedPixels && Number.isFinite(metrics.out2.auroc), JSON.stringify(metrics));
    assert.match(await page.textContent('#experiment-report'), /^cut-out 1 pasted on \d+ pixels: AUROC/);
    assert.match(await page.textContent('#experiment-report'), /the link leaves the cut-outs out/);
    assert.equal(await page.evaluate(() => new URL(location.href).searchParams.has('paste')), false, 'no cut-out in the link');

    // The swipe view: before left of the line, after right of it.
    await page.check('input[name="before-after-view"][value="swipe"]');
    const visible = await page.evaluate(() => ['before-after', 'swipe-views', 'side-views', 'swipe-1', 'after-1'].map((id) => [id, document.getElementById(id).checkVisibility(), document.getElementById(id).hidden]));
    assert.ok(await page.locator('#swipe-1').isVisible() && !(await page.locator('#after-1').isVisible()), `${JSON.stringify(visible)} ${await page.textContent('#status')}`);
    const halves = await page.evaluate(() => {
      const same = (a, b, x0, x1) => {
        const [ca, cb] = [a, b].map((c) => c.getContext('2d').getImageData(x0, 0, x1 - x0, c.height).data);
        return ca.every((v, i) => v === cb[i]);
      };
      const [view, before, after] = ['swipe-2', 'before-2', 'after-2'].map((id) => document.getElementById(id));
      const split = Math.round(0.5 * view.width);
      return { left: same(view, before, 0, split - 1), right: same(view, after, split + 1, view.width), differ: !same(before, after, 0, view.width) };
    });
    assert.deepEqual(halves, { left: true, right: true, differ: true });
    await page.locator('#experiment').screenshot({ path: join(SHOTS, '9-cutout-swipe.png') });

    // A transparent PNG taken whole: only its opaque pixels are the object.
    const opaque = await page.evaluate(async () => {
      const canvas = new OffscreenCanvas(40, 30);
      const context = canvas.getContext('2d');
      // A cross on a transparent background (whole pixels: no partly transparent edge).
      context.fillStyle = '#c03';
      context.fillRect(5, 10, 20, 6);
      context.fillRect(12, 2, 6, 24);
      const file = new File([await canvas.convertToBlob({ type: 'image/png' })], 'cross.png', { type: 'image/png' });
      const input = /** @type {HTMLInputElement} */ (document.getElementById('cutout-file'));
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      input.dispatchEvent(new Event('change'));
      return context.getImageData(0, 0, 40, 30).data.filter((v, i) => i % 4 === 3 && v >= 128).length;
    });
    await page.waitForFunction(() => document.getElementById('cutout-source').width === 40);
    await page.click('#cut-whole');
    await page.waitForFunction(() => window.rpl.state.cutouts.length === 3);
    const cross = await lastCutout(page);
    assert.equal(opaque, 20 * 6 + 6 * 24 - 6 * 6);
    assert.deepEqual([cross.opaque, cross.width, cross.height], [opaque, 20, 24], 'the cross\'s pixels, cropped to it');
    assert.deepEqual(cross.colours, ['204,0,51']);
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});

/** Tabs (or shift-tabs) until the element with `id` has the focus: the keyboard alone. */
async function tabTo(page, id, backwards = false) {
  for (let i = 0; i < 60; i += 1) {
    if (await page.evaluate(() => document.activeElement?.id) === id) return;
    await page.keyboard.press(backwards ? 'Shift+Tab' : 'Tab');
  }
  assert.fail(`Tab never reached #${id}`);
}

test('the guided path is walked with the keyboard alone, each step observed on the live page', { timeout: 600_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const { page, errors } = await firstVisit(browser);
    const observation = async (step) => {
      await page.waitForFunction(() => document.getElementById('guide-observation').textContent !== '', null, { timeout: 120_000 });
      await page.screenshot({ path: join(SHOTS, `10-guide-step-${step}.png`), fullPage: true });
      await page.locator('#guide').screenshot({ path: join(SHOTS, `10-guide-step-${step}-panel.png`) });
      return page.textContent('#guide-observation');
    };
    const number = (text, pattern) => Number(text.match(pattern)?.[1]);

    await tabTo(page, 'guide-action');
    assert.match(await page.textContent('#guide-heading'), /^Step 1 of 5/);
    await page.keyboard.press('Enter');
    const one = await observation(1);
    assert.match(one, /^out1 labels \d+ % of the object's \d+ pixels "[a-z ]+", with a mean softmax confidence of [\d.]+ %/);
    const { change } = await page.evaluate(() => ({ change: window.rpl.state.experiment.change }));
    assert.equal(number(one, /object's (\d+) pixels/), change.pixels);

    const next = async (step) => {
      await tabTo(page, 'guide-next');
      await page.keyboard.press('Enter');
      assert.match(await page.textContent('#guide-heading'), new RegExp(`^Step ${step} of 5`));
      assert.equal(await page.textContent('#guide-observation'), '', 'a new step starts unobserved');
      await tabTo(page, 'guide-action', true);
      await page.keyboard.press('Enter');
      return observation(step);
    };
    const two = await next(2);
    assert.equal(await page.inputValue('#score-mode'), 'energy');
    assert.equal(number(two, /energy is (-?[\d.]+) on the object/), Number(change.inside.out1.after.toFixed(2)));

    const three = await next(3);
    const [out2Rise, out1Rise] = [number(three, /out2's mean energy on it by (-?[\d.]+)/), number(three, /out1's by (-?[\d.]+)/)];
    assert.ok(out2Rise > out1Rise, three);
    assert.ok(number(three, /class to ([\d.]+) %/) > 95, three);
    assert.ok(await page.locator('#swipe-2').isVisible(), 'step 3 shows the swipe view');

    const four = await next(4);
    const shown = await page.evaluate(() => ({
      threshold: Number(document.getElementById('threshold').value), mean: window.rpl.state.experiment.change.inside.out2.after,
      step: Number(document.getElementById('threshold').step), metrics: window.rpl.state.metrics,
    }));
    assert.ok(Math.abs(shown.threshold - shown.mean) <= shown.step, JSON.stringify(shown));
    assert.equal(number(four, /FPR95: out2 ([\d.]+) %/), Number((100 * shown.metrics.out2.fpr95).toFixed(2)));

    const five = await next(5);
    assert.equal(await page.inputValue('#score-mode'), 'max-softmax');
    const softmax = await page.evaluate(() => window.rpl.state.metrics);
    assert.notEqual(softmax.out2.auroc, shown.metrics.out2.auroc, 'the metrics follow the score mode');
    assert.equal(number(five, /AUROC out2 ([\d.]+)/), Number(softmax.out2.auroc.toFixed(4)));
    assert.match(five, /\(energy: FPR95 out2 [\d.]+ %/);
    assert.equal(await page.getAttribute('#guide-paper', 'href'), 'https://arxiv.org/abs/2211.14512');
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});
