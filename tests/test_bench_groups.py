"""The benchmark on a GPU too small for every variant at once (lm1b.benchmark.session): the
full preset's groups on an 80 GB H100 and a 141 GB H200 by the memory model; on the CPU, a
pretended small free memory that splits the tiny preset into groups, each group's figures in
bench.json before the next is built; the per-variant precision; the full preset refused on a
CPU; and on a GPU, a released variant's memory given back."""

from __future__ import annotations

import copy
import gc
import json
import statistics
import weakref

import pytest
import torch

import lm1b.benchmark.session
import lm1b.commands.bench
from lm1b.atomic_files import write_json_atomically
from lm1b.benchmark.candidates import build_candidate, compose_variant_config, estimated_bytes
from lm1b.benchmark.session import GIB, BenchSession, plan_groups
from lm1b.benchmark.summary import format_report
from lm1b.benchmark.timing import time_candidate, warm_up
from lm1b.commands.bench import (
    compose_variants,
    plan_variant_groups,
    run_benchmark,
    variant_precisions,
)
from lm1b.config import ConfigError
from lm1b.config.bench import PRESETS, VARIANTS, BenchConfig, resolve_preset, validate_bench_config

CUDA = torch.device("cuda")  # only named here: nothing below runs on it without a GPU
REFERENCES = ["biglstm", "biglstm_cudnn"]


