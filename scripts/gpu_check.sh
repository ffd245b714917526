#!/usr/bin/env bash
# The one prepared check for a GPU machine, in about 8 minutes at most (10 s + 180 s + 300 s):
# first that torch sees a CUDA device (else one line and exit 1, before anything runs: the
# bench would otherwise time the CPU), then the environment (env.txt: torch, CUDA, driver), the
# GPU-only tests (gpu_tests.txt), then `python -m lm1b.bench preset=full` (bench.txt and
# bench/bench.json): the device's matmul and copy ceilings, then every variant at paper size
# with words/sec, the forward / backward / optimizer breakdown, peak memory and TFLOP/s.
# bench.json is rewritten after every stage, so a timeout keeps what was already measured.
#
#   scripts/gpu_check.sh [bench overrides, e.g. 'variants=[biglstm,glstm_k8]']
#   env: OUT (default outputs/gpu_check/<UTC time>), PRESET (full; tiny for a smoke test),
#        BENCH_TIMEOUT (300 s), TESTS_TIMEOUT (180 s, all GPU tests), TEST_TIMEOUT (120 s, one
#        test: a first compilation of the fused cell takes tens of seconds), PYTHON (see below),
#        ALLOW_CPU=1 (run without a GPU: this script's own tests; the bench still refuses
#        preset=full on a CPU)
# Exits non-zero when torch sees no GPU (unless ALLOW_CPU=1) or the bench wrote no bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}
PRESET=${PRESET:-full}

# Python: $PYTHON if set; on a bare GPU machine given the project's wheels in .whl/ (made by
# scripts/gpu_wheels.sh where PyPI is reachable), its python3 with them installed beside its
# torch; else the project's venv, else python3.
if [[ -z ${PYTHON:-} ]]; then
    if ! python3 -c 'import hydra, omegaconf' 2>/dev/null && [[ -d .whl ]] &&
        python3 -c 'import torch' 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site
        PYTHON=python3
    elif [[ -x .venv/bin/python ]]; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1

"$PYTHON" -c 'import os, sys, torch
if not torch.cuda.is_available() and os.environ.get("ALLOW_CPU") != "1":
    sys.exit(f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device; "
             "nothing was run (ALLOW_CPU=1 runs this script on the CPU, as its tests do)")'
mkdir -p "$OUT"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: ${HOSTNAME:-?}, python: $PYTHON"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L || true
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    fi
    # The driver's CUDA version from torch (a private call, in CUDA builds only); the driver's
    # own version is nvidia-smi's driver_version above.
    "$PYTHON" -c 'import platform, torch
cuda = torch.cuda.is_available()
driver = getattr(torch._C, "_cuda_getDriverVersion", lambda: 0)() if cuda else 0
driver_cuda = f"{driver // 1000}.{driver % 1000 // 10}" if driver else None
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"driver CUDA {driver_cuda}, cuDNN {torch.backends.cudnn.version() if cuda else None}, "
      f"GPUs {torch.cuda.device_count()}")'
} 2>&1 | tee "$OUT/env.txt"

if "$PYTHON" -c 'import pytest' 2>/dev/null; then
    # A limit per test (pytest-timeout, where installed) fails a hung test and goes on to the
    # next; it covers a first compilation of the fused cell (tens of seconds).
    per_test=
    if "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
        per_test=--timeout=${TEST_TIMEOUT:-120}
    fi
    timeout -k 5 "${TESTS_TIMEOUT:-180}" "$PYTHON" -m pytest -v -m gpu -p no:cacheprovider \
        ${per_test:+"$per_test"} --continue-on-collection-errors tests/ 2>&1 |
        tee "$OUT/gpu_tests.txt" ||
        echo "GPU tests: exit status $? (not fatal)"
else
    echo "pytest is not installed: GPU tests skipped" | tee "$OUT/gpu_tests.txt"
fi

timeout -k 5 "${BENCH_TIMEOUT:-300}" "$PYTHON" -m lm1b.bench "preset=$PRESET" \
    "hydra.run.dir=$OUT/bench" hydra.output_subdir=null "$@" 2>&1 | tee "$OUT/bench.txt" ||
    echo "bench: exit status $? (124: timed out; bench.json keeps what was measured)"

echo "files in $OUT: env.txt gpu_tests.txt bench.txt bench/bench.json bench/bench.log"
[[ -f $OUT/bench/bench.json ]] || { echo "no bench.json: the bench measured nothing" >&2; exit 1; }
