// Benchmark (not a test): times the browser path in headless Chromium; prints a table (and JSON).
//   node tests/browser/bench.mjs [--cpu] [--dtype f16] [--runs N] [--fixture-sizes 512x256]
//        [--released-sizes 128x64] [--skip-released] [--json FILE]
//        [--peer W8.onnx] [--peer-released FULL.onnx] [--peer-runtime DIR] [--threads 1,2]
//        [--conv direct,products,implicit] [--rounds R] [--warm-up SECONDS]
// The page is served as `./build.sh serve` serves it (cross-origin isolated): the CPU path runs
// on every core, or on each thread count of --threads in turn (1: the single-threaded module),
// and the speed-up over one thread is printed where 1 is among them. On WebGPU, --conv runs the
// page once per convolution choice (?conv=; default direct), and each size names how many
// convolutions ran each way in one frame.
// With --peer (and --peer-released), ONNX Runtime Web's wasm provider runs the same network as
// ONNX (../shared/peer/) on each size with the same thread count, in a page of its own opened
// after ours (its thread pool keeps spinning after each run, which slowed ours in one page), and
// the ratio is printed: a benchmark-only dependency, `npm install onnxruntime-web` somewhere and
// name its dist/ folder with --peer-runtime (default node_modules/onnxruntime-web/dist).
// --rounds R (default 1) repeats the whole set of pages R times, the thread counts (or --conv
// choices) in reverse order every other round, so that a machine slowing down over the run does
// not favour one of them; the summary pools each configuration's runs over the rounds (medians)
// and also prints each round's speed-up and ratio, whose spread says how far to trust them.
// --warm-up S (default 2): after the first inference, frames run untimed for S seconds before the
// timed ones, ONNX Runtime Web's too: V8 first runs a module's functions as it compiled them at
// once (Liftoff) and recompiles the hot ones optimised (TurboFan) in the background, which takes
// the small frames' first 20-30 runs (their count and median are printed).
// Sizes are WIDTHxHEIGHT, as `rpl bench` takes them. The fixture model is width 1/8; the
// released-size model has random weights made in the page. Per size: the first inference
// (shader compilation), the median of N, each stage (the median time of runs through it, minus
// that through the stage before: the browser cannot wait for the GPU in between), effective
// TFLOP/s at the released width, and memory (the GPU allocator's reserve, or the module's heap).
// SwiftShader emulates the GPU on the CPU: the released model at 256x128 takes minutes there.
import { copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ROOT, startServer, launchBrowser, convertedFixtureModel } from './harness.mjs';

const argv = process.argv.slice(2);
const option = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const webgpu = !argv.includes('--cpu');
const dtype = option('--dtype', 'f32');
const runs = Math.max(1, Number(option('--runs', 3)) || 3);
const sizes = (list) => list.split(',').map((s) => s.split('x').map(Number)).map(([width, height]) => ({ width, height }));
const fixtureSizes = sizes(option('--fixture-sizes', '512x256'));
const releasedSizes = argv.includes('--skip-released') ? [] : sizes(option('--released-sizes', '128x64'));
const jsonFile = option('--json', null);
const peers = { fixture: option('--peer', null), released: option('--peer-released', null) };
const peerRuntime = option('--peer-runtime', join(ROOT, 'node_modules', 'onnxruntime-web', 'dist'));
// 0: every core the browser reports.
const threadCounts = option('--threads', '0').split(',').map((t) => Math.max(0, Math.floor(Number(t)) || 0));
const convolutions = webgpu ? option('--conv', 'direct').split(',') : [null];
const rounds = Math.max(1, Math.floor(Number(option('--rounds', 1))) || 1);
const warmUpMs = 1e3 * Math.max(0, Number(option('--warm-up', 2)) || 0);

// The peer's files under the served folder: ONNX Runtime Web's module and wasm, and the ONNX
// files (linked, not copied: the released one is 672 MB). Returns their URLs.
function servePeer() {
  if (!peers.fixture && !peers.released) return null;
  const files = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];
  // The peer's page: nothing of ours, served cross-origin isolated like ours.
  if (!files.every((f) => existsSync(join(peerRuntime, f)))) {
    throw new Error(`--peer needs onnxruntime-web's dist/ folder (${peerRuntime} lacks ${files.join(', ')}): npm install onnxruntime-web, then --peer-runtime DIR`);
  }
  const dir = join(ROOT, 'target', 'peer');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of files) copyFileSync(join(peerRuntime, f), join(dir, f));
  writeFileSync(join(dir, 'peer.html'), '<!doctype html><meta charset="utf-8"><title>ONNX Runtime Web</title>\n');
  const urls = {};
  for (const [kind, file] of Object.entries(peers)) {
    if (!file) continue;
    symlinkSync(resolve(file), join(dir, `${kind}.onnx`));
    urls[kind] = `/target/peer/${kind}.onnx`;
  }
  return urls;
}
const peerUrls = servePeer();