def full_preset_plan(monkeypatch, free_gib: float):
    """The full preset's groups on a GPU with native bf16 and `free_gib` free, as the bench
    plans them (precision auto, the default margin)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(lm1b.commands.bench, "free_memory_bytes", lambda device: free_gib * GIB)
    cfg = validate_bench_config(BenchConfig(preset="full"))
    configs = compose_variants(cfg, resolve_preset(cfg))
    precisions = variant_precisions(configs, CUDA)
    return plan_variant_groups(cfg, configs, precisions, CUDA), precisions


def test_the_full_preset_fits_an_80_gb_h100_in_three_groups_and_a_h200_in_one(monkeypatch):
    plan, precisions = full_preset_plan(monkeypatch, free_gib=78)
    # auto: the cuDNN baseline in fp32 (TF32), our stacks in bf16.
    assert precisions == {name: "fp32" if name == "biglstm_cudnn" else "bf16" for name in VARIANTS}
    everything = sum(plan.estimated_bytes.values())
    assert everything > 78 * GIB  # all seven resident at once (the old bench) do not fit
    assert plan.groups == [
        [*REFERENCES, "flstm_r512", "glstm_k2"],
        [*REFERENCES, "glstm_k4", "glstm_k8"],
        [*REFERENCES, "hglstm_k2_k4"],
    ]
    peak = plan.peak_bytes()
    assert peak == max(sum(plan.estimated_bytes[n] for n in group) for group in plan.groups)
    assert peak + plan.margin_bytes <= 78 * GIB and plan.margin_bytes == 8 * GIB
    # Each variant is 13 to 17 GiB by the memory model (tables and their Adagrad state).
    assert all(13 * GIB < b < 17 * GIB for b in plan.estimated_bytes.values())

    plan, _ = full_preset_plan(monkeypatch, free_gib=141)
    assert plan.groups == [list(VARIANTS)]
    assert plan.peak_bytes() == everything and everything + plan.margin_bytes <= 141 * GIB


def test_variants_that_cannot_fit_beside_the_biglstms_fail_with_the_numbers():
    sizes = {"biglstm": 10 * GIB, "biglstm_cudnn": 10 * GIB, "glstm_k2": 8 * GIB}
    sizes["glstm_k8"] = 15 * GIB
    with pytest.raises(ConfigError) as error:
        plan_groups(sizes, REFERENCES, free_bytes=30 * GIB, margin_bytes=2 * GIB)
    assert str(error.value) == (
        "variants=['biglstm', 'biglstm_cudnn', 'glstm_k2', 'glstm_k8'] is invalid: by the memory "
        "model biglstm + biglstm_cudnn + glstm_k8 need 35.0 GiB together, more than the 30.0 GiB "
        "free less memory_margin_gib=2; the BIGLSTMs are in every group, for the per-pass "
        "ratios; pass fewer variants= or a smaller batch_size="
    )
    # Enough for the BIGLSTMs and the largest, one at a time; none at all: one group.
    plan = plan_groups(sizes, REFERENCES, free_bytes=37 * GIB, margin_bytes=2 * GIB)
    assert plan.groups == [[*REFERENCES, "glstm_k2"], [*REFERENCES, "glstm_k8"]]
    assert plan_groups(sizes, REFERENCES, None, 0).groups == [list(sizes)]


def tiny(variants: list[str], **fields) -> BenchConfig:
    return validate_bench_config(
        BenchConfig(preset="tiny", variants=variants, ceiling_seconds=0.05, **fields)
    )


def refuse_device_time(monkeypatch) -> None:
    """Make any measurement or build fail the test: what is refused must be refused first."""

    def no_device_time(*args, **kwargs):
        raise AssertionError("device time spent before the refusal")

    for name in ("measure_matmul_tflops", "measure_copy_bandwidth", "build_candidate"):
        monkeypatch.setattr(lm1b.commands.bench, name, no_device_time)


def test_a_gpu_too_small_for_the_biglstms_and_one_variant_is_refused_before_any_device_time(
    monkeypatch,
):
    refuse_device_time(monkeypatch)
    monkeypatch.setattr(lm1b.commands.bench, "free_memory_bytes", lambda device: 2**19)
    with pytest.raises(ConfigError, match=r"biglstm \+ glstm_k8 need 0.0 GiB together, more than"):
        run_benchmark(tiny(["biglstm", "glstm_k8"], memory_margin_gib=0))


def test_the_full_preset_is_refused_on_a_cpu_in_one_line(monkeypatch):
    refuse_device_time(monkeypatch)  # a paper-size run on this CPU would take hours
    with pytest.raises(ConfigError) as error:
        run_benchmark(validate_bench_config(BenchConfig(preset="full", device="cpu")))
    message = str(error.value)
    assert message.startswith("preset='full' is invalid: it runs on a GPU only, and this run's ")
    assert "device is cpu (device='cpu', torch " in message and "\n" not in message


GROUPED = ["biglstm", "glstm_k2", "glstm_k4", "glstm_k8"]


@pytest.fixture
def two_groups(monkeypatch):
    """A pretended GPU whose free memory holds BIGLSTM and glstm_k4 + glstm_k8 (exactly, by the
    memory model, no margin) but not glstm_k2 + glstm_k4: the tiny preset's GROUPED then runs
    in two groups. Returns the bench config."""
    cfg = tiny(GROUPED, memory_margin_gib=0)
    size = {
        n: estimated_bytes(c, "fp32") for n, c in compose_variants(cfg, PRESETS["tiny"]).items()
    }
    free = size["biglstm"] + size["glstm_k4"] + size["glstm_k8"]
    assert size["biglstm"] + size["glstm_k2"] + size["glstm_k4"] > free  # k2 goes alone
    monkeypatch.setattr(lm1b.commands.bench, "free_memory_bytes", lambda device: free)
    return cfg


def test_a_small_gpu_times_the_variants_in_groups_with_biglstm_in_each(
    two_groups, tmp_path, monkeypatch
):
    saved, models = [], {}
    build = lm1b.commands.bench.build_candidate

    def record(report, path):
        saved.append(copy.deepcopy(report))
        write_json_atomically(report, path)

    def logged_build(name, cfg, device, seed):
        if name == "glstm_k4":  # the second group's first: the first group's glstm_k2 is freed
            assert [n for n, model in models.items() if model() is not None] == ["biglstm"]
        assert name not in models  # built once: BIGLSTM is not rebuilt for the second group
        candidate = build(name, cfg, device, seed)
        models[name] = weakref.ref(candidate.model)
        return candidate

    monkeypatch.setattr(lm1b.benchmark.session, "write_json_atomically", record)
    monkeypatch.setattr(lm1b.commands.bench, "build_candidate", logged_build)
    path = tmp_path / "bench.json"
    report = run_benchmark(two_groups, path)
    assert json.loads(path.read_text()) == report and report["complete"] is True
    assert report["memory_plan"]["groups"] == [
        ["biglstm", "glstm_k2"],
        ["biglstm", "glstm_k4", "glstm_k8"],
    ]
    assert report["failed"] == {} and list(models) == GROUPED
    records = {r["name"]: r for r in report["variants"]}
    assert list(records) == GROUPED  # in the order asked for
    passes = report["passes"]
    big = records["biglstm"]["pass_seconds_per_step"]
    assert len(big) == 2 * passes  # BIGLSTM timed in both groups' passes, reported from all
    assert records["biglstm"]["seconds_per_step"] == statistics.median(big)
    # Each variant's ratio: against BIGLSTM's passes of its own group.
    for name, own in (("glstm_k2", big[:passes]), ("glstm_k4", big[passes:])):
        seconds = records[name]["pass_seconds_per_step"]
        assert records[name]["ratio_to_biglstm"] == statistics.median(
            b / s for b, s in zip(own, seconds, strict=True)
        )
    assert all(r["breakdown_ms"] is not None for r in records.values())
    assert len(report["pass_ceiling_tflops"]) == 1 + 2 * passes
    # After the first group, bench.json already held its figures, before the second was built.
    first = next(r for r in saved if r["stage"] == "group 1/2: host syncs counted")
    assert first["complete"] is False
    assert [r["name"] for r in first["variants"]] == ["biglstm", "glstm_k2"]
    # Kept as they were when the group ended; only the share of the ceiling follows its median.
    assert {**first["variants"][1], "peak_fraction": None} == {
        **records["glstm_k2"],
        "peak_fraction": None,
    }
    assert "timed in 2 groups to fit " in format_report(report)


def test_an_interrupted_later_group_leaves_the_earlier_groups_figures_in_bench_json(
    two_groups, tmp_path, monkeypatch
):
    build = lm1b.commands.bench.build_candidate

    def killed_in_the_second_group(name, cfg, device, seed):
        if name == "glstm_k4":
            raise KeyboardInterrupt  # as a time limit's kill would, nothing catches it
        return build(name, cfg, device, seed)

    monkeypatch.setattr(lm1b.commands.bench, "build_candidate", killed_in_the_second_group)
    path = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(two_groups, path)
    report = json.loads(path.read_text())
    assert report["complete"] is False and report["failed"] == {}
    assert report["stage"] == "group 1/2: host syncs counted"
    records = {r["name"]: r for r in report["variants"]}
    assert list(records) == ["biglstm", "glstm_k2"]
    assert records["glstm_k2"]["ratio_to_biglstm"] > 0
    assert records["glstm_k2"]["breakdown_ms"] is not None


def test_each_variant_records_its_precision_and_the_table_shows_it_where_it_differs(monkeypatch):
    calls = []
    monkeypatch.setattr(lm1b.commands.bench, "set_tf32", lambda *a: calls.append(a))
    report = run_benchmark(tiny(["biglstm", "glstm_k8"], tf32=False))
    assert calls == [(torch.device("cpu"), False)]  # the bench's field, for the process
    assert (report["precision"], report["requested_precision"]) == ("fp32", "fp32")
    assert [r["precision"] for r in report["variants"]] == ["fp32", "fp32"]
    assert "prec" not in format_report(report)  # the CPU's table, unchanged
    # As on a GPU under auto, one variant (there the cuDNN baseline) in fp32 with TF32, the
    # others in bf16: the matmul ceiling's precision is bf16.
    report["precision"], report["tf32"] = "bf16", True
    report["variants"][1]["precision"] = "bf16"
    lines = format_report(report).splitlines()
    assert "S 32, bf16, TF32 on |" in lines[1]
    assert lines[2].endswith(" syncs  prec")
    assert lines[3].startswith("biglstm ") and lines[3].endswith(" fp32")
    assert lines[4].startswith("glstm_k8 ") and lines[4].endswith(" bf16")
    # The bench's precision and TF32 reach every variant's trainer config.
    cfg = compose_variant_config("biglstm_cudnn", PRESETS["full"], "auto", [], tf32=False)
    assert (cfg.trainer.precision, cfg.trainer.tf32) == ("auto", False)


def test_bf16_for_the_cudnn_baseline_on_a_gpu_is_refused_before_any_device_time(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cfg = validate_bench_config(BenchConfig(preset="full", precision="bf16"))
    configs = compose_variants(cfg, resolve_preset(cfg))
    with pytest.raises(ConfigError, match="model.type='biglstm_cudnn' on CUDA"):
        variant_precisions(configs, CUDA)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_released_variant_gives_its_gpu_memory_back():
    """Built with both fast paths (its cell compiled, its layers captured as CUDA graphs),
    warmed up and timed, then released as a finished group is: nothing keeps its memory,
    neither the graphs' private pool nor the compiled cell."""
    # A vocabulary large enough that the tables dominate (about 1 GB with their state), beside
    # which what stays allocated for the process (cuBLAS workspaces) is small.
    vocab = ["model.vocab_size=4000000"]
    cfg = compose_variant_config("glstm_k2", PRESETS["tiny"], "auto", vocab)
    session = BenchSession({}, CUDA, None)
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(CUDA)
    free_before = torch.cuda.mem_get_info(CUDA)[0]

    def prepared():
        candidate = build_candidate("glstm_k2", cfg, CUDA, seed=0)
        warm_up(candidate, CUDA)
        return candidate

    session.add("glstm_k2", prepared)
    session.for_each(lambda c: time_candidate(c, num_steps=2, device=CUDA))
    assert session.failed == {}, session.failed
    (candidate,) = session.candidates
    state = candidate.state_bytes()
    assert torch.cuda.memory_allocated(CUDA) - before >= state > 2**30 / 2
    del candidate
    session.release(["glstm_k2"])
    engaged = session.released[0]["fast_paths_engaged"]
    assert engaged == {"cuda_graphs": True, "fused_cell": True}  # neither fell back to eager
    assert torch.cuda.memory_allocated(CUDA) - before < state / 8
    # empty_cache handed the blocks back to the driver (what the next group's build sees).
    assert torch.cuda.mem_get_info(CUDA)[0] > free_before - state / 8
