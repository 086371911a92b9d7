// Shared by the browser tests and the benchmark: a static server, Debian's Chromium driven
// by playwright-core, the reference fixtures, and the comparison rule of the native tests.
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = join(ROOT, 'tests', 'fixtures', 'rpl_w8');
export const FLOAT32_TOLERANCE = 1e-4;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** The project's version, from Cargo.toml. */
export const VERSION = readFileSync(join(ROOT, 'Cargo.toml'), 'utf8').match(/^version = "([^"]+)"/m)[1];

/** The source hash as build.rs documents it, recomputed by the shell's sha256sum (not our code). */
export function sourceHash() {
  const listing = 'find Cargo.toml Cargo.lock build.rs src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12';
  return execFileSync('sh', ['-c', listing], { cwd: ROOT, encoding: 'utf8' }).trim();
}

/** A file's SHA-256 (lowercase hex). */
export function sha256OfFile(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The repository served as `./build.sh serve` serves it (serve.py: cross-origin isolated, so
 * the CPU path runs on every core), or without the isolation headers (one thread). */
export async function startServer({ isolated = true } = {}) {
  const port = await freePort();
  return serve(port, [join(ROOT, 'serve.py'), String(port), '--directory', ROOT, ...(isolated ? [] : ['--no-isolation'])]);
}

/** `directory` served by Python's own static server, which sends no headers of ours. */
export async function startPlainServer(directory) {
  const port = await freePort();
  return serve(port, ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', directory]);
}

async function serve(port, args) {
  const child = spawn('python3', args, { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${url}/index.html`)).ok) return { url, close: () => child.kill() };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  child.kill();
  throw new Error('the static server did not start');
}

/** Headless Chromium, with WebGPU (SwiftShader where there is no GPU) unless webgpu is false;
 * `args`: more command-line switches. */
export async function launchBrowser({ webgpu, args: extraArgs = [] }) {
  const profile = mkdtempSync(join(tmpdir(), 'rpl-chromium-'));
  const args = [
    '--headless=new', '--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic',
    // Exact JS heap figures and a callable gc() for the memory checks.
    '--enable-precise-memory-info', '--js-flags=--expose-gc',
  ];
  if (webgpu) args.push('--enable-unsafe-webgpu');
  args.push(...extraArgs);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args, ignoreDefaultArgs: ['--headless'],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Opens `url` in `page` with the demo model held back until `beforeModel(page)` has run: what a
 * visitor does before the model is in. On a first visit or with ?offline=no (fetches through a
 * service worker bypass page.route). */
export async function openBeforeModel(page, url, beforeModel) {
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route('**/models/rpl-demo.safetensors', async (route) => {
    await held;
    await route.continue();
  });
  await page.goto(url);
  try {
    await beforeModel(page);
  } finally {
    release();
  }
}

/** Waits until the page has drawn `runs` results and its status matches `done`. */
export async function waitForRuns(page, runs, done = /Done in \d+ ms/, timeout = 180_000) {
  await page.waitForFunction(([n, source]) => window.rpl.state.runs >= n && new RegExp(source).test(document.getElementById('status').textContent),
    [runs, done.source], { timeout })
    .catch(async () => {
      const seen = await page.evaluate(() => [window.rpl.state.runs, document.getElementById('status').textContent]);
      throw new Error(`waiting for ${runs} runs and ${done}: ${seen[0]} runs, the status reads "${seen[1]}"`);
    });
}

/** Converts the fixture checkpoint with the project's own CLI; returns its path under the server root. */
export function convertedFixtureModel(f16 = false) {
  const outDir = join(ROOT, 'target', 'browser-test');
  mkdirSync(outDir, { recursive: true });
  const name = f16 ? 'rpl_w8_f16.safetensors' : 'rpl_w8.safetensors';
  const bin = process.env.RPL_BIN ?? join(ROOT, 'target', 'release', 'rpl');
  const args = ['convert', join(FIXTURES, 'rpl_w8.pth'), join(outDir, name)];
  execFileSync(bin, f16 ? [...args, '--f16'] : args);
  return `/target/browser-test/${name}`;
}

/** The tensors of a safetensors file: name -> {dtype, shape, data}. */
export function readSafetensors(path) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const dataStart = 8 + headerLength;
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const raw = bytes.buffer.slice(bytes.byteOffset + dataStart + begin, bytes.byteOffset + dataStart + end);
    const data = info.dtype === 'F32' ? new Float32Array(raw) : new Uint8Array(raw);
    tensors[name] = { dtype: info.dtype, shape: info.shape, data };
  }
  return tensors;
}

/** max |actual - expected| <= tolerance * max |expected| where the reference is finite; returns the relative error. */
export function assertClose(what, actual, expected, tolerance) {
  if (actual.length !== expected.length) throw new Error(`${what}: ${actual.length} values, the reference has ${expected.length}`);
  let scale = 0;
  for (const e of expected) if (Number.isFinite(e)) scale = Math.max(scale, Math.abs(e));
  let worst = 0;
  let at = 0;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(expected[i])) continue;
    const diff = Math.abs(actual[i] - expected[i]);
    if (!(diff <= worst)) {
      worst = Number.isNaN(diff) ? Infinity : diff;
      at = i;
    }
  }
  if (worst > tolerance * scale) {
    throw new Error(`${what}: max abs diff ${worst} at ${at} (ours ${actual[at]}, reference ${expected[at]}) exceeds ${tolerance} x ${scale}`);
  }
  return worst / scale;
}

/** Argmax over the classes of [classes, H*W] logits, or null where the top two are within margin. */
export function argmaxWithMargin(logits, classes, margin) {
  const plane = logits.length / classes;
  const out = new Array(plane);
  for (let p = 0; p < plane; p++) {
    let best = -Infinity, second = -Infinity, arg = 0;
    for (let c = 0; c < classes; c++) {
      const v = logits[c * plane + p];
      if (v > best) { second = best; best = v; arg = c; } else if (v > second) second = v;
    }
    out[p] = best - second > margin ? arg : null;
  }
  return out;
}
