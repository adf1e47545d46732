#!/usr/bin/env bash
# GPU check: is distillbench ready and how fast is it on this machine's GPU? Writes every figure
# to OUTDIR (JSON files, a results store, gpu_check.log) and finishes in under 8 minutes on one GPU.
#
# Usage: benchmarks/gpu_check.sh OUTDIR [--cpu-smoke]
#
#   --cpu-smoke  the same steps, shrunk to run on a CPU in under 2 minutes (.ci/run runs it, so the
#                script cannot rot); its figures mean nothing.
#
# Steps (each under its own time limit; a failed step is recorded and the others still run):
#   1. environment: the device JAX sees (name printed). Where JAX has no GPU (and not --cpu-smoke),
#      install the CUDA build of the supported jax (pip install "jax[cuda12]" within the range of
#      pyproject.toml); without a network this is skipped and the check runs its reduced sizes.
#   2. RFAD step in the CIFAR-10-shaped paper setting (32x32x3, 10 ipc, 10 classes, 8 networks x 256
#      channels, 5120 targets) against the paper's 2.4 s per step, compile time apart
#      (benchmarks/bench_rfad_step.py --settings cifar) -> rfad_step.json
#   3. exact convnet3 NNGP/NTK throughput, pairs per second, float32 and float64
#      (benchmarks/bench_kernel_throughput.py) -> kernel_throughput.json
#   4. distillbench run kernel=rf-nngp loss=platt -> results.sqlite
#   5. one full small distillation with evaluation (RFAD, convnet3, digits) -> results.sqlite
#   6. the GPU-relevant tests (device defaults, compat shim, kernels and their agreement with
#      neural-tangents, float64 convolutions) -> pytest.xml
#   Then: report.json (distillbench report of results.sqlite) and summary.json (every step's
#   exit status and seconds, the device).
#
# Python: $PYTHON, else .venv/bin/python if present, else python3. Where distillbench is not
# installed, it runs from this checkout through PYTHONPATH (nothing to build). The tests that
# compare with neural-tangents need it; on a machine without network, carry its wheels in .whl/
# and the script installs them itself, with no index and no dependencies, into a private folder
# on PYTHONPATH. Prepare them here, before copying the tree:
#
#   pip download --no-deps -d .whl neural-tangents==0.6.5 frozendict   # pure-Python wheels
#   echo .whl >> .git/info/exclude                                      # keep them out of git
#
# and run on the GPU machine (jax with CUDA, flax, optax, pluggy, click, rich, scikit-learn,
# matplotlib and pytest already installed there) from the repository root:
#
#   benchmarks/gpu_check.sh "$OUT"          # about 7 minutes; figures in $OUT/summary.json
set -uo pipefail

usage() { echo "usage: benchmarks/gpu_check.sh OUTDIR [--cpu-smoke]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUTDIR=$1; shift
SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE=1 ;;
    *) echo "gpu_check: unknown option $arg (expected --cpu-smoke)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

T0=$(date +%s)
TOTAL_S=${GPU_CHECK_TOTAL_S:-450}   # the whole check stays under this (8 minutes with a margin)
# --cpu-smoke checks that every step still works; its limits are generous so a busy CI machine
# does not fail it (about 1.5 minutes on an idle 2-core CPU).
[ "$SMOKE" = 1 ] && TOTAL_S=${GPU_CHECK_TOTAL_S:-300}
export TF_CPP_MIN_LOG_LEVEL=3
export PYTHONUNBUFFERED=1

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
echo "gpu_check: $(date -u +%FT%TZ) python: $PY ($($PY -c 'import sys; print(sys.version.split()[0])'))"
[ "$SMOKE" = 1 ] && echo "gpu_check: --cpu-smoke (reduced sizes; the figures mean nothing)"

