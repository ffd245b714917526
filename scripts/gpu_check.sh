#!/usr/bin/env bash
# The one prepared check for a GPU machine, in under 8 minutes: the environment (env.txt), the
# GPU-only tests (gpu_tests.txt), then `python -m lm1b.bench preset=full` (bench.txt and
# bench/bench.json): the device's matmul and copy ceilings, then every variant at paper size
# with words/sec, the forward / backward / optimizer breakdown, peak memory and TFLOP/s.
# bench.json is rewritten after every stage, so a timeout keeps what was already measured.
#
#   scripts/gpu_check.sh [bench overrides, e.g. 'variants=[biglstm,glstm_k8]']
#   env: OUT (default outputs/gpu_check/<UTC time>), PRESET (full; tiny for a CPU smoke test),
#        BENCH_TIMEOUT (300 s), TESTS_TIMEOUT (120 s), PYTHON (see below)
# Exits non-zero only when the bench wrote no bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}
PRESET=${PRESET:-full}
mkdir -p "$OUT"

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

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: ${HOSTNAME:-?}, python: $PYTHON"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L || true
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    fi
    "$PYTHON" -c 'import platform, torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version() if cuda else None}, GPUs {torch.cuda.device_count()}")'
} 2>&1 | tee "$OUT/env.txt"

if "$PYTHON" -c 'import pytest' 2>/dev/null; then
    timeout -k 5 "${TESTS_TIMEOUT:-120}" "$PYTHON" -m pytest -v -m gpu -p no:cacheprovider \
        --continue-on-collection-errors tests/ 2>&1 | tee "$OUT/gpu_tests.txt" ||
        echo "GPU tests: exit status $? (not fatal)"
else
    echo "pytest is not installed: GPU tests skipped" | tee "$OUT/gpu_tests.txt"
fi

timeout -k 5 "${BENCH_TIMEOUT:-300}" "$PYTHON" -m lm1b.bench "preset=$PRESET" \
    "hydra.run.dir=$OUT/bench" hydra.output_subdir=null "$@" 2>&1 | tee "$OUT/bench.txt" ||
    echo "bench: exit status $? (124: timed out; bench.json keeps what was measured)"

echo "files in $OUT: env.txt gpu_tests.txt bench.txt bench/bench.json bench/bench.log"
[[ -f $OUT/bench/bench.json ]] || { echo "no bench.json: the bench measured nothing" >&2; exit 1; }
