"""`python -m lm1b.bench`: the tiny preset end to end (what `make bench PRESET=tiny` runs), its
bench.json, the per-pass ratio rule, bench.json rewritten stage by stage, failing variants,
the step-time breakdown, the copy ceiling and the `overrides` check."""

from __future__ import annotations

import copy
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import weakref
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lm1b.benchmark.session
import lm1b.commands.bench
from lm1b.atomic_files import write_json_atomically
from lm1b.benchmark.breakdown import PARTS
from lm1b.benchmark.candidates import compose_variant_config
from lm1b.benchmark.report import baseline_seconds, ratio_to_baseline
from lm1b.benchmark.summary import format_report
from lm1b.benchmark.timing import PHASES, measure_copy_bandwidth, time_phases
from lm1b.commands.bench import run_benchmark
from lm1b.config import ConfigError
from lm1b.config.bench import (
    PRESETS,
    VARIANTS,
    BenchConfig,
    resolve_preset,
    validate_bench_config,
)
from lm1b.training.hooks import StepHooks

ROOT = Path(__file__).resolve().parents[1]
RECORD_FIELDS = {
    "name", "words_per_sec", "ratio_to_biglstm", "paper_ratio", "rnn_params", "tflops",
    "peak_fraction", "memory_bytes", "flops_per_word", "pass_seconds_per_step", "breakdown_ms",
    "fast_paths", "build_seconds", "warmup_seconds", "ratio_to_cudnn", "fast_paths_engaged",
    "host_syncs_per_step", "precision",
}  # fmt: skip
CPU = torch.device("cpu")


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
    assert report["complete"] is True and report["failed"] == {}
    assert report["copy_ceiling_gbps"] > 0
    # One measurement of each ceiling before the variants are built, then one per pass.
    assert len(report["pass_ceiling_tflops"]) == len(report["pass_copy_ceiling_gbps"]) == 3
    assert report["cuda"] == torch.version.cuda and report["cudnn"] is None
    # On a CPU: no TF32, and every variant timed together in one group.
    assert report["tf32"] is None and report["memory_plan"]["groups"] == [list(VARIANTS)]
    assert report["memory_plan"]["free_bytes"] is None
    assert datetime.fromisoformat(report["date"]).utcoffset().total_seconds() == 0
    records = {r["name"]: r for r in report["variants"]}
    assert list(records) == list(VARIANTS)
    for record in records.values():
        assert set(record) >= RECORD_FIELDS
        assert record["words_per_sec"] > 0 and len(record["pass_seconds_per_step"]) == 2
        assert list(record["breakdown_ms"]) == list(PHASES)
        assert all(ms > 0 for ms in record["breakdown_ms"].values())
        # CUDA graphs on CUDA only; the fused cell (its backward) on our stacks here too.
        ours = record["model_type"] != "biglstm_cudnn"
        assert record["fast_paths"] == {"cuda_graphs": False, "fused_cell": ours}
        assert record["fast_paths_engaged"] == record["fast_paths"]
        # The accounting: every part, none negative (they are disjoint pieces of the profiled
        # step), the LSTM's parts on our stacks only (nn.LSTM is one opaque call).
        accounting = record["accounting_ms"]
        assert list(accounting) == list(PARTS) and min(accounting.values()) >= 0
        lstm_parts = accounting["cell"], accounting["window_products"], accounting["step_products"]
        assert all(ms > 0 for ms in lstm_parts) if ours else not any(lstm_parts)
        assert accounting["tables"] > 0 and accounting["optimizer"] > 0
        assert record["skipped_steps"] == 0
        assert record["host_syncs_per_step"] is None  # counted on CUDA only
        assert record["precision"] == report["precision"] == "fp32"
    # Each pass's baseline is the faster BIGLSTM: neither beats it, and in every pass one of
    # the two equals it.
    baselines = [records[name]["ratio_to_biglstm"] for name in ("biglstm", "biglstm_cudnn")]
    assert max(baselines) <= 1.0 + 1e-9
    assert records["biglstm_cudnn"]["ratio_to_cudnn"] == 1.0
    assert records["glstm_k8"]["ratio_to_cudnn"] >= records["glstm_k8"]["ratio_to_biglstm"]
    assert records["glstm_k8"]["paper_ratio"] == 1.73
    assert records["flstm_r512"]["rnn_params"] < records["biglstm"]["rnn_params"]
    lines = result.stdout.splitlines()  # Hydra's log lines come first
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    assert lines[header - 2].startswith(
        f"{report['date']} | {report['device_name']} (cpu), 1 thread | torch "
    )
    assert "copy ceiling" in lines[header - 1]
    assert lines[header].endswith("fwd ms  bwd ms  opt ms syncs")
    assert [line.split()[0] for line in lines[header + 1 : header + 8]] == list(VARIANTS)


