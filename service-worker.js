// Makes the page work offline once it has been opened: the page, its scripts, the WebAssembly
// module, the bundled model and the samples are cached at install; every same-origin request
// goes to the network first (so a rebuilt page is seen at once) and to the cache when offline.
// It must sit at the site's root to control index.html.
const CACHE = 'rpl-app-v1';
const SHELL = [
  './', 'index.html', 'www/app.js', 'www/rpl-client.js', 'www/worker.js', 'www/style.css',
  'www/pkg/rpl_web.js', 'www/pkg/rpl_web_bg.wasm', 'models/rpl-demo.safetensors', 'models/samples/index.json',
];

async function precache() {
  const cache = await caches.open(CACHE);
  await cache.addAll(SHELL);
  const samples = await (await fetch('models/samples/index.json')).json();
  await cache.addAll(samples.flatMap((s) => [s.image, s.ood].map((file) => `models/samples/${file}`)));
}

self.addEventListener('install', (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (offline) {
    const cached = await cache.match(request, { ignoreSearch: true });
    if (cached) return cached;
    throw offline;
  }
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  // Only this site's own files; anything else (a model URL the user typed) is left alone.
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(networkFirst(request));
});
