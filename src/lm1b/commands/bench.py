"""`python -m lm1b.bench preset=tiny|cpu|full`: words/sec of every variant's whole training step.

First the device's ceilings: a large matmul's TFLOP/s in the benchmark's precision and a large
copy's GB/s (bytes read + written). Then every variant (both BIGLSTM implementations, F-LSTM,
G-LSTM k = 2, 4, 8 and the hierarchical G-LSTM), built one at a time at the preset's size with
the trainer config's GPU fast paths and warmed up; then timed passes of the trainer's own step,
interleaved (see lm1b.benchmark.timing), the ceilings measured again after each pass; last, a
few steps of each variant timed phase by phase (forward, backward, optimizer) with the device
synchronised between them, and one more step with its host synchronisations counted (CUDA).
`bench.json` in the run directory (`hydra.run.dir` when given, else
outputs/bench/<preset>/<run id>) is rewritten after each of these stages, `complete` false
until the end (lm1b.benchmark.session); a variant that fails is recorded under `failed` and
the others go on. Prints the table at the end. `python -m lm1b.plan bench=.../bench.json`
reads it.

Columns: median ms/step and words/sec; `vs BIG`, the median over passes of the per-pass ratio
to the faster BIGLSTM; `paper`, the paper's ratio; `FLOPs`, BIGLSTM's FLOPs per word over the
variant's (the speed-up if the step were all arithmetic); GFLOP per word of forward + backward
(6 x the LSTM stack's weight-matrix elements + 6 x (S + 1) x p for the sampled softmax: see
lm1b.plan, which reproduces docs/performance.md's 0.96 ... 0.25 at paper size); achieved TFLOP/s
and its share of the matmul ceiling (median of its measurements, under the same load as the
variants); memory (see MEMORY_NOTE); the breakdown's median ms of forward, backward and
optimizer (table-gradient pass, clipping, the host sync, both optimizers, EMA); on CUDA, the
host synchronisations of one more step (`syncs`, counted by CUDA's sync debug mode; the step
is built to have one).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm1b.benchmark.candidates import Candidate, build_candidate, compose_variant_config
from lm1b.benchmark.report import format_table
from lm1b.benchmark.session import BenchSession
from lm1b.benchmark.timing import (
    BREAKDOWN_STEPS,
    CEILING_SIZE,
    COPY_BYTES,
    WARMUP_STEPS,
    count_host_syncs,
    device_name,
    measure_copy_bandwidth,
    measure_matmul_tflops,
    time_candidate,
    time_phases,
    warm_up,
)
from lm1b.commands.run_directory import register_resolvers
from lm1b.config import CONFIG_DIR, ConfigError, TrainConfig
from lm1b.config.bench import (
    BenchConfig,
    Preset,
    register_bench_config,
    resolve_preset,
    validate_bench_config,
)
from lm1b.inference import resolve_device

logger = logging.getLogger("lm1b.bench")

BENCH_FILE = "bench.json"
MEMORY_NOTE = {
    "cuda": "parameters + optimizer state + EMA, plus the peak allocated above them in a step",
    "cpu": "parameters + optimizer state + EMA (transient step memory not measured on CPU)",
}


def describe_run(cfg: BenchConfig, preset: Preset, device: torch.device, precision: str) -> dict:
    """bench.json's header: what was measured, when, where, and how."""
    cuda = device.type == "cuda"
    size, copy_mib = CEILING_SIZE[device.type], COPY_BYTES[device.type] // 2**20
    return {
        "preset": cfg.preset,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_name(device),
        "device_memory_bytes": torch.cuda.get_device_properties(device).total_memory
        if cuda
        else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built with; None on a CPU build
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "size": preset.size,
        "vocab_size": preset.vocab_size,
        "batch_size": preset.batch_size,
        "num_steps": preset.num_steps,
        "num_sampled": preset.num_sampled,
        "precision": precision,
        "overrides": cfg.overrides,
        "passes": preset.passes,
        "steps_per_pass": preset.steps_per_pass,
        "warmup_steps": WARMUP_STEPS,
        "breakdown_steps": BREAKDOWN_STEPS,
        "ceiling": f"{size}x{size} {precision} matmul; copy of {copy_mib} MiB, bytes read + "
        "written; each the median of its measurements in this process, one before the "
        "variants are built and one after every pass",
        "memory": MEMORY_NOTE[device.type],
    }


def prepare(name: str, cfg: TrainConfig, device: torch.device, seed: int) -> Candidate:
    """Variant `name` built and warmed up, with its times and fast paths logged."""
    logger.info("building %s", name)
    candidate = build_candidate(name, cfg, device, seed)
    warm_up(candidate, device)
    logger.info(
        "%s: built in %.1f s, %d warm-up steps in %.1f s, fast paths: %s",
        name,
        candidate.build_seconds,
        WARMUP_STEPS,
        candidate.warmup_seconds,
        _on(candidate.fast_paths) or "none",
    )
    return candidate


