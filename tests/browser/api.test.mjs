// The browser API (www/rpl.js) as a page of someone else's uses it: the minimal example end to
// end, every exported function on the fixture model, typed errors with codes, and the types
// (rpl.d.ts) checked by tsc on the example and on our own page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT, FIXTURES, FLOAT32_TOLERANCE, VERSION, startServer, launchBrowser, convertedFixtureModel, readSafetensors, assertClose,
  sha256OfFile, sourceHash,
} from './harness.mjs';

let server;
let modelUrl;

before(async () => {
  server = await startServer();
  modelUrl = convertedFixtureModel();
});
after(() => server?.close());

test('the minimal example: pick an image, see the out-of-distribution mask', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/examples/minimal.html`);
    await page.waitForFunction(() => /^Ready \(cpu\)/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    await page.setInputFiles('#image', join(ROOT, 'models', 'samples', 'scene_0000.png'));
    await page.waitForFunction(() => /out of distribution/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    const shown = await page.evaluate(() => {
      const mask = document.getElementById('mask');
      const pixels = mask.getContext('2d').getImageData(0, 0, mask.width, mask.height).data;
      const photo = document.getElementById('photo');
      return { status: document.getElementById('status').textContent, mask: [mask.width, mask.height], photo: [photo.width, photo.height], drawn: pixels.some((v) => v > 0) };
    });
    assert.match(shown.status, /^\d+\.\d % of pixels out of distribution \(\d+ ms\)$/);
    const share = Number(shown.status.split(' ')[0]);
    assert.ok(share > 0 && share < 50, `a sample scene's outliers are a small part of it: ${share} %`);
    assert.deepEqual([shown.photo, shown.mask], [[512, 256], [512, 256]]);
    assert.ok(shown.drawn, 'the mask is drawn');
    // A file that is no image: the error's code and message on the status line.
    await page.setInputFiles('#image', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not a picture') });
    await page.waitForFunction(() => /^bad-image: /.test(document.getElementById('status').textContent), null, { timeout: 60_000 });
    assert.match(await page.textContent('#status'), /^bad-image: notes\.png is not an image this browser can decode/);
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});

