"""scripts/gpu_check.sh, the one prepared GPU check, run on the CPU at the tiny preset: it writes
the environment, the GPU tests' output and a complete bench.json under $OUT, and fails only
when the bench wrote no bench.json."""

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


def gpu_check(out: Path, preset: str, *args: str) -> subprocess.CompletedProcess:
    """The script on the CPU even where there is a GPU (its GPU tests then skip: seconds)."""
    env = {**os.environ, "OUT": str(out), "PRESET": preset, "PYTHON": sys.executable}
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
    assert f"torch {torch.__version__}" in (tmp_path / "env.txt").read_text()
    assert " deselected" in (tmp_path / "gpu_tests.txt").read_text()  # pytest ran with -m gpu
    bench_txt = (tmp_path / "bench.txt").read_text()
    assert "copy ceiling" in bench_txt and "\nglstm_k8 " in bench_txt
    assert f"files in {tmp_path}" in result.stdout


def test_it_fails_when_the_bench_wrote_no_bench_json(tmp_path):
    result = gpu_check(tmp_path, "huge")
    assert result.returncode != 0
    assert not (tmp_path / "bench" / "bench.json").exists()
    assert "preset='huge' is invalid" in (tmp_path / "bench.txt").read_text()
    assert "no bench.json" in result.stderr