def test_the_ratio_is_the_median_of_per_pass_ratios_to_the_faster_biglstm():
    fake = [
        SimpleNamespace(name="biglstm", seconds=[1.0, 4.0, 1.0]),
        SimpleNamespace(name="biglstm_cudnn", seconds=[2.0, 2.0, 2.0]),
        SimpleNamespace(name="glstm_k8", seconds=[0.5, 1.0, 0.25]),
    ]
    baseline = baseline_seconds(fake)
    assert baseline == [1.0, 2.0, 1.0]
    assert baseline_seconds(fake, ("biglstm_cudnn",)) == [2.0, 2.0, 2.0]
    assert ratio_to_baseline(fake[2], baseline) == 2.0  # median of 2, 2, 4
    assert ratio_to_baseline(fake[0], baseline) == 1.0  # median of 1, 0.5, 1
    assert baseline_seconds(fake[2:]) is None and ratio_to_baseline(fake[2], None) is None


def test_presets_and_their_overrides():
    cpu = resolve_preset(BenchConfig(preset="cpu", passes=3))
    assert (cpu.vocab_size, cpu.batch_size, cpu.num_steps, cpu.num_sampled) == (32768, 32, 20, 512)
    assert cpu.passes == 3 and cpu.steps_per_pass == 1 and cpu.threads == 1
    full = resolve_preset(BenchConfig(preset="full"))
    assert (full.size, full.vocab_size, full.num_sampled, full.precision, full.gpu_only) == (
        "paper", 793471, 8192, "auto", True,
    )  # fmt: skip
    assert not cpu.gpu_only and cpu.precision == PRESETS["tiny"].precision == "fp32"
    with pytest.raises(ConfigError, match="preset='huge' is invalid"):
        validate_bench_config(BenchConfig(preset="huge"))
    for variants in (["lstm"], ["glstm_k8", "glstm_k8"], []):
        with pytest.raises(ConfigError, match="variants=.*is invalid: distinct names"):
            validate_bench_config(BenchConfig(variants=variants))


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


def tiny(variants: list[str], **fields) -> BenchConfig:
    return validate_bench_config(
        BenchConfig(preset="tiny", variants=variants, ceiling_seconds=0.05, **fields)
    )


def test_bench_json_is_rewritten_after_every_stage_and_complete_only_at_the_end(
    tmp_path, monkeypatch
):
    saved = []

    def record(report, path):
        saved.append(copy.deepcopy(report))
        write_json_atomically(report, path)

    monkeypatch.setattr(lm1b.benchmark.session, "write_json_atomically", record)
    path = tmp_path / "bench.json"
    final = run_benchmark(tiny(["biglstm", "glstm_k8"]), path)
    # Ceilings, two builds, two passes, the breakdown, the accounting, the host syncs.
    assert [r["complete"] for r in saved] == [False] * 7 + [True]
    assert json.loads(path.read_text()) == final == saved[-1]
    first = saved[0]
    assert (
        first["variants"] == [] and first["ceiling_tflops"] > 0 and first["copy_ceiling_gbps"] > 0
    )
    assert [len(r["pass_ceiling_tflops"]) for r in saved] == [1, 1, 1, 2, 3, 3, 3, 3]
    assert [len(r["variants"]) for r in saved] == [0, 0, 0, 2, 2, 2, 2, 2]
    assert [len(r["variants"][0]["pass_seconds_per_step"]) for r in saved[3:]] == [1, 2, 2, 2, 2]
    assert saved[-4]["variants"][0]["breakdown_ms"] is None  # measured after the passes
    assert saved[-3]["variants"][0]["accounting_ms"] is None  # profiled after the breakdown
    assert saved[-2]["variants"][0]["accounting_ms"] is not None
    breakdown = final["variants"][1]["breakdown_ms"]
    assert list(breakdown) == list(PHASES) and min(breakdown.values()) > 0
    # The breakdown's steps, synchronised only at their phases' ends, add up to about a step.
    step_ms = 1e3 * final["variants"][1]["seconds_per_step"]
    assert 0.3 * step_ms < sum(breakdown.values()) < 3 * step_ms