test('every function of the API, on the fixture model: typed errors, each image kind, masks, kept models', { timeout: 300_000 }, async () => {
  const browser = await launchBrowser({ webgpu: false });
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/tests/browser/empty.html`);
    const report = await page.evaluate(async (modelUrl) => {
      const api = await import('/www/rpl.js');
      const { RplSession, RplError } = api;
      // What a rejected promise or a throw gives: its class, code and message.
      const failure = async (run) => {
        try {
          await run();
          return 'no error';
        } catch (e) {
          return { name: e.name, code: e.code, rpl: e instanceof RplError, fatal: e.fatal, message: e.message };
        }
      };
      const r = { constants: [api.HEADS, api.SCORE_MODES, api.MODEL_FILE.test('rpl.pth'), api.MODEL_FILE.test('photo.png')] };
      r.badBackend = await failure(() => new RplSession({ backend: 'gpu' }));
      r.errorClasses = ['ModelError', 'ImageError', 'CancelledError', 'BackendError', 'UsageError']
        .map((name) => new api[name]('m', 'failed') instanceof RplError && new api[name]('m').name === name);

      const session = await RplSession.create({ backend: 'cpu' });
      r.info = { backend: session.info.backend, legend: session.legend.length };
      const caseBlob = await (await fetch('/tests/fixtures/rpl_w8/case_64x128.png')).blob();
      r.noModel = await failure(() => session.segment(caseBlob));

      // A URL, downloaded with progress; bytes and Blobs; refusals.
      const progress = [];
      const loaded = await session.loadModel(modelUrl, { cache: false, onProgress: (p) => progress.push(p) });
      r.loaded = { name: loaded.name, description: loaded.description, model: session.model.name, maxPixels: session.maxPixels };
      // The file is hashed after the load, between requests; provenance() waits for it.
      r.loadedIdentity = [loaded.sha256, loaded.bytes];
      r.provenance = await session.provenance();
      r.modelIdentity = [session.model.sha256, session.model.bytes];
      r.threads = session.info.threads;
      r.phases = [...new Set(progress.map((p) => p.phase))];
      const last = progress.at(-1);
      r.lastProgress = [last.tensors === last.totalTensors, last.bytes === last.totalBytes, last.totalTensors];
      const bytes = await (await fetch(modelUrl)).arrayBuffer();
      r.fromBytes = (await session.loadModel(bytes, { name: 'bytes.safetensors' })).description === loaded.description;
      r.fromBlob = (await session.loadModel(new Blob([bytes]), { name: 'blob.safetensors' })).description === loaded.description;
      r.blobRandom = (await session.loadModel(new Blob([new Uint8Array(bytes).slice().reverse()]), { name: 'reversed.bin' }).catch((e) => e.code));
      r.blobModel = (await session.provenance()).model;
      r.badModel = await failure(() => session.loadModel(new Uint8Array([1, 2, 3, 4]), { name: 'garbage.safetensors' }));
      r.modelKept = session.model.name;
      r.notAModel = await failure(() => session.loadModel(42));
      r.cancelled = await failure(() => session.loadModel(modelUrl, { signal: AbortSignal.abort() }));
      const cancelling = new AbortController();
      const loading = session.loadModel(new Blob([bytes]), { name: 'cancelled.safetensors', signal: cancelling.signal });
      cancelling.abort();
      r.cancelledInWorker = await failure(() => loading);
      r.missing = await failure(() => session.loadModel('/models/no-such-model.safetensors'));

      // Each kind of image gives the same scores as the encoded file.
      const result = await session.segment(caseBlob);
      const { scores, classes } = await session.scores();
      r.result = {
        size: [result.width, result.height, result.sourceWidth, result.sourceHeight], shrunk: result.shrunk, mode: result.mode,
        classImages: api.HEADS.map((h) => result.classImages[h] instanceof ImageData && result.classImages[h].width === 128),
        seen: result.image.width, range: result.scoreRange, classes: classes.out1.length,
      };
      r.energy = Array.from(scores.out2);
      const same = async (source) => {
        await session.segment(source);
        const other = (await session.scores()).scores.out2;
        return other.length === scores.out2.length && other.every((v, i) => v === scores.out2[i]);
      };
      const bitmap = await createImageBitmap(caseBlob);
      const img = new Image();
      img.src = URL.createObjectURL(caseBlob);
      await img.decode();
      const canvas = document.createElement('canvas');
      [canvas.width, canvas.height] = [128, 64];
      canvas.getContext('2d').drawImage(bitmap, 0, 0);
      const { image: decoded } = await api.toImageData(caseBlob);
      r.kinds = { imageData: await same(decoded), bitmap: await same(bitmap), img: await same(img), canvas: await same(canvas) };
      // A <video> frame (a canvas stream: its colours go through video, so only the size is compared).
      const video = document.createElement('video');
      video.muted = true;
      document.body.append(canvas, video);
      video.srcObject = canvas.captureStream();
      // The stream sends a frame when the canvas is painted: painted until the video has one.
      const playing = video.play();
      for (let i = 0; i < 200 && video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA; i += 1) {
        canvas.getContext('2d').drawImage(bitmap, (i % 2) / 4, 0);
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 10)));
      }
      await playing;
      const frame = await session.segment(video);
      r.video = [frame.width, frame.height];
      video.srcObject.getTracks().forEach((t) => t.stop());
      r.notAnImage = await failure(() => session.segment({ width: 2, height: 2 }));
      r.badImage = await failure(() => session.segment(new File([new Uint8Array([1, 2, 3])], 'broken.png', { type: 'image/png' })));
      const small = await session.segment(caseBlob, { maxSide: 64, score: 'entropy' });
      r.small = [small.width, small.height, small.sourceWidth, small.shrunk, small.mode];
      r.inferenceSize = session.inferenceSize(4000, 2000, 1000);
      const fitted = await api.toImageData(caseBlob, (w, h) => [w / 2, h / 2], { smooth: false });
      api.drawImageData(canvas, fitted.image);
      r.toImageData = [fitted.image.width, fitted.image.height, fitted.width, fitted.height, canvas.width, canvas.height];

      // Follow-up questions on the last image (the case at full size again).
      await session.segment(caseBlob);
      const rescored = await session.rescore('max-softmax');
      r.rescore = [rescored.mode, rescored.baseline, (await session.rescore('energy')).mode];
      r.badMode = await failure(() => session.rescore('loudness'));
      const pixel = await session.pixel(3, 5);
      r.pixel = [typeof pixel.names.out1, pixel.classes.out1 === classes.out1[5 * 128 + 3], pixel.scores.out2 === scores.out2[5 * 128 + 3]];
      r.outside = await failure(() => session.pixel(500, 0));
      const heat = await session.heatImage('out2');
      const heatRanged = await session.heatImage('out1', { range: [0, 1], opacity: 1 });
      r.heat = [heat.width, heat.height, heatRanged instanceof ImageData];
      r.badHead = await failure(() => session.heatImage('out3'));
      const [lo, hi] = result.scoreRange;
      const all = await session.maskImage('out2', lo - 1);
      const none = await session.maskImage('out2', hi + 1);
      r.masks = [all.share, none.share, all.image.width, all.image.height];
      // Ground truth: the left half OoD.
      const values = new Uint8Array(128 * 64).map((_, i) => (i % 128 < 64 ? 1 : 0));
      const metrics = await session.evaluate({ width: 128, height: 64, values });
      r.metrics = api.HEADS.map((h) => [metrics[h].nOod, metrics[h].auroc >= 0 && metrics[h].auroc <= 1, metrics[h].roc instanceof Float64Array]);
      const maskCanvas = new OffscreenCanvas(128, 64);
      const maskImage = new ImageData(128, 64);
      values.forEach((v, i) => { maskImage.data.set([v, v, v, 255], 4 * i); });
      maskCanvas.getContext('2d').putImageData(maskImage, 0, 0);
      const maskBlob = await maskCanvas.convertToBlob({ type: 'image/png' });
      const fromImage = await session.evaluate(maskBlob);
      r.maskFromImage = fromImage.out2.auroc === metrics.out2.auroc && fromImage.out2.nOod === 4096;
      r.maskValues = (await session.maskValues(maskBlob)).values.every((v, i) => v === values[i]);
      r.badMask = await failure(() => session.evaluate({ width: 64, height: 64, values: new Uint8Array(64 * 64) }));
      r.notAMask = await failure(() => session.evaluate({ width: 2 }));
      const npy = await session.npy('out2');
      r.npy = [String.fromCharCode(...npy.slice(1, 6)), npy.length > 128 * 64 * 4];
      r.memory = (await session.memory()).wasmBytes > 0;
      r.runThrough = typeof (await session.runThrough(decoded, 'trunk')).ms;
      r.badStage = await failure(() => session.runThrough(decoded, 'head'));

      // Outliers pasted into an image: the mask marks their pixels, every other pixel keeps its bytes.
      r.outlierKinds = session.outlierKinds.map((k) => `${k.name}${k.heldOut ? ' (held out)' : ''}`);
      const star = { kind: 'checker-star', x: 64, y: 60, size: 40, seed: 3 };
      const allIgnored = { width: 128, height: 64, values: new Uint8Array(128 * 64).fill(255) };
      const pasted = await session.pasteOutliers(decoded, [star], { baseMask: allIgnored });
      const marks = pasted.mask.values;
      let [ones, others, untouched, changed] = [0, 0, true, 0];
      for (let i = 0; i < marks.length; i += 1) {
        const same = [0, 1, 2, 3].every((c) => pasted.image.data[4 * i + c] === decoded.data[4 * i + c]);
        if (marks[i] === 1) {
          ones += 1;
          if (!same) changed += 1;
        } else {
          others += marks[i] === 255;
          untouched &&= same;
        }
      }
      r.pasted = { ones, pastedPixels: pasted.pastedPixels, others: others + ones === marks.length, untouched, changed: changed > ones / 2 };
      r.pastedAgain = Array.from((await session.pasteOutliers(decoded, [star])).image.data).join() === Array.from(pasted.image.data).join();
      r.unknownOutlier = await failure(() => session.pasteOutliers(decoded, [{ ...star, kind: 'unicorn' }]));
      r.badPlacement = await failure(() => session.pasteOutliers(decoded, [{ ...star, size: 'big' }]));
      r.wrongBaseMask = await failure(() => session.pasteOutliers(decoded, [star], { baseMask: { width: 2, height: 2, values: new Uint8Array(4) } }));
      // A rectangle of 20x10 pixels cut out, pasted 20 pixels tall: 40x20 pixels.
      const cut = await session.cutOut(decoded, [[10, 10], [30, 10], [30, 20], [10, 20]]);
      r.cut = [cut.image.width, cut.image.height, cut.pixels, cut.image.data[3], Array.from(cut.image.data.slice(0, 3)).join() === Array.from(decoded.data.slice(4 * (10 * 128 + 10), 4 * (10 * 128 + 10) + 3)).join()];
      r.cutPasted = (await session.pasteOutliers(decoded, [{ cutout: 0, x: 64, y: 60, size: 20 }], { cutouts: [cut.image] })).pastedPixels;
      r.shortOutline = await failure(() => session.cutOut(decoded, [[0, 0], [5, 5]]));
      r.emptyOutline = await failure(() => session.cutOut(decoded, [[200, 0], [210, 0], [210, 5]]));
      r.missingCutout = await failure(() => session.pasteOutliers(decoded, [{ cutout: 1, x: 64, y: 60, size: 20 }], { cutouts: [cut.image] }));
      r.kindAndCutout = await failure(() => session.pasteOutliers(decoded, [{ ...star, cutout: 0 }], { cutouts: [cut.image] }));

      // Before and after: the case image kept, the star pasted in, what changed on it.
      await session.segment(decoded);
      await session.keepBefore();
      const withStar = await session.pasteOutliers(decoded, [star]);
      await session.segment(withStar.image);
      const change = await session.objectChange(withStar.lastObject);
      const { out1Class } = change;
      r.change = [change.pixels === withStar.pastedPixels, typeof change.inside.out2.change, typeof change.outside.out1.before,
        out1Class.share > 0 && out1Class.share <= 1, out1Class.confidence > 0 && out1Class.confidence <= 1, typeof out1Class.name,
        change.sameClassOnInliers >= 0 && change.sameClassOnInliers <= 1];
      const allIgnoredTruth = { truth: { width: 128, height: 64, values: new Uint8Array(128 * 64).fill(255) } };
      r.noKnownPixels = Number.isNaN((await session.objectChange(withStar.lastObject, allIgnoredTruth)).sameClassOnInliers);
      r.wrongTruth = await failure(() => session.objectChange(withStar.lastObject, { truth: { width: 2, height: 2, values: new Uint8Array(4) } }));
      const beforeHeat = await session.heatImage('out2', { before: true });
      r.beforeHeat = [beforeHeat.width, beforeHeat.height];
      r.noObject = await failure(() => session.objectChange({ width: 128, height: 64, values: new Uint8Array(128 * 64) }));
      r.notAnObject = await failure(() => session.objectChange(null));

      // Models kept in this browser.
      const kept = await session.loadModel(new Blob([bytes]), { name: 'kept.safetensors', keep: true });
      r.kept = [kept.kept?.name, (await session.keptModels()).length];
      await session.provenance();
      r.keptEntry = (await session.keptModels())[0].sha256;
      const fromKept = await session.loadKept(kept.kept.key);
      r.fromKept = fromKept.name;
      r.keptIdentity = [fromKept.sha256, fromKept.bytes, (await session.provenance()).model];
      r.notKept = await failure(() => session.loadKept('no-such-key'));
      r.forgot = await session.forgetModels();
      r.keptAfter = (await session.keptModels()).length;
      r.random = (await session.loadRandomWeights(8)).description;
      r.randomModel = (await session.provenance()).model;
      const weights = await session.loadWeights('weights.safetensors', bytes.slice(0));
      r.weights = [weights.name, weights.sha256, weights.bytes];

      // A restart starts afresh; a disposed session refuses everything.
      const restarted = await session.restart();
      r.restart = [restarted.backend, session.model, await failure(() => session.segment(caseBlob))];
      session.dispose();
      r.disposed = await failure(() => session.memory());
      return r;
    }, modelUrl);

    assert.deepEqual(report.constants, [['out1', 'out2'], ['energy', 'entropy', 'max-softmax', 'max-logit'], true, false]);
    const usage = { name: 'UsageError', code: 'bad-argument', rpl: true, fatal: false };
    const like = (failure, expected, message) => {
      assert.notEqual(failure, 'no error', `${message}: expected ${expected.name}`);
      const { message: text, ...rest } = failure;
      assert.deepEqual(rest, { rpl: true, fatal: false, ...expected }, `${message}: ${text}`);
      return text;
    };
    like(report.badBackend, usage, 'an unknown backend');
    assert.deepEqual(report.errorClasses, [true, true, true, true, true]);
    assert.deepEqual(report.info, { backend: 'cpu', legend: 19 });
    like(report.noModel, { name: 'ModelError', code: 'no-model' }, 'segmenting before a model');

    assert.deepEqual(report.loaded.name, 'rpl_w8.safetensors');
    assert.match(report.loaded.description, /width 1\/8/);
    assert.equal(report.loaded.model, 'rpl_w8.safetensors');
    const modelFile = join(ROOT, modelUrl.slice(1));
    const [modelHash, modelBytes] = [sha256OfFile(modelFile), readFileSync(modelFile).length];
    assert.deepEqual(report.provenance, {
      version: VERSION,
      source: sourceHash(),
      module: report.threads > 1 ? 'threads' : 'webgpu',
      model: { name: 'rpl_w8.safetensors', bytes: modelBytes, sha256: modelHash },
    });
    assert.deepEqual(report.loadedIdentity, [null, modelBytes]);
    assert.deepEqual(report.modelIdentity, [modelHash, modelBytes]);
    // A refused load leaves the model in use, and its hash.
    assert.equal(report.blobRandom, 'bad-model');
    assert.deepEqual(report.blobModel, { name: 'blob.safetensors', bytes: modelBytes, sha256: modelHash });
    assert.ok(Number.isFinite(report.loaded.maxPixels) && report.loaded.maxPixels > 1e5, `maxPixels ${report.loaded.maxPixels}`);
    assert.equal(report.phases[0], 'downloading', `phases ${report.phases}`);
    assert.ok(report.phases.length >= 2, `phases ${report.phases}`);
    assert.deepEqual(report.lastProgress, [true, true, 254]);
    assert.equal(report.fromBytes, true);
    assert.equal(report.fromBlob, true);
    assert.match(like(report.badModel, { name: 'ModelError', code: 'bad-model' }, 'garbage bytes'), /garbage\.safetensors/);
    assert.equal(report.modelKept, 'blob.safetensors', 'a refused model leaves the one in use');
    like(report.notAModel, usage, 'a number as a model');
    like(report.cancelled, { name: 'CancelledError', code: 'cancelled' }, 'an aborted signal');
    assert.match(like(report.cancelledInWorker, { name: 'CancelledError', code: 'cancelled' }, 'a load aborted in the Worker'),
      /loading cancelled\.safetensors was cancelled; the model in use is kept/);
    assert.match(like(report.missing, { name: 'ModelError', code: 'fetch-failed' }, 'a missing URL'), /HTTP 404/);

    assert.deepEqual(report.result.size, [128, 64, 128, 64]);
    assert.equal(report.result.shrunk, '');
    assert.equal(report.result.mode, 'energy');
    assert.deepEqual(report.result.classImages, [true, true]);
    assert.equal(report.result.classes, 128 * 64);
    const reference = readSafetensors(join(FIXTURES, 'case_64x128.safetensors'));
    assertClose('the API\'s out2 energy', report.energy, reference.energy.data, FLOAT32_TOLERANCE);
    assert.deepEqual(report.kinds, { imageData: true, bitmap: true, img: true, canvas: true });
    assert.deepEqual(report.video, [128, 64]);
    like(report.notAnImage, usage, 'a plain object as an image');
    assert.match(like(report.badImage, { name: 'ImageError', code: 'bad-image' }, 'a broken PNG'), /^broken\.png is not an image/);
    assert.deepEqual(report.small, [64, 32, 128, 'the chosen inference size', 'entropy']);
    assert.deepEqual(report.inferenceSize, [1000, 500, 'the chosen inference size']);
    assert.deepEqual(report.toImageData, [64, 32, 128, 64, 64, 32]);

    assert.deepEqual(report.rescore, ['max-softmax', true, 'energy']);
    like(report.badMode, usage, 'an unknown score mode');
    assert.deepEqual(report.pixel, ['string', true, true]);
    like(report.outside, usage, 'a pixel outside the image');
    assert.deepEqual(report.heat, [128, 64, true]);
    like(report.badHead, usage, 'an unknown head');
    assert.deepEqual(report.masks, [1, 0, 128, 64]);
    assert.deepEqual(report.metrics, [[4096, true, true], [4096, true, true]]);
    assert.equal(report.maskFromImage, true);
    assert.equal(report.maskValues, true);
    like(report.badMask, { name: 'ImageError', code: 'bad-mask' }, 'a mask of another size');
    like(report.notAMask, usage, 'an object without values as a mask');
    assert.deepEqual(report.npy, ['NUMPY', true]);
    assert.equal(report.memory, true);
    assert.equal(report.runThrough, 'number');
    like(report.badStage, usage, 'an unknown stage');
    assert.deepEqual(report.outlierKinds, ['animal', 'crate', 'debris', 'ball', 'checker-star (held out)', 'striped-blob (held out)']);
    assert.ok(report.pasted.ones > 200, `a star 40 pixels tall covers ${report.pasted.ones} pixels`);
    assert.deepEqual(report.pasted, { ones: report.pasted.ones, pastedPixels: report.pasted.ones, others: true, untouched: true, changed: true });
    assert.equal(report.pastedAgain, true, 'the same placement draws the same pixels');
    assert.match(like(report.unknownOutlier, usage, 'an unknown outlier kind'), /unicorn.*checker-star/);
    like(report.badPlacement, usage, 'a size that is not a number');
    like(report.wrongBaseMask, { name: 'ImageError', code: 'bad-mask' }, 'a base mask of another size');
    assert.deepEqual(report.change, [true, 'number', 'number', true, true, 'string', true]);
    assert.deepEqual(report.cut, [20, 10, 200, 255, true], 'a 20x10 rectangle cut from (10, 10)');
    assert.equal(report.cutPasted, 40 * 20, 'the cut-out pasted at twice its height');
    assert.match(like(report.shortOutline, usage, 'an outline of two points'), /at least 3 points/);
    assert.match(like(report.emptyOutline, usage, 'an outline off the image'), /encloses no opaque pixel/);
    assert.match(like(report.missingCutout, usage, 'a cut-out not given'), /asks for cut-out 1; the list of cut-outs given holds 1/);
    assert.match(like(report.kindAndCutout, usage, 'a kind and a cut-out'), /either a kind or a cutout/);
    assert.equal(report.noKnownPixels, true, 'a ground truth with no inlier leaves no known pixel');
    like(report.wrongTruth, { name: 'ImageError', code: 'bad-mask' }, 'a ground truth of another size');
    assert.deepEqual(report.beforeHeat, [128, 64]);
    assert.match(like(report.noObject, usage, 'an empty object'), /covers no pixel/);
    like(report.notAnObject, usage, 'no object mask');

    assert.deepEqual(report.kept, ['kept.safetensors', 1]);
    assert.equal(report.fromKept, 'kept.safetensors');
    // A kept copy is float32 whatever the original was: the hash given is the original's.
    assert.equal(report.keptEntry, modelHash);
    assert.deepEqual(report.keptIdentity, [modelHash, modelBytes, { name: 'kept.safetensors', bytes: modelBytes, sha256: modelHash }]);
    like(report.notKept, { name: 'ModelError', code: 'no-model' }, 'an unknown kept key');
    assert.equal(report.forgot.kept, 1);
    assert.equal(report.keptAfter, 0);
    assert.match(report.random, /width 1\/8/);
    assert.deepEqual(report.randomModel, { name: 'random 1/8', bytes: null, sha256: null });
    assert.deepEqual(report.weights, ['weights.safetensors', modelHash, modelBytes]);
    assert.equal(report.restart[0], 'cpu');
    assert.equal(report.restart[1], null, 'a restarted session has no model');
    like(report.restart[2], { name: 'ModelError', code: 'no-model' }, 'segmenting after a restart');
    like(report.disposed, { name: 'BackendError', code: 'disposed' }, 'a disposed session');
    assert.deepEqual(errors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
  }
});

test('tsc --noEmit passes on the example (strict) and on the page against rpl.d.ts', { timeout: 300_000 }, () => {
  const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
  const common = ['--noEmit', '--allowJs', '--checkJs', '--target', 'es2022', '--module', 'es2022',
    '--moduleResolution', 'bundler', '--lib', 'es2022,dom'];
  // tsc exits with 2 on any type error, its report on standard output.
  const run = (args) => {
    try {
      return execFileSync(tsc, [...common, ...args], { cwd: ROOT, encoding: 'utf8' });
    } catch (e) {
      return assert.fail(`tsc ${args.join(' ')}:\n${e.stdout}${e.stderr}`);
    }
  };
  assert.equal(run(['--strict', 'examples/minimal.js']), '');
  assert.equal(run(['--strict', 'false', 'www/app.js']), '');
});
