#!/usr/bin/env bash
# The packages a bare GPU machine of this workplace lacks (hydra-core, omegaconf and antlr4's
# Python runtime: its image has torch, PyYAML, pytest, tensorboard, tqdm and sentencepiece), as
# pure-Python wheels in .whl/ (git-ignored), which scripts/gpu_check.sh installs there beside
# its torch. Run it here, where PyPI is reachable; then carry .whl to the GPU machine.
#   scripts/gpu_wheels.sh     (PYTHON: the interpreter whose versions to match, default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
# The versions installed here when there are any (what the tests ran with), else known-good ones.
specs=$("$PYTHON" - <<'PY'
from importlib.metadata import PackageNotFoundError, version
for name, default in [("hydra-core", "1.3.2"), ("omegaconf", "2.3.0"),
                      ("antlr4-python3-runtime", "4.9.3")]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"{name}=={default}")
PY
)
rm -rf .whl && mkdir .whl
# shellcheck disable=SC2086 # one spec per word
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir .whl $specs
ls .whl
