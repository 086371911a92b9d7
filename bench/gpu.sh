#!/usr/bin/env bash
# The GPU benchmark in one command, for the first machine with a real GPU (issue 27). Nothing is
# built there: the command-line binaries are built here, and the GPU machine only runs them.
#
#   bench/gpu.sh build      here: three release binaries of `rpl` (burn's convolution kernels as
#                           they are; with burn's autotune; with autotune and the `vulkan` feature,
#                           SPIR-V kernels whose candidates include cooperative-matrix ones), stripped
#                           and xz-compressed into target/gpu-bench/bin/ (9.4, 10 and 12 MiB; 8
#                           minutes for the three on 2 cores where burn's crates had been built)
#   bench/gpu.sh run        there: the released width at 512x256, 1024x512 and 2048x1024, float32
#                           and float16, each convolution choice (tiles, staged, implicit, products, direct),
#                           then each binary of BINARIES in turn; one table, with
#                           the ratio to the paper's PyTorch code on an H200 (issue 27's figures),
#                           and the convolutions by kind (`rpl bench --layers`) at 1024x512
#   bench/gpu.sh dry-run    here, on lavapipe: the same table at small sizes (width 1/8)
#
# `run` stops starting new measurements once its time budget is spent (BUDGET_S, default 420 s,
# so that one call stays well under the device's 10-minute limit): the rows are in order of
# importance, and each prints as soon as it is measured. BINARIES (default "rpl rpl-vulkan
# rpl-autotune") chooses the binaries and their order.
#
# The device tool carries the working tree (about 50 MiB of tracked files) and the carried paths,
# 64 MiB in all: one binary a call (each 9-12 MiB packed), e.g. `carry:
# ["target/gpu-bench/bin/rpl.xz"]` with `BINARIES=rpl bench/gpu.sh run`, then the next. The
# binaries hold burn's wgpu backend only (no CPU backends), packed with `xz -9e`, to fit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/gpu-bench/bin
# Where `run` unpacks them (python3's lzma: no xz needed there).
RUN=target/gpu-bench/run
say() { printf '[gpu.sh] %s\n' "$*" >&2; }
die() { printf '[gpu.sh] error: %s\n' "$*" >&2; exit 1; }

# The paper's code (PyTorch eager, median of 5) on an H200, ms per frame: float32, and float16
# autocast against our float16.
pytorch_ms() {
  case "$1:$2" in
    f32:512x256) echo 36.3 ;; f32:1024x512) echo 130.8 ;; f32:2048x1024) echo 506 ;;
    f16:512x256) echo 11.1 ;; f16:1024x512) echo 15.0 ;; f16:2048x1024) echo 49.6 ;;
    *) echo - ;;
  esac
}

