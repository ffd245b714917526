"""scripts/gpu_check.sh, the one prepared GPU check, on the CPU: without a GPU it refuses in one
line before running anything; with ALLOW_CPU=1 (these tests only) at the tiny preset it writes
the environment, the GPU tests' output and a complete bench.json under $OUT; the full preset
is refused by the bench on a CPU, and the script then fails for want of a bench.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout"),
]


def gpu_check(
    out: Path, preset: str, *args: str, allow_cpu: bool = True
) -> subprocess.CompletedProcess:
    """The script on the CPU even where there is a GPU (its GPU tests then skip: seconds);
    should the bench start a paper-size run here after all, it is stopped within 30 s."""
    env = {name: value for name, value in os.environ.items() if name != "ALLOW_CPU"}
    env.update(OUT=str(out), PRESET=preset, PYTHON=sys.executable, BENCH_TIMEOUT="30")
    if allow_cpu:
        env["ALLOW_CPU"] = "1"
    return subprocess.run(
        ["scripts/gpu_check.sh", *args],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_tiny_preset_leaves_every_file_and_a_complete_bench_json(tmp_path):
    result = gpu_check(tmp_path, "tiny", "variants=[biglstm,glstm_k8]", "ceiling_seconds=0.1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert report["complete"] is True and report["preset"] == "tiny"
    assert [r["name"] for r in report["variants"]] == ["biglstm", "glstm_k8"]
    env_txt = (tmp_path / "env.txt").read_text()
    assert f"torch {torch.__version__}, CUDA {torch.version.cuda}, driver CUDA None" in env_txt
    assert " deselected" in (tmp_path / "gpu_tests.txt").read_text()  # pytest ran with -m gpu
    bench_txt = (tmp_path / "bench.txt").read_text()
    assert "copy ceiling" in bench_txt and "\nglstm_k8 " in bench_txt
    assert f"files in {tmp_path}" in result.stdout


def test_without_a_gpu_it_refuses_in_one_line_before_running_anything(tmp_path):
    out = tmp_path / "out"
    result = gpu_check(out, "tiny", allow_cpu=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device; "
        "nothing was run (ALLOW_CPU=1 runs this script on the CPU, as its tests do)\n"
    )
    assert not out.exists()  # no environment, no tests, no bench


def test_the_full_preset_on_a_cpu_is_refused_by_the_bench_and_the_script_fails(tmp_path):
    result = gpu_check(tmp_path, "full")
    assert result.returncode != 0
    assert not (tmp_path / "bench" / "bench.json").exists()
    bench_txt = (tmp_path / "bench.txt").read_text()
    assert "lm1b.bench: preset='full' is invalid: it runs on a GPU only" in bench_txt
    assert "no bench.json" in result.stderr