const STAGES = ['trunk', 'aspp', 'residual block', 'decoder', 'score'];
// The released network's cost of one 512x1024 frame (as `rpl bench`); it grows with the pixels.
const RELEASED_TFLOP_AT_512X1024 = 3.76;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const server = await startServer();
const modelUrl = convertedFixtureModel();
const browser = await launchBrowser({ webgpu });
const rows = [];
const report = { rounds, runs: [], summary: [] };
// Every timed configuration of every round: { round, key, config, threads, ours: [ms], peer: [ms] | null }.
const measured = [];

// Our page for one round and one configuration (a thread count, or a convolution choice on
// WebGPU): every size of both models. Returns the thread count the page ran on (null on WebGPU).
async function benchPage(round, requestedThreads, convolution) {
  const page = await browser.context.newPage();
  const sizesReport = [];
  const pageStarted = Date.now();
  // Without --cpu, WebGPU even on a software adapter (which the page would pass over).
  const threadsQuery = requestedThreads ? `&threads=${requestedThreads}` : '';
  const convQuery = convolution ? `&conv=${convolution}` : '';
  await page.goto(`${server.url}/index.html?model=none${webgpu ? '&backend=webgpu' : ''}${dtype === 'f16' ? '&dtype=f16' : ''}${threadsQuery}${convQuery}`);
  const info = await page.evaluate(() => window.rpl.ready);
  if (convolution && info.convolution !== convolution) throw new Error(`--conv ${convolution}: the page runs ${info.convolution} convolutions`);
  const threads = info.threads ?? null;
  const config = threads ? `${threads} thread${threads > 1 ? 's' : ''}` : (info.convolution ? `${info.convolution} convolutions` : 'WebGPU');
  const where = `, ${config}${rounds > 1 ? `, round ${round}` : ''}`;
  report.runs.push({
    round, backend: info.backend, adapter: info.adapter, dtype: info.dtype, threads, convolution: info.convolution ?? null,
    fallbackReason: info.fallbackReason ?? null, sizes: sizesReport,
  });
  console.log(`round ${round}: backend: ${info.backend}, adapter: ${info.adapter}, ${info.dtype}` +
    `${info.fallbackReason ? ` (${info.fallbackReason})` : ''}${info.threadsReason ? ` (one thread: ${info.threadsReason})` : ''}` +
    `${info.halfPrecisionError ? ` (float32: ${info.halfPrecisionError})` : ''}`);
  rows.push([`wasm load (fetch + compile + instantiate${threads > 1 ? ' + thread pool' : ''})${where}`, `${info.wasmMs.toFixed(0)} ms`]);
  rows.push([`page open to backend ready${where}`, `${Date.now() - pageStarted} ms`]);

  // Times `count` calls in the page on one synthetic image: `segment` (what a user waits for),
  // or `runThrough` a stage. Returns the Worker's replies ({ms, ...}).
  // With `warmUpMs` (0 or more), one run first, then runs for that long, those runs' times
  // coming first in the replies.
  const time = (op, { width, height }, count, stage = null, warmUpMs = null) => page.evaluate(async ([op, width, height, count, stage, warmUpMs]) => {
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) >>> 24;
    const image = new ImageData(pixels, width, height);
    const { session } = window.rpl;
    const times = [];
    const once = async () => {
      const { ms, convolutions } = await (op === 'segment' ? session.segment(image) : session.runThrough(image, stage));
      times.push({ ms, convolutions });
    };
    if (warmUpMs !== null) {
      await once();
      for (const started = performance.now(); performance.now() - started < warmUpMs;) await once();
    }
    for (let i = 0; i < count; i++) await once();
    return times;
  }, [op, width, height, count, stage, warmUpMs]);

  const measure = async (model, released, size) => {
    const label = `${model} ${size.width}x${size.height}${where}`;
    const all = (await time('segment', size, runs, null, warmUpMs)).map((r) => r.ms);
    const [first, ...warmUp] = all.slice(0, all.length - runs);
    const rest = all.slice(all.length - runs);
    const through = [];
    let paths = null; // convolutions run each way in one frame
    for (const stage of STAGES) {
      const replies = await time('runThrough', size, runs, stage);
      through.push(median(replies.map((r) => r.ms)));
      paths = replies[0].convolutions;
    }
    const stages = Object.fromEntries(STAGES.map((s, i) => [s, Math.max(0, through[i] - (i ? through[i - 1] : 0))]));
    const medianMs = median(rest);
    const tflop = RELEASED_TFLOP_AT_512X1024 * (size.width * size.height) / (512 * 1024);
    const memory = (await page.evaluate(() => window.rpl.session.memory()));
    const memoryBytes = memory.deviceBytesReserved ?? memory.wasmBytes;
    const entry = {
      model, size: [size.height, size.width], first_ms: first, warm_up_ms: warmUp, median_ms: medianMs, runs_ms: rest, stages_ms: stages,
      tflop_per_s: released ? tflop / (medianMs / 1e3) : null, memory_bytes: memoryBytes, convolutions: paths,
    };
    sizesReport.push(entry);
    measured.push({ round, key: `${model} ${size.width}x${size.height}`, model, released, size, config, threads, ours: rest, peer: null });
    rows.push([`${label}: first inference (shader compilation)`, `${first.toFixed(0)} ms`]);
    if (warmUp.length) rows.push([`${label}: warm-up, ${warmUp.length} runs in ${warmUpMs / 1e3} s (median)`, `${median(warmUp).toFixed(0)} ms`]);
    rows.push([`${label}: steady state, median of ${runs}`, `${medianMs.toFixed(0)} ms` +
      (entry.tflop_per_s === null ? '' : ` (${entry.tflop_per_s.toPrecision(3)} TFLOP/s)`)]);
    rows.push([`${label}: convolutions per frame`, Object.entries(paths).filter(([, n]) => n).map(([path, n]) => `${n} ${path}`).join(', ')]);
    rows.push([`${label}: stages (median ms)`, STAGES.map((s) => `${s} ${stages[s].toFixed(0)}`).join(', ')]);
    rows.push([`${label}: memory`, `${(memoryBytes / 2 ** 20).toFixed(0)} MiB ${memory.deviceBytesReserved === undefined ? 'module heap' : 'GPU allocator reserve'}`]);
    console.log(`${label}: ${all.map((t) => t.toFixed(0)).join(', ')} ms; through each stage ${through.map((t) => t.toFixed(0)).join(', ')} ms`);
  };

  const loaded = await page.evaluate(async (url) => {
    const bytes = await (await fetch(url)).arrayBuffer();
    return window.rpl.session.loadWeights('rpl_w8.safetensors', bytes);
  }, modelUrl);
  rows.push([`fixture weights load (10.6 MB safetensors)${where}`, `${loaded.ms.toFixed(0)} ms`]);
  for (const size of fixtureSizes) await measure('fixture model (width 1/8)', false, size);

  if (releasedSizes.length) {
    const random = await page.evaluate(() => window.rpl.session.loadRandomWeights(1));
    rows.push([`released-size model: random weights made${where}`, `${random.ms.toFixed(0)} ms`]);
    for (const size of releasedSizes) await measure('released-size model', true, size);
  }
  await page.close();
  return { threads, config };
}

