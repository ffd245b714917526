"""`python -m lm1b.bench preset=tiny|cpu|full`: words/sec of every variant's whole training step.

Builds every variant (both BIGLSTM implementations, F-LSTM, G-LSTM k = 2, 4, 8 and the
hierarchical G-LSTM) at the preset's size in one process, times the trainer's own training
step on each, interleaved over several passes (see lm1b.benchmark.timing), prints a table and
writes `bench.json` atomically into the run directory (`hydra.run.dir` when given, else
outputs/bench/<preset>/<run id>). `python -m lm1b.plan bench=.../bench.json` reads it.

Columns: median ms/step and words/sec; `vs BIG`, the median over passes of the per-pass ratio
to the faster BIGLSTM; `paper`, the paper's ratio; `FLOPs`, BIGLSTM's FLOPs per word over the
variant's (the speed-up if the step were all arithmetic); GFLOP per word of forward + backward
(6 x the LSTM stack's weight-matrix elements + 6 x (S + 1) x p for the sampled softmax: see
lm1b.plan, which reproduces PERFORMANCE.md's 0.96 ... 0.25 at paper size); achieved TFLOP/s
and its share of the device's ceiling, measured here as a large matmul's TFLOP/s in the
benchmark's precision once per pass (median), under the same load as the variants; memory
(see MEMORY_NOTE).
"""

from __future__ import annotations

import logging
import statistics
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm1b.benchmark.candidates import build_candidate
from lm1b.benchmark.report import format_table, variant_records
from lm1b.benchmark.timing import CEILING_SIZE, device_name, measure_matmul_tflops, run_passes
from lm1b.config import CONFIG_DIR, ConfigError
from lm1b.config.bench import (
    BenchConfig,
    Preset,
    register_bench_config,
    resolve_preset,
    validate_bench_config,
)
from lm1b.evaluate import write_json_atomically
from lm1b.inference import resolve_device
from lm1b.train import register_resolvers

logger = logging.getLogger("lm1b.bench")

BENCH_FILE = "bench.json"
MEMORY_NOTE = {
    "cuda": "parameters + optimizer state + EMA, plus the peak allocated above them in a step",
    "cpu": "parameters + optimizer state + EMA (transient step memory not measured on CPU)",
}


def describe_run(cfg: BenchConfig, preset: Preset, device: torch.device, precision: str) -> dict:
    """bench.json's header: what was measured, where, and how."""
    size = CEILING_SIZE["cuda" if device.type == "cuda" else "cpu"]
    return {
        "preset": cfg.preset,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": preset.size,
        "vocab_size": preset.vocab_size,
        "batch_size": preset.batch_size,
        "num_steps": preset.num_steps,
        "num_sampled": preset.num_sampled,
        "precision": precision,
        "passes": preset.passes,
        "steps_per_pass": preset.steps_per_pass,
        "ceiling": f"{size}x{size} {precision} matmul, median over passes, in this process",
        "memory": MEMORY_NOTE[device.type],
    }


def run_benchmark(cfg: BenchConfig) -> dict:
    """Build, warm up and time every variant; return bench.json's content."""
    preset = resolve_preset(cfg)
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    device = resolve_device(cfg.device)
    precision = preset.precision if device.type == "cuda" else "fp32"  # bf16 on a GPU only
    report = describe_run(cfg, preset, device, precision)
    logger.info("building %d variants at preset %s on %s", len(cfg.variants), cfg.preset, device)
    candidates = [build_candidate(n, preset, precision, device, cfg.seed) for n in cfg.variants]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    seconds = cfg.ceiling_seconds / preset.passes
    ceilings = run_passes(
        candidates,
        preset.passes,
        preset.steps_per_pass,
        device,
        lambda: measure_matmul_tflops(device, dtype, seconds),
    )
    ceiling = statistics.median(ceilings)
    records = variant_records(candidates, ceiling)
    return {
        **report,
        "ceiling_tflops": ceiling,
        "pass_ceiling_tflops": ceilings,
        "variants": records,
    }


def _count(number: int, noun: str) -> str:
    """'1 thread', '2 threads', '10 passes'."""
    plural = "es" if noun.endswith("s") else "s"
    return f"{number} {noun}{plural * (number != 1)}"


def format_report(report: dict) -> str:
    """The header line, the table and the column notes that the command prints."""
    shape = (
        f"size {report['size']}, V {report['vocab_size']:,}, B {report['batch_size']}, "
        f"T {report['num_steps']}, S {report['num_sampled']:,}, {report['precision']}"
    )
    header = (
        f"{report['device_name']} ({report['device']}), {_count(report['threads'], 'thread')}, "
        f"torch {report['torch']} | preset {report['preset']}: {shape} | "
        f"{_count(report['passes'], 'pass')} of {_count(report['steps_per_pass'], 'step')} "
        f"after a warm-up | matmul ceiling {report['ceiling_tflops']:.3f} TFLOP/s"
    )
    notes = (
        "vs BIG: median over passes of (faster BIGLSTM's step time / this one's); paper: v3 on "
        "4x V100; FLOPs: BIGLSTM's FLOPs / this one's; GFLOP/w: forward + backward per word "
        "(LSTM stack + sampled softmax); % peak: of the matmul ceiling; mem: "
        f"{report['memory']}"
    )
    return "\n".join([header, format_table(report["variants"]), notes])


def _bench(dict_cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    report = run_benchmark(validate_bench_config(OmegaConf.to_object(dict_cfg)))
    write_json_atomically(report, run_dir / BENCH_FILE)
    logger.info("wrote %s", run_dir / BENCH_FILE)
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