cmd_build() {
  mkdir -p "$BIN"
  # One target folder for all: they differ only in features.
  local name features
  rm -f "$BIN"/*
  for name in rpl rpl-autotune rpl-vulkan; do
    case "$name" in rpl) features=() ;; rpl-autotune) features=(autotune) ;; rpl-vulkan) features=(vulkan autotune) ;; esac
    # The GPU backend and what the command line needs (train: it links the trainer), threads as
    # the default build has it (the GPU crates' features stay those of the other builds).
    features=(--no-default-features --features "$(IFS=,; echo "wgpu,cli,train,threads${features[*]:+,${features[*]}}")")
    say "cargo build --release ${features[*]} ($name)"
    cargo build --release --locked --bin rpl "${features[@]}" --target-dir target/gpu-bench
    strip -o "target/gpu-bench/$name" target/gpu-bench/release/rpl
    xz -T0 -9e -c "target/gpu-bench/$name" > "$BIN/$name.xz"
    say "$BIN/$name.xz: $(du -h "$BIN/$name.xz" | cut -f1)"
  done
  say "$(du -ch "$BIN"/*.xz | tail -n1 | cut -f1) in $BIN (the device tool carries at most 64 MiB)"
}

# The binaries carried here, unpacked into $RUN.
unpack() {
  local name
  mkdir -p "$RUN"
  for name in rpl rpl-autotune rpl-vulkan; do
    [ -f "$BIN/$name.xz" ] || continue
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as packed, open(sys.argv[2], "wb") as out: shutil.copyfileobj(packed, out)' "$BIN/$name.xz" "$RUN/$name"
    chmod +x "$RUN/$name"
  done
}

# One row: binary, dtype, convolution choice, size; with `layers`, the convolutions by kind under
# it. Prints the row or why there is none.
measure() {
  local binary=$1 dtype=$2 conv=$3 size=$4 width=$5 reps=$6 left=$7 layers=$8
  local json out label
  json=$(mktemp)
  label="$(basename "$binary") $dtype $conv"
  local status=0
  out=$(timeout "$left" "$binary" bench --backend wgpu --width-divisor "$width" --dtype "$dtype" \
    --gpu-convolution "$conv" --sizes "$size" --reps "$reps" --json "$json" $layers 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    local why="failed: $(printf '%s' "$out" | tail -n1 | cut -c1-120)"
    [ "$status" -eq 124 ] && why="stopped after ${left} s: the budget is spent"
    printf '%-24s %-10s %s\n' "$label" "$size" "$why"
    rm -f "$json"
    return
  fi
  python3 - "$json" "$label" "$size" "$(pytorch_ms "$dtype" "$size")" "$width" <<'PY'
import json, sys
path, label, size, pytorch, width = sys.argv[1:]
row = json.load(open(path))["sizes"][0]
median = row["median_ms"]
tflops = "-" if row["tflop_per_s"] is None else f'{row["tflop_per_s"]:.2f}'
ratio = f"{median / float(pytorch):.1f}x" if pytorch != "-" and width == "1" else "-"
stages = ", ".join(f"{k} {v:.0f}" for k, v in row["stages_ms"].items())
print(f'{label:<24} {size:<10} {row["first_ms"]:>10.1f} {median:>10.1f} {tflops:>8} {row["memory_bytes"] / 2**30:>7.2f} {pytorch:>8} {ratio:>7}  {stages}')
layers = sorted(row.get("layers") or [], key=lambda k: -k["ms"])
if layers:
    print(f'{"":<24}   its convolutions, each waited for: {sum(k["ms"] for k in layers):.1f} ms of the frame\'s {median:.1f}')
for kind in layers:
    rate = kind["flop"] / (kind["ms"] / 1e3) / 1e9
    print(f'{"":<24}   {kind["kind"]:<18} {kind["calls"]:>3} calls {kind["ms"]:>9.1f} ms {rate:>9.1f} GFLOP/s')
PY
  rm -f "$json"
}

middle_size() {
  local list=(${1//,/ })
  echo "${list[$(( ${#list[@]} / 2 ))]}"
}

# The table: every configuration at every size, in order, while the budget lasts.
table() {
  local width=$1 sizes=$2 budget=$3
  local start=$SECONDS binary dtype conv size reps left
  command -v python3 >/dev/null || die "python3 is missing (it unpacks the binaries and reads each measurement's JSON)"
  [ -f "$BIN/rpl.xz" ] || die "no $BIN/rpl.xz: run bench/gpu.sh build first (here, not on the GPU machine)"
  unpack
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/[gpu.sh] GPU: /' >&2
  "$RUN/rpl" --version >&2
  printf '%-24s %-10s %10s %10s %8s %7s %8s %7s  %s\n' configuration size "first ms" "median ms" TFLOP/s "mem GB" "PyTorch" ratio "stages (median ms)"
  for binary in ${BINARIES:-rpl rpl-vulkan rpl-autotune}; do
    binary=$RUN/$binary
    [ -x "$binary" ] || { say "no $binary: skipped"; continue; }
    for dtype in f32 f16; do
      # The kernels likeliest to be fast first; burn's direct kernel, measured already (5179 ms a
      # 1024x512 frame on an H100), last, where the budget may run out.
      for conv in tiles staged implicit products direct; do
        for size in ${sizes//,/ }; do
          left=$((budget - (SECONDS - start)))
          if [ "$left" -le 10 ]; then
            printf '%-24s %-10s %s\n' "$(basename "$binary") $dtype $conv" "$size" "skipped: the ${budget} s budget is spent"
            continue
          fi
          # Fewer repetitions on the large frames: each is run whole and stage by stage.
          case "$size" in 2048x1024) reps=2 ;; 1024x512) reps=3 ;; *) reps=5 ;; esac
          # Each convolution kind timed on the middle size of the plain binary's float32 rows.
          layers=""
          [ "$binary" = "$RUN/rpl" ] && [ "$dtype" = f32 ] && [ "$size" = "$(middle_size "$sizes")" ] && layers=--layers
          measure "$binary" "$dtype" "$conv" "$size" "$width" "$reps" "$left" "$layers"
        done
      done
    done
  done
  say "done in $((SECONDS - start)) s"
}

case "${1:-}" in
  build) cmd_build ;;
  run) table 1 "${SIZES:-512x256,1024x512,2048x1024}" "${BUDGET_S:-420}" ;;
  dry-run) table 8 "${SIZES:-64x32,128x64}" "${BUDGET_S:-300}" ;;
  *) echo "usage: $0 build|run|dry-run (SIZES=WxH,..., BUDGET_S=seconds and BINARIES="rpl ..." override the defaults)" >&2; exit 2 ;;
esac
