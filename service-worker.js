// Makes the page work offline once it has been opened: the page, its scripts, the WebAssembly
// module and the samples are cached at install; every same-origin request goes to the network
// first (so a rebuilt page is seen at once) and to the cache when offline. Models are left
// to the page, which keeps downloads in its own versioned cache ('rpl-models') and opened files
// in its private file system (OPFS), both emptied by "Forget cached models": one copy each.
// It also adds the cross-origin isolation headers (COOP, COEP) to this site's responses, for
// hosts that cannot send them: from the second visit on, the page may then share memory with
// the threaded module's Workers and run the CPU path on every core.
// It must sit at the site's root to control index.html.
// Where the page's scripts, modules and models sit: here, beside index.html; in a folder that
// `./build.sh dist` writes, in a directory named after their content hash ('v/<hash>/'), so that
// a redeploy changes every URL and no cache serves an old module or model.
const ASSETS = '';
const CACHE = 'rpl-app-v5';
const SHELL = ['./', 'index.html', ...[
  'www/app.js', 'www/rpl.js', 'www/worker.js', 'www/style.css', 'www/model-store.js',
  'www/pkg/rpl_web.js', 'www/pkg/rpl_web_bg.wasm', 'models/samples/index.json',
].map((path) => ASSETS + path)];
// The page's own model cache; every other cache is an older version of this worker's.
const MODEL_CACHE = 'rpl-models';
const KEPT_CACHES = [CACHE, MODEL_CACHE];

async function precache() {
  const cache = await caches.open(CACHE);
  await cache.addAll(SHELL);
  const samples = await (await fetch(`${ASSETS}models/samples/index.json`)).json();
  await cache.addAll(samples.flatMap((s) => [s.image, s.ood].map((file) => `${ASSETS}models/samples/${file}`)));
}

self.addEventListener('install', (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

async function dropOldCaches() {
  const names = await caches.keys();
  await Promise.all(names.filter((name) => !KEPT_CACHES.includes(name)).map((name) => caches.delete(name)));
  // A deployed folder's earlier bundled models (under another hashed directory) are never asked for again.
  if (!ASSETS) return;
  const [versions, current] = ['v/', ASSETS].map((path) => new URL(path, self.registration.scope).pathname);
  const models = await caches.open(MODEL_CACHE);
  for (const request of await models.keys()) {
    const path = new URL(request.url).pathname;
    if (path.startsWith(versions) && !path.startsWith(current)) await models.delete(request);
  }
}

self.addEventListener('activate', (event) => {
  event.waitUntil(dropOldCaches().then(() => self.clients.claim()));
});

// The response with the headers that make a page cross-origin isolated (what serve.py sends).
function isolated(response) {
  if (response.type === 'opaque' || response.status === 0) return response;
  const headers = new Headers(response.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return isolated(response);
  } catch (offline) {
    const cached = await cache.match(request, { ignoreSearch: true });
    if (cached) return isolated(cached);
    throw offline;
  }
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  const url = new URL(request.url);
  // Only this site's own files, and no models: a model URL the user typed, and the page's model
  // downloads, are left alone.
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.endsWith('.safetensors')) return;
  event.respondWith(networkFirst(request));
});
