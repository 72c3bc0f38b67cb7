#!/usr/bin/env bash
# The GPU checks and benchmarks in one call, for a lent GPU machine that has no network (BENCHMARKS.md, 'GPU').
#
#   benchmarks/gpu.sh OUT_DIR          on the GPU machine: install offline, print the device, run the tests
#                                      marked `gpu`, then the benchmarks; JSON lines and a summary to OUT_DIR
#   benchmarks/gpu.sh --cpu OUT_DIR    the same script at tiny sizes on a CPU (.ci/run runs it: it cannot rot)
#   benchmarks/gpu.sh --wheels [DIR]   beforehand, on a machine with PyPI: the pure-Python wheels the GPU
#                                      machine lacks (default .whl/, git-ignored), for Python 3.12
#
# OUT_DIR gets results.jsonl (every `tinycats bench` line, plus the device and test lines), summary.md
# (the figures against the targets), tests.log and log.txt: four files, as the device tool brings back.
# Each part runs under its own timeout, so one hang loses only that part. Wheels are read from
# $TINYCATS_WHEELS (default .whl/ in the repository) and installed into a temporary folder.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
# The packages the GPU image lacks (ml-collections) or may hold at other versions, at the versions this project
# resolves with (pyproject.toml); their own requirements are on the image. JAX stays the image's (CUDA 13).
WHEELS=(ml-collections==1.1.0 flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.11.36)

if [ "${1:-}" = "--wheels" ]; then
  dir="${2:-.whl}"
  mkdir -p "$dir"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" "${WHEELS[@]}" || exit 2
  du -sh "$dir"
  exit 0
fi

MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: benchmarks/gpu.sh [--cpu] OUT_DIR | --wheels [DIR]" >&2
  exit 2
fi
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
RESULTS="$OUT/results.jsonl"
LOG="$OUT/log.txt"
: >"$RESULTS"
: >"$LOG"
FAILED=0
BUDGET="${TINYCATS_GPU_BUDGET:-480}"  # Seconds for the whole script: the issue's 8 minutes.
DEADLINE=$((SECONDS + BUDGET))
WORK="$(mktemp -d -t tinycats-gpu-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export TINYCATS_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
# JAX takes 45% of the GPU's memory, not 75%: PyTorch's baseline runs in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"

say() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }
# part NAME SECONDS COMMAND...: one part under its timeout (cut to what is left of the budget), its output to
# $PART_LOG or log.txt; a failure is recorded and the script goes on.
part() {
  local name="$1" limit="$2"
  shift 2
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    FAILED=1
    say "$name SKIPPED: the ${BUDGET}s budget is spent"
    echo "{\"kind\": \"gpu_sh_part\", \"part\": \"$name\", \"rc\": null, \"skipped\": \"budget spent\"}" >>"$RESULTS"
    return 0
  fi
  say "$name"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"${PART_LOG:-$LOG}" 2>&1
  local rc=$?
  local why=$([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "timed out after ${limit}s" || echo "exit $rc")
  echo "{\"kind\": \"gpu_sh_part\", \"part\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" >>"$RESULTS"
  [ "$rc" -eq 0 ] || { FAILED=1; say "$name FAILED: $why (see log.txt)"; }
  return 0
}

# Install without a network: the carried wheels into a temporary folder, the project from this checkout.
if ! "$PY" -c 'import ml_collections, tinycats' >/dev/null 2>&1; then
  wheels="${TINYCATS_WHEELS:-$REPO/.whl}"
  say "install: $wheels/*.whl and this checkout, no network"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$wheels"/*.whl >>"$LOG" 2>&1 || say "the wheels did not install: make them with benchmarks/gpu.sh --wheels"
  export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"  # The checkout itself: `python -m tinycats`.
fi

if [ "$MODE" = cpu ]; then
  export TINYCATS_GPU_TESTS=cpu
  DTYPE=f32 RESNET=(--batch 4 --image-size 32 --steps 2 --config.model.width=8)
  DIT=(--batch 4 --image-size 32 --steps 2 --config.model.width=64 --config.model.depth=1 --config.model.heads=2)
  KERNELS=(--batch 2 --steps 2) PIPE=(--image-size 32 --batch 8 --steps 2) PEAK_N=512
  EPOCH_CONFIG=configs/cats.py:smoke PER_CLASS=12 EPOCH_BATCH=16
  EPOCH_SET=(model.width=8 data.image_size=32 data.cache_size=36)
else
  DTYPE=bf16 RESNET=(--batch 256 --image-size 224 --steps 20) DIT=(--batch 256 --image-size 128 --steps 20)
  KERNELS=(--batch 256 --steps 10) PIPE=(--image-size 224 --batch 256 --steps 10) PEAK_N=8192
  # 10 shapes x 455: the folder split's 81% for training is 3,685 images, Oxford-IIIT Pet's train split is 3,680.
  EPOCH_CONFIG=configs/cats.py:scratch PER_CLASS=455 EPOCH_BATCH=256 EPOCH_SET=()
fi

BENCH=("$PY" -m tinycats bench --results "$RESULTS")

say "device"
"$PY" - "$RESULTS" "$DTYPE" "$PEAK_N" >>"$LOG" 2>&1 <<'EOF' || say "device FAILED: JAX did not start (see log.txt)"
import importlib.metadata as md, json, sys, time
import jax, jax.numpy as jnp
results, dtype, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
versions = {}
for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections', 'numpy', 'torch', 'onnxruntime'):
  try:
    versions[name] = md.version(name)
  except md.PackageNotFoundError:
    versions[name] = None
# The device's achievable matmul rate, the peak that the train steps' FLOP utilisation is measured against.
element = jnp.bfloat16 if dtype == 'bf16' else jnp.float32
a = jnp.ones((n, n), element)
matmul = jax.jit(lambda a: a @ a)
matmul(a).block_until_ready()
start = time.perf_counter()
for _ in range(10):
  out = matmul(a)
out.block_until_ready()
tflops = 10 * 2 * n**3 / (time.perf_counter() - start) / 1e12
row = dict(kind='device', backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
           device_kind=jax.devices()[0].device_kind, matmul=f'{n}^3 {dtype}', measured_peak_tflops=tflops, **versions)
print(json.dumps(row))
open(results, 'a').write(json.dumps(row) + '\n')
open(results + '.peak', 'w').write(f'{tflops:.1f}')
EOF
[ -s "$RESULTS" ] || FAILED=1
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1
PEAK="$(cat "$RESULTS.peak" 2>/dev/null)"
rm -f "$RESULTS.peak"
PEAK_FLAG=()
[ -n "$PEAK" ] && PEAK_FLAG=(--peak-tflops "$PEAK")

PART_LOG="$OUT/tests.log" part "tests marked gpu" 180 "$PY" -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider -o addopts=""
echo "{\"kind\": \"gpu_tests\", \"summary\": \"$(tail -n 1 "$OUT/tests.log" 2>/dev/null | tr -d '"=')\"}" >>"$RESULTS"

part "ResNet18 train step, PyTorch beside it" 120 "${BENCH[@]}" --model resnet18 --dtype "$DTYPE" "${RESNET[@]}" "${PEAK_FLAG[@]}" --baseline torch
part "DiT train step, PyTorch beside it" 120 "${BENCH[@]}" --model dit --dtype "$DTYPE" "${DIT[@]}" "${PEAK_FLAG[@]}" --baseline torch
part "kernels" 60 "${BENCH[@]}" --kernels --dtype "$DTYPE" "${KERNELS[@]}" --baseline torch
part "input pipeline" 60 "${BENCH[@]}" --pipeline "${PIPE[@]}"
part "shape pictures for a Pet-sized epoch" 60 "$PY" -m tinycats.data.shapes "$WORK/shapes" --per-class "$PER_CLASS" --size 64
overrides=()
for s in data.source=folder "data.folder=$WORK/shapes" "train.batch_size=$EPOCH_BATCH" "${EPOCH_SET[@]}"; do
  overrides+=("--config.$s")
done
part "one epoch, the loop's feed and step" 90 "${BENCH[@]}" --epoch "$EPOCH_CONFIG" "${overrides[@]}"
part "two epochs through tinycats train" 120 "$PY" -m tinycats train --config "$EPOCH_CONFIG" --workdir "$WORK/run" \
  "${overrides[@]}" --config.train.epochs=2 --config.train.steps=0 --config.train.eval_every=0 --config.train.patience=0
[ -f "$WORK/run/summary.json" ] && "$PY" -c 'import json,sys; print(json.dumps({"kind": "train_run", **json.load(open(sys.argv[1]))}))' \
  "$WORK/run/summary.json" >>"$RESULTS"
[ -f "$WORK/run/summary.json" ] || FAILED=1

say "summary"
"$PY" "$REPO/benchmarks/gpu_summary.py" "$RESULTS" "$MODE" | tee "$OUT/summary.md"
exit "$FAILED"  # 1 when a part or a test failed: the figures of the others are still in OUT_DIR.