def run_benchmark(cfg: BenchConfig, path: Path | None = None) -> dict:
    """Measure the ceilings, then build, warm up, time and break down every variant, rewriting
    bench.json at `path` (when given) after every stage; returns its final content."""
    preset = resolve_preset(cfg)
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    device = resolve_device(cfg.device)
    precision = preset.precision if device.type == "cuda" else "fp32"  # bf16 on a GPU only
    # Every config error (a bad `overrides` entry) before any device time is spent.
    configs = {n: compose_variant_config(n, preset, precision, cfg.overrides) for n in cfg.variants}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    seconds = cfg.ceiling_seconds / (preset.passes + 1)
    session = BenchSession(describe_run(cfg, preset, device, precision), device, path)

    def measure_ceilings() -> None:
        session.matmul_tflops.append(measure_matmul_tflops(device, dtype, seconds))
        session.copy_gbps.append(measure_copy_bandwidth(device, seconds))

    logger.info("preset %s on %s: %s", cfg.preset, device_name(device), ", ".join(cfg.variants))
    measure_ceilings()  # on the empty device: in bench.json before any variant can fail
    session.save(
        f"ceilings: {session.matmul_tflops[0]:.3f} TFLOP/s, {session.copy_gbps[0]:.1f} GB/s"
    )
    for index, name in enumerate(cfg.variants, 1):
        session.add(name, partial(prepare, name, configs[name], device, cfg.seed))
        outcome = "failed" if name in session.failed else "ready"
        session.save(f"variant {index}/{len(cfg.variants)} ({name}) {outcome}")
    for index in range(1, preset.passes + 1):
        session.for_each(partial(time_candidate, num_steps=preset.steps_per_pass, device=device))
        try:
            measure_ceilings()
        except torch.cuda.OutOfMemoryError:  # the variants filled the GPU: go on timing them
            logger.warning("no memory left for the ceilings' buffers after pass %d", index)
        times = ", ".join(f"{c.name} {c.seconds[-1] * 1e3:.1f}" for c in session.candidates)
        session.save(f"pass {index}/{preset.passes} done (ms/step: {times})")
    session.for_each(partial(time_phases, num_steps=BREAKDOWN_STEPS, device=device))
    session.save("breakdown done")
    session.for_each(partial(count_host_syncs, device=device))
    return session.save("host syncs counted", complete=True)


def _count(number: int, noun: str) -> str:
    """'1 thread', '2 threads', '10 passes'."""
    plural = "es" if noun.endswith("s") else "s"
    return f"{number} {noun}{plural * (number != 1)}"


def _on(paths: dict[str, bool]) -> str:
    """'cuda_graphs+fused_cell': the fast paths that are on."""
    return "+".join(path for path, on in paths.items() if on)


def format_report(report: dict) -> str:
    """The header lines, the table, the failures and the column notes that the command prints."""
    machine = f"{report['device_name']} ({report['device']}"
    if report["device_memory_bytes"] is not None:
        machine += f", {report['device_memory_bytes'] / 2**30:.0f} GiB"
    versions = f"torch {report['torch']}, CUDA {report['cuda']}, cuDNN {report['cudnn']}"
    shape = (
        f"size {report['size']}, V {report['vocab_size']:,}, B {report['batch_size']}, "
        f"T {report['num_steps']}, S {report['num_sampled']:,}, {report['precision']}"
    )
    overrides = f" {' '.join(report['overrides'])}" if report["overrides"] else ""
    lines = [
        f"{report['date']} | {machine}), {_count(report['threads'], 'thread')} | {versions}",
        f"preset {report['preset']}{overrides}: {shape} | {_count(report['passes'], 'pass')} of "
        f"{_count(report['steps_per_pass'], 'step')} after {report['warmup_steps']} warm-up "
        f"steps | matmul ceiling {report['ceiling_tflops']:.3f} TFLOP/s, copy ceiling "
        f"{report['copy_ceiling_gbps']:,.1f} GB/s",
        format_table(report["variants"]),
    ]
    fast = [
        f"{r['name']} {_on(r['fast_paths'])} (engaged: {_on(r['fast_paths_engaged']) or 'none'})"
        for r in report["variants"]
        if any(r["fast_paths"].values())
    ]
    if fast:
        lines.append(f"fast paths: {', '.join(fast)}")
    lines += [f"FAILED {name}: {error}" for name, error in report["failed"].items()]
    lines += [
        f"WARNING {r['name']}: {r['skipped_steps']} steps skipped as non-finite (no update)"
        for r in report["variants"]
        if r["skipped_steps"]
    ]
    lines.append(
        "vs BIG: median over passes of (faster BIGLSTM's step time / this one's); vs cuDNN: the "
        "same against the cuDNN BIGLSTM; paper: v3 on 4x V100; FLOPs: BIGLSTM's FLOPs / this one's; GFLOP/w: forward + backward per word "
        "(LSTM stack + sampled softmax); % peak: of the matmul ceiling; mem: "
        f"{report['memory']}; fwd/bwd/opt: median ms of each phase over "
        f"{report['breakdown_steps']} steps synchronised between phases; syncs: times one step "
        "waited for the GPU (CUDA's sync debug mode)"
    )
    return "\n".join(lines)


def _bench(dict_cfg: DictConfig) -> None:
    path = Path(HydraConfig.get().runtime.output_dir) / BENCH_FILE
    report = run_benchmark(validate_bench_config(OmegaConf.to_object(dict_cfg)), path)
    logger.info("wrote %s", path)
    print(format_report(report))


@hydra.main(config_path=str(CONFIG_DIR), config_name="bench", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    try:
        _bench(dict_cfg)
    except (ConfigError, FileNotFoundError) as error:
        logger.error("%s", error)
        sys.exit(f"lm1b.bench: {error}")


register_bench_config()
register_resolvers()

if __name__ == "__main__":
    main()
