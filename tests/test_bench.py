"""`python -m lm1b.bench`: the tiny preset end to end (what `make bench PRESET=tiny` runs), its
bench.json, and the per-pass ratio rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm1b.benchmark.report import baseline_seconds, ratio_to_baseline
from lm1b.config import ConfigError
from lm1b.config.bench import VARIANTS, BenchConfig, resolve_preset, validate_bench_config

ROOT = Path(__file__).resolve().parents[1]
RECORD_FIELDS = {
    "name", "words_per_sec", "ratio_to_biglstm", "paper_ratio", "rnn_params", "tflops",
    "peak_fraction", "memory_bytes", "flops_per_word", "pass_seconds_per_step",
}  # fmt: skip


@pytest.mark.slow
def test_tiny_preset_writes_bench_json_for_every_variant(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lm1b.bench", "preset=tiny", "ceiling_seconds=0.1"]
    result = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["preset"] == "tiny" and report["passes"] == 2 and report["ceiling_tflops"] > 0
    assert len(report["pass_ceiling_tflops"]) == 2
    records = {r["name"]: r for r in report["variants"]}
    assert list(records) == list(VARIANTS)
    for record in records.values():
        assert set(record) >= RECORD_FIELDS
        assert record["words_per_sec"] > 0 and len(record["pass_seconds_per_step"]) == 2
    # Each pass's baseline is the faster BIGLSTM: neither beats it, and in every pass one of
    # the two equals it.
    baselines = [records[name]["ratio_to_biglstm"] for name in ("biglstm", "biglstm_cudnn")]
    assert max(baselines) <= 1.0 + 1e-9
    assert records["glstm_k8"]["paper_ratio"] == 1.73
    assert records["flstm_r512"]["rnn_params"] < records["biglstm"]["rnn_params"]
    lines = result.stdout.splitlines()  # Hydra's log lines come first
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    assert lines[header - 1].startswith(f"{report['device_name']} (cpu), 1 thread, torch")
    assert [line.split()[0] for line in lines[header + 1 : header + 8]] == list(VARIANTS)


def test_the_ratio_is_the_median_of_per_pass_ratios_to_the_faster_biglstm():
    fake = [
        SimpleNamespace(name="biglstm", seconds=[1.0, 4.0, 1.0]),
        SimpleNamespace(name="biglstm_cudnn", seconds=[2.0, 2.0, 2.0]),
        SimpleNamespace(name="glstm_k8", seconds=[0.5, 1.0, 0.25]),
    ]
    baseline = baseline_seconds(fake)
    assert baseline == [1.0, 2.0, 1.0]
    assert ratio_to_baseline(fake[2], baseline) == 2.0  # median of 2, 2, 4
    assert ratio_to_baseline(fake[0], baseline) == 1.0  # median of 1, 0.5, 1
    assert baseline_seconds(fake[2:]) is None and ratio_to_baseline(fake[2], None) is None


def test_presets_and_their_overrides():
    cpu = resolve_preset(BenchConfig(preset="cpu", passes=3))
    assert (cpu.vocab_size, cpu.batch_size, cpu.num_steps, cpu.num_sampled) == (32768, 32, 20, 512)
    assert cpu.passes == 3 and cpu.steps_per_pass == 1 and cpu.threads == 1
    full = resolve_preset(BenchConfig(preset="full"))
    assert (full.size, full.vocab_size, full.num_sampled, full.precision) == (
        "paper", 793471, 8192, "bf16",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="preset='huge' is invalid"):
        validate_bench_config(BenchConfig(preset="huge"))
    with pytest.raises(ConfigError, match="variants=.*is invalid"):
        validate_bench_config(BenchConfig(variants=["lstm"]))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_runs_the_command_with_the_preset():
    dry_run = subprocess.run(
        ["make", "-n", "bench", "PRESET=cpu", "ARGS=passes=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m lm1b.bench preset=cpu passes=3" in dry_run.stdout