STEPS="$OUTDIR/steps.tsv"
: > "$STEPS"
# run_step NAME CAP_S CMD...: run CMD with a time limit of min(CAP_S, time left), record rc and seconds.
run_step() {
  local name=$1 cap=$2; shift 2
  local left=$(( TOTAL_S - ($(date +%s) - T0) ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped (time budget spent)"
    printf '%s\t%s\t%s\n' "$name" "skipped" 0 >> "$STEPS"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  local t=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  [ "$rc" = 124 ] && echo "== $name: timed out after ${limit} s"
  echo "== $name: exit $rc in ${dt} s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$STEPS"
}

# --- 1. environment -------------------------------------------------------------------------
if ! $PY -c "import distillbench_builtin" >/dev/null 2>&1; then
  # Not installed: run from this checkout (the built-in plugins load by module name, so no
  # installed metadata is needed), with any carried wheels (.whl/: neural-tangents, frozendict)
  # installed without index or dependencies into a private folder.
  SITE=${GPU_CHECK_SITE:-/tmp/distillbench-site}
  wheels=$(ls .whl/*.whl 2>/dev/null | grep -v '/distillbench-' || true)
  if [ -n "$wheels" ]; then
    echo "gpu_check: installing the carried wheels into $SITE (no index, no dependencies):" $wheels
    $PY -m pip install -q --no-index --no-deps --target "$SITE" $wheels || echo "gpu_check: wheel install failed"
  fi
  export PYTHONPATH="$ROOT:$ROOT/plugins:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: distillbench from the checkout $ROOT (PYTHONPATH)"
fi
DB=("$PY" -m distillbench.cli)

has_gpu() { $PY -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null; }
if [ "$SMOKE" = 0 ] && ! has_gpu; then
  JAX_RANGE=$($PY - <<'EOF' 2>/dev/null
import re, pathlib
text = pathlib.Path("pyproject.toml").read_text()
m = re.search(r'"jax(\[[^\]]*\])?\s*([<>=!~][^"]*)"', text)
print(m.group(2).strip() if m else "")
EOF
)
  echo "gpu_check: JAX sees no GPU; trying: pip install \"jax[cuda12]${JAX_RANGE}\""
  if timeout 240 $PY -m pip install -q "jax[cuda12]${JAX_RANGE}"; then
    has_gpu || echo "gpu_check: installed, but JAX still sees no GPU"
  else
    echo "gpu_check: could not install the CUDA build (no network?); continuing on what JAX has"
  fi
fi
REDUCED=$SMOKE
if ! has_gpu; then
  echo "gpu_check: NO GPU: the figures below are for the CPU, at the reduced (--cpu-smoke) sizes"
  REDUCED=1
fi
$PY - "$OUTDIR/device.json" <<'EOF'
import json, sys, importlib.metadata as m
import jax
from distillbench import devices
info = devices.current()
versions = {}
for name in ("distillbench", "jax", "jaxlib", "flax", "optax", "neural-tangents", "jax-cuda12-plugin", "jax-cuda13-plugin"):
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
cpu = "unknown CPU"
try:
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
except (OSError, StopIteration):
    pass
out = {"device": info.kind, "cpu": cpu, "platform": info.platform, "count": info.count,
       "memory_gib": (info.memory_bytes or 0) / 2**30, "memory_budget_mb_auto": devices.memory_budget_mb(info),
       "versions": versions, "devices": [str(d) for d in jax.devices()]}
print(f"DEVICE: {info.count} x {info.kind} ({info.platform}, {out['memory_gib']:.1f} GiB; host {cpu}); "
      + ", ".join(f"{k} {v}" for k, v in versions.items()))
json.dump(out, open(sys.argv[1], "w"), indent=2)
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -f "$OUTDIR/device.json" ] || { echo "gpu_check: JAX or distillbench does not import; stopping" >&2; exit 1; }

STORE="$OUTDIR/results.sqlite"
BENCH="$OUTDIR/benchmarks.sqlite"
# --- 2. RFAD step, CIFAR-10-shaped paper setting ----------------------------------------------
if [ "$REDUCED" = 1 ]; then
  run_step rfad_step 120 $PY benchmarks/bench_rfad_step.py --settings cifar-smoke --steps-paper 3 \
    --store "$BENCH" --json "$OUTDIR/rfad_step.json" --no-hand-written --no-peak
else
  run_step rfad_step 170 $PY benchmarks/bench_rfad_step.py --settings cifar --steps-paper 6 \
    --store "$BENCH" --json "$OUTDIR/rfad_step.json"
fi
# --- 3. exact kernel throughput -----------------------------------------------------------------
if [ "$REDUCED" = 1 ]; then
  run_step kernel_throughput 60 $PY benchmarks/bench_kernel_throughput.py --shapes 8x8x1 --start-n 4 \
    --max-n 8 --repeats 1 --gets ntk --dtypes float64 --json "$OUTDIR/kernel_throughput.json"
else
  run_step kernel_throughput 90 $PY benchmarks/bench_kernel_throughput.py --shapes 32x32x3,28x28x1 \
    --budget-s 70 --json "$OUTDIR/kernel_throughput.json"
fi
# --- 4. distillbench run kernel=rf-nngp loss=platt ----------------------------------------------
SMALL=()
[ "$REDUCED" = 1 ] && SMALL=(objective.steps=5 kernel.num_networks=1 kernel.width=16)
run_step run_rf_nngp 60 "${DB[@]}" run --store "$STORE" kernel=rf-nngp loss=platt "${SMALL[@]}"
# --- 5. one full small distillation with evaluation ---------------------------------------------
if [ "$REDUCED" = 1 ]; then
  run_step distill_rfad 90 "${DB[@]}" run --store "$STORE" objective=rfad kernel.arch=convnet3 \
    objective.steps=3 kernel.num_networks=1 kernel.width=16 evaluator.arch=fc1
else
  run_step distill_rfad 90 "${DB[@]}" run --store "$STORE" objective=rfad kernel.arch=convnet3 ipc=10 \
    objective.steps=300
fi
# --- 6. GPU-relevant tests ----------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  # The pure choices only (the suite, which CI runs anyway, compiles the rest).
  run_step tests 40 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py \
    -k "describe or memory_budget or chunk_cache or precision_names" --junitxml "$OUTDIR/pytest.xml"
else
  run_step tests 150 $PY -m pytest -q -p no:cacheprovider -x tests/test_devices.py tests/test_compat.py \
    tests/test_kernels.py tests/test_float64_conv.py --junitxml "$OUTDIR/pytest.xml"
fi
# --- summary ------------------------------------------------------------------------------------
"${DB[@]}" report --store "$STORE" --format json > "$OUTDIR/report.json" 2>/dev/null || true
$PY - "$OUTDIR" "$STEPS" "$(( $(date +%s) - T0 ))" "$SMOKE" "$REDUCED" <<'EOF'
import json, pathlib, sys
out, steps, total, smoke, reduced = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [line.split("\t") for line in open(steps).read().splitlines() if line]
summary = {"device": json.loads((out / "device.json").read_text()), "cpu_smoke": smoke == "1",
           "reduced_sizes": reduced == "1", "total_s": total,
           "steps": {name: {"exit": rc, "seconds": int(s)} for name, rc, s in rows}}
for name in ("rfad_step", "kernel_throughput"):
    p = out / f"{name}.json"
    if p.exists():
        summary[name] = json.loads(p.read_text())
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"gpu_check: {total} s in all on {summary['device']['device']}; steps: "
      + ", ".join(f"{n} {v['exit']}" for n, v in summary["steps"].items()))
EOF
fails=$(awk -F'\t' '$2 != "0" {print $1}' "$STEPS" | tr '\n' ' ')
if [ -n "$fails" ]; then
  echo "gpu_check: FAILED steps: $fails(see $LOG)"
  exit 1
fi
echo "gpu_check: all steps passed; figures in $OUTDIR"
