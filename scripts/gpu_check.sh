#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and nothing else set up (a fresh copy of this
# repository, python3 + pip), install what is missing (CUDA torch, triton, the project's
# dependencies), write a full-size random 0.6B-Base model, run the GPU tests (graph replay ==
# eager bit for bit, batched == alone, Triton kernels vs the reference in bf16/fp16/fp32), then
# the serving benchmark (scripts/gpu_bench.py). The last line printed is one JSON object; the
# exit status is non-zero when a test failed or a goal was missed. Meant to finish in < 8 min.
#
#   scripts/gpu_check.sh                 # the real check (GPU)
#   scripts/gpu_check.sh --dry-run       # no GPU, no installs: CPU, tiny model, tiny counts
#   options: --model DIR (reuse a model dir)  --skip-install  --skip-tests  --python PY
#            any other option is passed to scripts/gpu_bench.py (e.g. --frames 100)
set -u -o pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=0
INSTALL=1
TESTS=1
MODEL=""
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-install) INSTALL=0 ;;
    --skip-tests) TESTS=0 ;;
    --model) MODEL=${2:?--model needs a directory}; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) BENCH_ARGS+=("$1") ;;
  esac
  shift
done

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" >&2; }
fail_json() {  # the one JSON line when we cannot get as far as the benchmark
  printf '{"dry_run": %s, "error": "%s", "goals_met": false, "exit_code": %s}\n' \
    "$([ $DRY = 1 ] && echo true || echo false)" "$1" "$2"
  exit "$2"
}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-240}  # seconds per pytest run (a hang must not eat the device time)
BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-300}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ $DRY = 1 ] && echo 1 || echo 8)}

if [ $DRY = 1 ]; then
  DEVICE_ARGS=(--dry-run)
  MODEL=${MODEL:-$ROOT/tests/fixtures/tiny/model}
  INSTALL=0
else
  DEVICE_ARGS=()
  command -v nvidia-smi >/dev/null && nvidia-smi -L >&2 || log "nvidia-smi not found (going on: torch decides)"
fi

# ---- 1. installs (only what is missing; unpinned torch from PyPI carries CUDA and triton)
if [ $INSTALL = 1 ]; then
  NET=0
  if timeout 60 "$PY" -m pip download --no-deps --quiet -d "$(mktemp -d)" six >/dev/null 2>&1; then NET=1; fi
  log "package index reachable: $NET"
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    [ $NET = 1 ] || fail_json "no CUDA-enabled torch installed and no package index to install one" 3
    log "installing torch (CUDA build)"
    "$PY" -m pip install --quiet torch >&2 || fail_json "pip install torch failed" 3
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
      || fail_json "torch sees no CUDA device" 3
  fi
  if ! "$PY" -c "import triton" 2>/dev/null; then
    if [ $NET = 1 ]; then log "installing triton"; "$PY" -m pip install --quiet triton >&2 || log "triton install failed (torch kernels)"; fi
  fi
  MISSING=$("$PY" - <<'EOF'
import importlib.util
mods = {"safetensors": "safetensors", "tokenizers": "tokenizers", "numpy": "numpy", "soundfile": "soundfile", "soxr": "soxr",
        "aiohttp": "aiohttp", "huggingface_hub": "huggingface-hub", "einops": "einops", "pytest": "pytest"}
print(" ".join(p for m, p in mods.items() if importlib.util.find_spec(m) is None))
EOF
)
  if [ -n "$MISSING" ]; then
    [ $NET = 1 ] || fail_json "missing packages and no package index: $MISSING" 3
    log "installing: $MISSING"
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet $MISSING >&2 || fail_json "pip install failed: $MISSING" 3
  fi
fi
"$PY" -c "import torch" 2>/dev/null || fail_json "torch is not importable" 3

# ---- 2. a full-size random model (0.6B-Base shapes)
if [ -z "$MODEL" ]; then
  MODEL=${QWEN3TTS_GPU_MODEL:-/tmp/qwen3tts-random-0.6b}
  if [ ! -f "$MODEL/model.safetensors" ]; then
    log "writing a random 0.6B-Base model to $MODEL"
    "$PY" -m qwen3tts dev random-model --preset 0.6b-base "$MODEL" >&2 || fail_json "random model failed" 4
  fi
fi

# ---- 3. the GPU tests (on a CPU they are collected and skipped)
TESTS_ARGS=()  # --skip-tests: tests_rc stays null in the JSON
if [ $TESTS = 1 ]; then
  log "GPU tests"
  R1=0
  if [ $DRY = 0 ]; then  # Triton vs reference, bf16 / fp16 / fp32 (on a CPU: the normal suite's job)
    # compiled kernels on the GPU (the test module defaults to the CPU interpreter otherwise)
    TRITON_INTERPRET=0 timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py >&2
    R1=$?
  fi
  timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_graph.py tests/test_static_batch.py >&2
  R2=$?
  [ $R2 = 5 ] && R2=0  # nothing collected for -m gpu is not a failure
  TESTS_RC=$(( R1 != 0 ? R1 : R2 ))
  log "tests exit status: $TESTS_RC"
  TESTS_ARGS=(--tests-rc "$TESTS_RC")
fi

# ---- 4. the benchmark: its JSON line is the last line of this script
log "benchmark"
timeout "$BENCH_TIMEOUT" "$PY" scripts/gpu_bench.py ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} --model "$MODEL" ${TESTS_ARGS[@]+"${TESTS_ARGS[@]}"} ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}
RC=$?
[ $RC = 124 ] && fail_json "the benchmark ran past ${BENCH_TIMEOUT} s" 1
exit $RC