// ONNX Runtime Web's wasm provider in a page of its own, on `threads` threads, on every size
// this round's page of ours just ran with that configuration (a random normalised input, logits only).
async function peerPage(round, threads, config) {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/target/peer/peer.html`);
  if (threads > 1 && !(await page.evaluate(() => crossOriginIsolated))) throw new Error('the peer page is not cross-origin isolated: ONNX Runtime Web would run on one thread');
  for (const entry of measured.filter((m) => m.round === round && m.config === config)) {
    const url = peerUrls[entry.released ? 'released' : 'fixture'];
    if (!url) continue;
    const { width, height } = entry.size;
    entry.peer = await page.evaluate(async ([url, width, height, count, threads, warmUpMs]) => {
      const ort = await import('/target/peer/ort.wasm.min.mjs');
      ort.env.wasm.numThreads = threads;
      ort.env.wasm.wasmPaths = '/target/peer/';
      const session = await ort.InferenceSession.create(url, { executionProviders: ['wasm'] });
      const data = new Float32Array(3 * width * height);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) >>> 0) / 2 ** 31 - 1;
      const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, [1, 3, height, width]) };
      const run = async () => {
        const started = performance.now();
        await session.run(feeds);
        return performance.now() - started;
      };
      const first = await run();
      const warmUp = [];
      for (const started = performance.now(); performance.now() - started < warmUpMs;) warmUp.push(await run());
      const times = [];
      for (let i = 0; i < count; i++) times.push(await run());
      await session.release();
      return { version: ort.env.versions?.web ?? '?', threads, first_ms: first, warm_up_ms: warmUp, runs_ms: times };
    }, [url, width, height, runs, threads, warmUpMs]);
    console.log(`${entry.key}, ${config}${rounds > 1 ? `, round ${round}` : ''}: ONNX Runtime Web ${entry.peer.version} ` +
      `${entry.peer.runs_ms.map((t) => t.toFixed(0)).join(', ')} ms (first ${entry.peer.first_ms.toFixed(0)}` +
      `${entry.peer.warm_up_ms.length ? `, warm-up ${entry.peer.warm_up_ms.length} runs, median ${median(entry.peer.warm_up_ms).toFixed(0)}` : ''})`);
  }
  await page.close();
}

try {
  const configs = threadCounts.flatMap((threads) => convolutions.map((convolution) => [threads, convolution]));
  for (let round = 1; round <= rounds; round++) {
    for (const [threads, convolution] of round % 2 ? configs : [...configs].reverse()) {
      const ran = await benchPage(round, threads, convolution);
      if (peerUrls) await peerPage(round, ran.threads ?? 1, ran.config);
    }
  }
} finally {
  await browser.close();
  server.close();
}

// The summary: per model, size and configuration, every round's runs pooled.
const ratio = (a, b) => (a / b).toFixed(2);
const summary = [];
for (const key of [...new Set(measured.map((m) => m.key))]) {
  const ofKey = measured.filter((m) => m.key === key);
  const ofConfig = (config) => ofKey.filter((m) => m.config === config);
  const baseline = webgpu ? 'direct convolutions' : '1 thread';
  const base = ofConfig(baseline);
  for (const config of [...new Set(ofKey.map((m) => m.config))]) {
    const mine = ofConfig(config);
    const ours = median(mine.flatMap((m) => m.ours));
    const line = { key, config, runs: mine.reduce((n, m) => n + m.ours.length, 0), ours_ms: ours };
    const peered = mine.filter((m) => m.peer);
    if (peered.length) {
      line.peer_ms = median(peered.flatMap((m) => m.peer.runs_ms));
      line.peer_version = peered[0].peer.version;
      line.ratio = ours / line.peer_ms;
      line.ratio_per_round = peered.map((m) => median(m.ours) / median(m.peer.runs_ms));
    }
    if (base.length && config !== baseline) {
      line.against = baseline;
      line.speed_up = median(base.flatMap((m) => m.ours)) / ours;
      line.speed_up_per_round = mine.map((m) => {
        const same = base.find((b) => b.round === m.round);
        return same ? median(same.ours) / median(m.ours) : null;
      }).filter((x) => x !== null);
    }
    summary.push(line);
  }
}
report.summary = summary;

console.log(`\n| ${webgpu ? 'WebGPU' : 'CPU fallback'} in headless Chromium | time |\n|---|---|`);
for (const [what, value] of rows) console.log(`| ${what} | ${value} |`);
const against = webgpu ? 'time / direct convolutions\'' : 'speed-up over 1 thread';
console.log(`\nSummary: medians of every round's runs (${rounds} round${rounds > 1 ? 's' : ''} of ${runs} runs after ${warmUpMs / 1e3} s of warm-up); per round in brackets`);
console.log(`| model, size | ${webgpu ? 'convolutions' : 'threads'} | ours | ONNX Runtime Web wasm, logits only | ours / theirs | ${against} |\n|---|---|---|---|---|---|`);
for (const l of summary) {
  const peer = l.peer_ms === undefined ? ['-', '-'] : [`${l.peer_ms.toFixed(0)} ms`, `${l.ratio.toFixed(2)} (${l.ratio_per_round.map((r) => r.toFixed(2)).join(', ')})`];
  const gain = l.speed_up === undefined ? '-' : webgpu
    ? `${ratio(1, l.speed_up)} (${l.speed_up_per_round.map((s) => ratio(1, s)).join(', ')})`
    : `${l.speed_up.toFixed(2)}x (${l.speed_up_per_round.map((s) => `${s.toFixed(2)}x`).join(', ')})`;
  console.log(`| ${l.key} | ${l.config} | ${l.ours_ms.toFixed(0)} ms | ${peer[0]} | ${peer[1]} | ${gain} |`);
}
if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
