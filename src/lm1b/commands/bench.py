"""`python -m lm1b.bench preset=tiny|cpu|full`: words/sec of every variant's whole training step.

First the device's ceilings: a large matmul's TFLOP/s in the benchmark's precision and a large
copy's GB/s (bytes read + written). Then every variant (both BIGLSTM implementations, F-LSTM,
G-LSTM k = 2, 4, 8 and the hierarchical G-LSTM), built one at a time at the preset's size with
the trainer config's GPU fast paths and warmed up; then timed passes of the trainer's own step,
interleaved (see lm1b.benchmark.timing), the ceilings measured again after each pass; last, a
few steps of each variant timed phase by phase (forward, backward, optimizer) with the device
synchronised between them, and one more step with its host synchronisations counted (CUDA).
Where the variants do not fit the GPU together (the full preset on 80 GB), this runs once per
group that fits, chosen from the memory model and the free memory; both BIGLSTMs stay built and
are timed in every group, and each group's other variants are freed before the next is built
(lm1b.benchmark.session). The paper-size `full` preset is refused on a CPU.
`bench.json` in the run directory (`hydra.run.dir` when given, else
outputs/bench/<preset>/<run id>) is rewritten after each of these stages, `complete` false
until the end (lm1b.benchmark.session); a variant that fails is recorded under `failed` and
the others go on. Prints the report at the end (lm1b.benchmark.summary);
`python -m lm1b.plan bench=.../bench.json` reads bench.json.

Precision: the preset's (or `precision=`) becomes each variant's trainer.precision, resolved
per variant (lm1b.training.precision): under `auto` on a GPU the cuDNN BIGLSTM runs fp32 and
the others bf16; each record has its own, the header the matmul ceiling's (bf16 when a variant
runs bf16), and the table a `prec` column when they differ. `tf32` sets TF32 for the process.

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

from lm1b.benchmark.breakdown import time_accounting
from lm1b.benchmark.candidates import (
    Candidate,
    build_candidate,
    compose_variant_config,
    estimated_bytes,
)
from lm1b.benchmark.report import BASELINES
from lm1b.benchmark.session import GIB, BenchSession, GroupPlan, free_memory_bytes, plan_groups
from lm1b.benchmark.summary import format_report, paths_on
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
from lm1b.config.checks import require
from lm1b.inference import resolve_device
from lm1b.training.precision import resolve_precision, set_tf32

logger = logging.getLogger("lm1b.bench")

BENCH_FILE = "bench.json"
MEMORY_NOTE = {
    "cuda": "parameters + optimizer state + EMA, plus the peak allocated above them in a step",
    "cpu": "parameters + optimizer state + EMA (transient step memory not measured on CPU)",
}


def describe_run(
    cfg: BenchConfig,
    preset: Preset,
    device: torch.device,
    numerics: dict,
    plan: GroupPlan,
) -> dict:
    """bench.json's header: what was measured, when, where, and how. `numerics`: the matmul
    ceiling's `precision`, the `requested_precision` and `tf32` (None on a CPU)."""
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
        **numerics,
        "overrides": cfg.overrides,
        "passes": preset.passes,  # per group
        "steps_per_pass": preset.steps_per_pass,
        "warmup_steps": WARMUP_STEPS,
        "breakdown_steps": BREAKDOWN_STEPS,
        "ceiling": f"{size}x{size} {numerics['precision']} matmul; copy of {copy_mib} MiB, "
        "bytes read + written; each the median of its measurements in this process, one before "
        "the variants are built and one after every pass",
        "memory": MEMORY_NOTE[device.type],
        "memory_plan": plan.describe(),
    }


def refuse_cpu_for_gpu_preset(cfg: BenchConfig, preset: Preset, device: torch.device) -> None:
    """One line instead of a paper-size run on a CPU: hours, about 100 GB of host memory, and
    no GPU figure at the end (the GPU check once measured the CPU without saying so)."""
    require(
        device.type == "cuda" or not preset.gpu_only,
        "preset",
        cfg.preset,
        f"it runs on a GPU only, and this run's device is {device} (device={cfg.device!r}, torch "
        f"{torch.__version__}, CUDA available: {torch.cuda.is_available()}); on a CPU use "
        "preset=cpu or preset=tiny",
    )


def compose_variants(cfg: BenchConfig, preset: Preset) -> dict[str, TrainConfig]:
    """Every variant's training config: the preset's sizes, its precision and the bench's TF32
    setting, then the bench's `overrides`."""
    return {
        name: compose_variant_config(name, preset, preset.precision, cfg.overrides, cfg.tf32)
        for name in cfg.variants
    }


def variant_precisions(configs: dict[str, TrainConfig], device: torch.device) -> dict[str, str]:
    """bf16 or fp32 per variant: its trainer.precision resolved for its model on `device`, as
    its StepRunner will resolve it (a combination refused there raises ConfigError here)."""
    return {
        name: resolve_precision(c.trainer.precision, c.model.type, device)
        for name, c in configs.items()
    }


def plan_variant_groups(
    cfg: BenchConfig,
    configs: dict[str, TrainConfig],
    precisions: dict[str, str],
    device: torch.device,
) -> GroupPlan:
    """The groups the variants are timed in: each fits the device's free memory less the
    margin by the memory model (one group on a CPU)."""
    estimates = {name: estimated_bytes(c, precisions[name]) for name, c in configs.items()}
    return plan_groups(
        estimates,
        [name for name in configs if name in BASELINES],
        free_memory_bytes(device),
        int(cfg.memory_margin_gib * GIB),
    )


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
        paths_on(candidate.fast_paths) or "none",
    )
    return candidate


