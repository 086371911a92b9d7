#!/usr/bin/env bash
# rpl-web's two commands:
#   ./build.sh test    build and run every test (installs what the tests need)
#   ./build.sh serve   build and serve the demo page on localhost
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

cmd_test() {
  ensure_rust
  # Native wgpu tests run on Mesa's lavapipe (software Vulkan) where there is no GPU.
  ensure_debian_packages mesa-vulkan-drivers libvulkan1
  say "cargo test --release (a cold build of burn takes about half an hour on 2 cores)"
  cargo test --release --locked
}

cmd_serve() {
  die "the demo page is not built yet; the command line works: cargo run --release -- infer --help"
}

case "${1:-}" in
  test) cmd_test ;;
  serve) cmd_serve ;;
  *) echo "usage: $0 test|serve" >&2; exit 2 ;;
esac
