#!/usr/bin/env bash
# rpl-web's commands:
#   ./build.sh test    build and run every test (installs what the tests need)
#   ./build.sh serve   build and serve the demo page on localhost
#   ./build.sh dist    build the page into dist/, a folder any static host serves
set -euo pipefail
cd "$(dirname "$0")"

# burn 0.22 needs this Rust.
RUST_MIN="1.95"

say() { printf '[build.sh] %s\n' "$*"; }
die() { printf '[build.sh] error: %s\n' "$*" >&2; exit 1; }

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust $RUST_MIN or newer from rustup.rs, then rerun."
  local have
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$RUST_MIN" "$have" | sort -V | head -n1)" != "$RUST_MIN" ]; then
    die "rustc $have is too old: burn needs $RUST_MIN or newer (rustup update)."
  fi
}

# Installs the Debian packages given, or says exactly which are missing.
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (sudo)"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing packages: ${missing[*]} (install them with your package manager)."
  fi
}

ensure_node_packages() {
  command -v npm >/dev/null || ensure_debian_packages nodejs npm
  # playwright-core drives Debian's Chromium (never a downloaded browser); binaryen brings wasm-opt;
  # typescript checks the browser API's types. npm records what it installed in node_modules.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"
    npm ci --no-audit --no-fund --silent
  fi
}

# wasm-bindgen's CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
ensure_wasm_tools() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || { say "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
  local want have
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
  # Absent on a fresh machine: with pipefail the failed pipeline would stop the script here.
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ]; then
    say "cargo install wasm-bindgen-cli --version $want (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$want" --force --quiet
  fi
}

# The threaded module's standard library must be rebuilt for WebAssembly threads (shared memory),
# which only a nightly toolchain does (-Z build-std, with its rust-src): the one installed, else
# this dated one.
NIGHTLY_PIN="nightly-2026-05-19"
ensure_nightly() {
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    NIGHTLY=nightly
  else
    NIGHTLY="$NIGHTLY_PIN"
    rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 || {
      say "rustup toolchain install $NIGHTLY (for the threaded module; once)"
      rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
    }
  fi
  rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src' || {
    say "rustup component add rust-src --toolchain $NIGHTLY (for the threaded module; once)"
    rustup component add rust-src --toolchain "$NIGHTLY"
  }
}

# wasm-bindgen, then wasm-opt (binaryen from npm: Debian's version corrupts wasm-bindgen's output),
# of cargo's module RAW into www/OUT; skipped when RAW is unchanged since the last time. -O1, not
# -O3: measured side by side (2026-12-03, 2-core Intel Xeon, Sapphire Rapids class), -O3 took 454 s and 172 s on the two modules
# against 136 s and 44 s, for larger gzipped files (4.39 and 0.96 MB against 4.04 and 0.86) and
# no faster CPU inference in the page. Further arguments go to wasm-opt.
bind_and_optimise() {
  local raw=$1 out=www/$2 stamp=www/$2/.built-from sum
  shift 2
  local level=-O1
  # The stamp names the optimisation too: a module optimised otherwise is rebuilt.
  sum="$(sha256sum "$raw" | cut -d' ' -f1) wasm-bindgen $(wasm-bindgen --version | awk '{print $2}') wasm-opt $level $*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] && [ -f "$out/rpl_web_bg.wasm" ]; then
    say "$out is up to date"
  else
    rm -rf "$out"
    wasm-bindgen --target web --no-typescript --out-dir "$out" "$raw"
    say "wasm-opt $level of $out"
    node_modules/.bin/wasm-opt "$level" --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-simd --enable-mutable-globals --enable-reference-types --enable-multivalue \
      "$@" "$out/rpl_web_bg.wasm" -o "$out/rpl_web_bg.opt.wasm"
    mv "$out/rpl_web_bg.opt.wasm" "$out/rpl_web_bg.wasm"
    echo "$sum" > "$stamp"
  fi
  say "$out/rpl_web_bg.wasm: $(du -h "$out/rpl_web_bg.wasm" | cut -f1) ($(gzip -c "$out/rpl_web_bg.wasm" | wc -c | awk '{printf "%.1f MB gzipped", $1 / 1e6}'))"
}