class BenchRun:
    """One benchmark run's settings and session, stage by stage."""

    def __init__(
        self,
        cfg: BenchConfig,
        preset: Preset,
        device: torch.device,
        configs: dict[str, TrainConfig],
        plan: GroupPlan,
        session: BenchSession,
    ) -> None:
        self.cfg, self.preset, self.device = cfg, preset, device
        self.configs, self.plan, self.session = configs, plan, session
        bf16 = session.header["precision"] == "bf16"
        self.ceiling_dtype = torch.bfloat16 if bf16 else torch.float32
        # One measurement of each ceiling before the variants, then one after every pass.
        self.ceiling_seconds = cfg.ceiling_seconds / (preset.passes * len(plan.groups) + 1)

    def measure_ceilings(self) -> None:
        seconds = self.ceiling_seconds
        self.session.matmul_tflops.append(
            measure_matmul_tflops(self.device, self.ceiling_dtype, seconds)
        )
        self.session.copy_gbps.append(measure_copy_bandwidth(self.device, seconds))

    def time_group(self, number: int) -> dict:
        """Group `number` (from 1): build its variants not built before (the references are
        built with the first group and kept), time every built variant in interleaved passes,
        break the new ones down, count their host syncs, then keep their records and free them
        (all but the references). Returns bench.json's content, `complete` after the last."""
        session, device, count = self.session, self.device, len(self.plan.groups)
        group = self.plan.groups[number - 1]
        label = f"group {number}/{count}: " if count > 1 else ""
        new = [name for name in group if name not in session.order]
        self._log_memory(label, group, new)
        for index, name in enumerate(new, 1):
            session.add(name, partial(prepare, name, self.configs[name], device, self.cfg.seed))
            outcome = "failed" if name in session.failed else "ready"
            session.save(f"{label}variant {index}/{len(new)} ({name}) {outcome}")
        steps = self.preset.steps_per_pass
        for index in range(1, self.preset.passes + 1):
            session.for_each(partial(time_candidate, num_steps=steps, device=device))
            try:
                self.measure_ceilings()
            except torch.cuda.OutOfMemoryError:  # the variants filled the GPU: go on timing them
                logger.warning("no memory left for the ceilings' buffers after pass %d", index)
            times = ", ".join(f"{c.name} {c.seconds[-1] * 1e3:.1f}" for c in session.candidates)
            session.save(f"{label}pass {index}/{self.preset.passes} done (ms/step: {times})")
        session.for_each(partial(time_phases, num_steps=BREAKDOWN_STEPS, device=device), new)
        session.save(f"{label}breakdown done")
        accounting = partial(time_accounting, num_steps=BREAKDOWN_STEPS, device=device)
        session.for_each(accounting, new)
        session.save(f"{label}accounting done")
        session.for_each(partial(count_host_syncs, device=device), new)
        session.release([name for name in group if name not in self.plan.references])
        return session.save(f"{label}host syncs counted", complete=number == count)

    def _log_memory(self, label: str, group: list[str], new: list[str]) -> None:
        """The group, and on a GPU its new variants' estimate against the memory free now (a
        group that runs out of memory shows how far the plan was off)."""
        free = free_memory_bytes(self.device)
        memory = ""
        if free is not None:
            estimate = sum(self.plan.estimated_bytes[name] for name in new)
            memory = f" ({estimate / GIB:.1f} GiB to build by the memory model, {free / GIB:.1f} GiB free)"
        logger.info("%stiming %s%s", label, ", ".join(group), memory)


def run_benchmark(cfg: BenchConfig, path: Path | None = None) -> dict:
    """Measure the ceilings, then build, warm up, time and break down every variant, group by
    group, rewriting bench.json at `path` (when given) after every stage; returns its final
    content."""
    preset = resolve_preset(cfg)
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    device = resolve_device(cfg.device)
    refuse_cpu_for_gpu_preset(cfg, preset, device)
    tf32 = set_tf32(device, cfg.tf32)
    # Every config error (a bad `overrides` entry, a precision a variant refuses, variants that
    # cannot fit the GPU) before any device time is spent.
    configs = compose_variants(cfg, preset)
    precisions = variant_precisions(configs, device)
    plan = plan_variant_groups(cfg, configs, precisions, device)
    numerics = {
        "precision": "bf16" if "bf16" in precisions.values() else "fp32",  # the ceiling's
        "requested_precision": preset.precision,
        "tf32": tf32,
    }
    session = BenchSession(describe_run(cfg, preset, device, numerics, plan), device, path)
    run = BenchRun(cfg, preset, device, configs, plan, session)
    logger.info("preset %s on %s: %s", cfg.preset, device_name(device), ", ".join(cfg.variants))
    run.measure_ceilings()  # on the empty device: in bench.json before any variant can fail
    session.save(
        f"ceilings: {session.matmul_tflops[0]:.3f} TFLOP/s, {session.copy_gbps[0]:.1f} GB/s"
    )
    reports = [run.time_group(number) for number in range(1, len(plan.groups) + 1)]
    return reports[-1]


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