def test_a_failing_variant_is_recorded_freed_and_the_others_go_on(monkeypatch):
    build = lm1b.commands.bench.build_candidate
    failed_refs = []

    def flaky_build(name, cfg, device, seed):
        if name == "glstm_k2":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        candidate = build(name, cfg, device, seed)
        if name == "biglstm":
            step = candidate.train_step

            def step_then_fail():  # two warm-up steps and pass 1 run, pass 2 fails
                if candidate.step >= 3:
                    raise RuntimeError("illegal memory access (simulated)")
                step()

            candidate.train_step = step_then_fail
            failed_refs.append(weakref.ref(candidate.model))
        return candidate

    monkeypatch.setattr(lm1b.commands.bench, "build_candidate", flaky_build)
    report = run_benchmark(tiny(["biglstm", "glstm_k2", "glstm_k8"]))
    assert report["complete"] is True
    assert report["failed"] == {
        "glstm_k2": "OutOfMemoryError: CUDA out of memory (simulated)",
        "biglstm": "RuntimeError: illegal memory access (simulated)",
    }
    # biglstm is dropped with its pass-1 time: what is left has one time per pass.
    (record,) = report["variants"]
    assert record["name"] == "glstm_k8" and len(record["pass_seconds_per_step"]) == 2
    assert record["ratio_to_biglstm"] is None and record["breakdown_ms"] is not None
    gc.collect()
    assert failed_refs[0]() is None  # nothing holds the failed variant's model any more
    printed = format_report(report)
    assert "FAILED biglstm: RuntimeError: illegal memory access (simulated)" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith("glstm_k8 ")]
    assert len(rows) == 1 and rows[0][4] == rows[0][5] == "-"  # vs BIG, vs cuDNN: no baseline


def test_a_ceiling_without_memory_left_is_skipped_and_the_variants_still_timed(monkeypatch):
    measure = lm1b.commands.bench.measure_copy_bandwidth
    calls = []

    def copy_then_out_of_memory(device, seconds):
        calls.append(seconds)
        if len(calls) > 1:  # after the variants are built
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return measure(device, seconds)

    monkeypatch.setattr(lm1b.commands.bench, "measure_copy_bandwidth", copy_then_out_of_memory)
    report = run_benchmark(tiny(["glstm_k8"]))
    assert report["complete"] is True and report["failed"] == {} and len(calls) == 3
    assert len(report["pass_copy_ceiling_gbps"]) == 1 and len(report["pass_ceiling_tflops"]) == 3
    assert len(report["variants"][0]["pass_seconds_per_step"]) == 2


def test_the_breakdown_times_each_phase_and_removes_its_hook():
    def train_step():  # a step whose phases take at least 20, 40 and 10 ms
        for phase, seconds in zip(PHASES, (0.02, 0.04, 0.01), strict=True):
            time.sleep(seconds)
            candidate.runner.hooks.on_phase(phase)

    training_hooks = StepHooks()
    candidate = SimpleNamespace(runner=SimpleNamespace(hooks=training_hooks), train_step=train_step)
    time_phases(candidate, 2, CPU)
    assert list(candidate.phase_seconds) == list(PHASES)
    for phase, least in zip(PHASES, (0.02, 0.04, 0.01), strict=True):
        assert len(candidate.phase_seconds[phase]) == 2
        assert least <= min(candidate.phase_seconds[phase]) < least + 0.5
    assert candidate.runner.hooks is training_hooks

    def failing_step():
        raise RuntimeError("boom")

    candidate.train_step = failing_step
    with pytest.raises(RuntimeError, match="boom"):
        time_phases(candidate, 1, CPU)
    assert candidate.runner.hooks is training_hooks  # the timed passes never see the clock


def test_the_copy_ceiling_is_a_bandwidth():
    gbps = measure_copy_bandwidth(CPU, 0.05)
    assert 0.1 < gbps < 10_000  # GB/s: any real machine's memory lies in between


def test_overrides_reach_every_variant_and_a_bad_one_names_the_field():
    preset = PRESETS["tiny"]
    cfg = compose_variant_config("glstm_k8", preset, "fp32", ["trainer.cuda_graphs=false"])
    assert cfg.trainer.cuda_graphs is False and cfg.model.num_groups == 8
    assert compose_variant_config("glstm_k8", preset, "fp32", []).trainer.cuda_graphs is True
    with pytest.raises(ConfigError, match=r"overrides=\['trainer.cuda_graph=false'\] is invalid"):
        compose_variant_config("biglstm", preset, "fp32", ["trainer.cuda_graph=false"])
    with pytest.raises(ConfigError, match="overrides=.*model.state_size=-1.*at least 1"):
        run_benchmark(tiny(["biglstm"], overrides=["model.state_size=-1"]))


def test_non_finite_steps_are_counted_and_flagged():
    """A variant whose steps are all skipped (no optimizer work) must not pass for a fast one."""
    report = run_benchmark(tiny(["biglstm", "glstm_k2"], overrides=["testing.nan_every_step=true"]))
    steps = report["warmup_steps"] + report["passes"] * report["steps_per_pass"]
    steps += 2 * report["breakdown_steps"]  # the phases' and the accounting's steps
    assert [r["skipped_steps"] for r in report["variants"]] == [steps, steps]
    assert "WARNING glstm_k2: " in format_report(report)