# The browser's two modules: www/pkg (WebGPU, and the CPU on one thread) and www/pkg-threads (the
# CPU on every core, for cross-origin isolated pages: shared memory, a pool of Web Workers).
# `build_wasm test` builds them for the browser tests: burn's crates at -O1 (TEST_QUICK_CRATES), in
# target dirs of their own so that the page's -O3 build stays cached beside them.
build_wasm() {
  local plain_dir=target threads_dir=target/threads quick=()
  if [ "${1:-}" = test ]; then
    plain_dir=target/test-wasm threads_dir=target/test-threads
    quick_config quick
  fi
  ensure_wasm_tools
  say "cargo build --target wasm32-unknown-unknown (the first build takes about 15 minutes)"
  # RUSTFLAGS in the environment replaces .cargo/config.toml's wasm flags: SIMD goes into it.
  [ -z "${RUSTFLAGS:-}" ] || export RUSTFLAGS="$RUSTFLAGS -C target-feature=+simd128"
  cargo build --release --locked --lib --target wasm32-unknown-unknown --no-default-features --features flex,wgpu \
    --target-dir "$plain_dir" "${quick[@]}"
  # wasm-opt runs on one core: the module's optimisation goes on beside the threaded one's build.
  bind_and_optimise "$plain_dir/wasm32-unknown-unknown/release/rpl_web.wasm" pkg &
  local plain=$!

  ensure_nightly
  say "cargo +$NIGHTLY build of the threaded module (CPU only; the first build takes about 6 minutes)"
  # Atomics and bulk memory, in the standard library too; the memory imported and shared (this
  # nightly's rustc does not add these linker flags for +atomics itself: without them the module
  # links with unshared memory and the pool cannot start), with the thread-local storage symbols
  # wasm-bindgen's thread start-up needs; 4 GiB of address space, as the single-threaded module has
  # (the released model's weights take 0.7 GiB).
  local link="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128$(printf -- ' -C link-arg=%s' $link)" \
    cargo "+$NIGHTLY" build --release --locked --lib --target wasm32-unknown-unknown -Z build-std=panic_abort,std \
    --no-default-features --features flex,threads --target-dir "$threads_dir" "${quick[@]}"
  bind_and_optimise "$threads_dir/wasm32-unknown-unknown/release/rpl_web.wasm" pkg-threads --enable-threads
  wait "$plain" || die "wasm-bindgen or wasm-opt of www/pkg failed (above)"
}

# The crates the native tests build at -O1: burn's own (its ndarray and flex CPU backends, the
# backend dispatch, autodiff, modules) and the GPU stack under them (shader generation, kernel
# dispatch, wgpu). Measured side by side on 2 cores (Intel Xeon, Sapphire Rapids class,
# 2026-12-03): burn-ndarray 452 s against 676 at -O3, burn-flex 308 against 496, burn-dispatch 208
# against 279, all on the build's critical path; the native tests 272 s against 236. Our kernels and
# the matrix products (gemm, matrixmultiply) stay at -O3.
TEST_QUICK_CRATES="burn-autodiff burn-backend burn-backend-extension burn-core burn-dispatch burn-einsum
  burn-flex burn-ir burn-linalg burn-ndarray burn-nn burn-optim burn-pack burn-std burn-tensor macerator
  burn-cubecl burn-wgpu cubecl cubecl-core cubecl-ir cubecl-opt cubecl-runtime cubecl-server
  cubecl-std cubecl-wgpu cubecl-monitoring cubek cubek-attention cubek-convolution cubek-interpolate cubek-matmul
  cubek-pool cubek-quant cubek-random cubek-reduce cubek-std cubek-tile pliron naga wgpu wgpu-core wgpu-hal"

# Appends to the array named $1 the cargo options that build TEST_QUICK_CRATES at -O1.
quick_config() {
  local -n options=$1
  local crate
  for crate in $TEST_QUICK_CRATES; do options+=(--config "profile.release.package.$crate.opt-level=1"); done
}

cmd_test() {
  ensure_rust
  # Native wgpu tests run on Mesa's lavapipe (software Vulkan) where there is no GPU;
  # browser tests run Debian's Chromium, whose SwiftShader provides WebGPU.
  ensure_debian_packages mesa-vulkan-drivers libvulkan1 chromium python3
  ensure_node_packages
  say "cargo test --release (a cold build of burn takes 25 to 30 minutes on 2 cores)"
  # A shorter cold build (CI's time limit) that computes the same values: optimisation never changes
  # what safe Rust computes (no fast-math, no fused multiply-add the source did not ask for). Release
  # builds of the command line and the page keep -O3 throughout.
  local quick=()
  quick_config quick
  cargo test --release --locked "${quick[@]}"
  # The `vulkan` feature compiles burn's kernels to SPIR-V on Vulkan adapters: the fixtures again,
  # on lavapipe. Its features differ, so burn's GPU crates build a second time (7 minutes cold).
  say "cargo test --features vulkan (SPIR-V kernels on lavapipe; a second build of burn's GPU crates)"
  cargo test --release --locked "${quick[@]}" --no-default-features --features vulkan --test parity -- --exact wgpu_matches_reference_outputs
  # The browser tests check the page as it is served, its modules through wasm-bindgen and wasm-opt.
  build_wasm test
  say "browser tests (headless Chromium)"
  # The test files by name: a folder argument means something else from Node 21 on.
  node --test --test-reporter=spec tests/browser/*.test.mjs
}

cmd_serve() {
  ensure_rust
  ensure_debian_packages python3
  ensure_node_packages
  build_wasm
  local port="${PORT:-8000}"
  say "serving on http://127.0.0.1:$port/ (Ctrl-C stops)"
  # serve.py sends the cross-origin isolation headers the threaded module needs.
  exec python3 serve.py "$port"
}

# The page as a folder any static host serves: index.html, the service worker and the hosts'
# header files at the top, every other file in v/HASH/ (HASH: of their contents), so that a
# redeploy changes the address of anything that changed and no cache serves an old copy.
# Options: --model FILE (bundled in place of the demo model), --out DIR (default dist),
# --as-built (package www/pkg and www/pkg-threads as they are: the browser tests).
cmd_dist() {
  local out=dist model=models/rpl-demo.safetensors build=yes
  while [ $# -gt 0 ]; do
    case "$1" in
      --model) model=${2:?--model needs a file}; shift 2 ;;
      --out) out=${2:?--out needs a folder}; shift 2 ;;
      --as-built) build=no; shift ;;
      *) die "dist takes --model FILE, --out DIR and --as-built, not $1" ;;
    esac
  done
  [ -f "$model" ] || die "no model file $model"
  # Never delete a folder this command did not write.
  if [ -e "$out" ] && ! { [ -f "$out/index.html" ] && [ -d "$out/v" ]; }; then
    die "$out exists and is not a folder ./build.sh dist wrote: choose another --out"
  fi
  ensure_node_packages
  if [ "$build" = yes ]; then
    ensure_rust
    build_wasm
  fi
  for module in pkg pkg-threads; do
    [ -f "www/$module/rpl_web_bg.wasm" ] || die "www/$module is not built: run ./build.sh dist without --as-built"
  done

  local staging hash
  staging=$(mktemp -d)
  mkdir -p "$staging/www" "$staging/models"
  cp www/*.js www/rpl.d.ts www/style.css "$staging/www/"
  cp -r www/pkg www/pkg-threads "$staging/www/"
  rm -f "$staging"/www/pkg*/.built-from
  cp "$model" "$staging/models/rpl-demo.safetensors"
  cp -r models/samples "$staging/models/"
  hash=$(cd "$staging" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
  # Precompressed copies for the hosts that serve them (Content-Encoding br or gzip).
  say "compressing the modules and scripts (brotli, gzip)"
  find "$staging" -name '*.wasm' -o -name '*.js' | xargs node --input-type=commonjs -e '
    const fs = require("fs"), zlib = require("zlib");
    for (const file of process.argv.slice(1)) {
      const bytes = fs.readFileSync(file);
      const params = { [zlib.constants.BROTLI_PARAM_QUALITY]: 9, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length };
      fs.writeFileSync(file + ".br", zlib.brotliCompressSync(bytes, { params }));
      fs.writeFileSync(file + ".gz", zlib.gzipSync(bytes, { level: 9 }));
    }' --

  rm -rf "$out"
  mkdir -p "$out/v" "$out/examples"
  mv "$staging" "$out/v/$hash"
  chmod -R a+rX "$out"
  sed "s#\"www/#\"v/$hash/www/#g" index.html > "$out/index.html"
  sed "s#^const ASSETS = '';#const ASSETS = 'v/$hash/';#; s#^const CACHE = 'rpl-app-v[0-9]*';#const CACHE = 'rpl-app-$hash';#" \
    service-worker.js > "$out/service-worker.js"
  cp examples/minimal.html "$out/examples/"
  sed "s#'\.\./www/#'../v/$hash/www/#; s#'\.\./models/#'../v/$hash/models/#" examples/minimal.js > "$out/examples/minimal.js"
  local file
  for file in index.html service-worker.js examples/minimal.js; do
    grep -q "v/$hash/" "$out/$file" || die "$file: its asset paths were not rewritten (build.sh dist is out of date with it)"
  done
  # Netlify and Cloudflare Pages read _headers, Apache .htaccess: the cross-origin isolation
  # headers (every core for the CPU path), hashed files cached for good, the rest revalidated.
  cat > "$out/_headers" <<'HEADERS'
/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  Cache-Control: no-cache
/v/*
  Cache-Control: public, max-age=31536000, immutable
HEADERS
  cat > "$out/.htaccess" <<'HTACCESS'
Header set Cross-Origin-Opener-Policy "same-origin"
Header set Cross-Origin-Embedder-Policy "require-corp"
Header set Cache-Control "no-cache"
<If "%{REQUEST_URI} =~ m#^/v/#">
  Header set Cache-Control "public, max-age=31536000, immutable"
</If>
AddType application/wasm .wasm
HTACCESS
  say "$out/ is ready ($(du -sh "$out" | cut -f1); assets in $out/v/$hash): copy it to any static host"
}

case "${1:-}" in
  test) cmd_test ;;
  serve) cmd_serve ;;
  dist) shift; cmd_dist "$@" ;;
  *) echo "usage: $0 test|serve|dist [--model FILE] [--out DIR] [--as-built]" >&2; exit 2 ;;
esac
