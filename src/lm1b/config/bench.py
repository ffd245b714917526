"""Schema of `configs/bench.yaml` (`python -m lm1b.bench preset=tiny|cpu|full [key=value ...]`).

A preset fixes the model size and batch shape of every variant (`size` group, V, B, T, S) and
how long to measure (passes, steps per pass, threads, precision); the optional fields below
override one of its settings, and `overrides` adds training-config overrides to every variant
(quoted inside the list: `'overrides=["trainer.cuda_graphs=false"]'`; checked when the
variants' configs are composed, before anything is built). Registered in Hydra's ConfigStore
as `bench_schema`, so a typo in an override of these fields fails when the config is composed.

The precision (auto, bf16 or fp32) becomes every variant's `trainer.precision` and is resolved
per variant as training resolves it (lm1b.training.precision): under `auto` on a GPU the cuDNN
BIGLSTM runs fp32 (with TF32 when `tf32`) while the others run bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hydra.core.config_store import ConfigStore

from lm1b.config.checks import require
from lm1b.config.trainer import DEVICES, PRECISIONS

# Every variant of the paper's table, under the names the experiments use. biglstm_cudnn is
# BIGLSTM on torch.nn.LSTM(proj_size=...): the baseline a user would pick instead of ours.
VARIANTS = (
    "biglstm",
    "biglstm_cudnn",
    "flstm_r512",
    "glstm_k2",
    "glstm_k4",
    "glstm_k8",
    "hglstm_k2_k4",
)


@dataclass(frozen=True)
class Preset:
    """Sizes and measurement lengths of one preset; batch_size is per device."""

    size: str  # configs/size/<size>.yaml: n, p, r of every variant
    vocab_size: int
    batch_size: int
    num_steps: int
    num_sampled: int
    passes: int  # timed passes after the warm-up pass
    steps_per_pass: int
    threads: int | None  # torch intra-op threads (None: torch's default)
    precision: str  # auto, bf16 or fp32: every variant's trainer.precision
    gpu_only: bool = False  # refused on a CPU (paper size: hours and ~100 GB of host memory)


PRESETS = {
    # Seconds, for CI: the tiny size at a 1,024-word vocabulary.
    "tiny": Preset("tiny", 1024, 4, 8, 32, passes=2, steps_per_pass=1, threads=1, precision="fp32"),
    # Minutes on a 2-core CPU: every width of the paper divided by 4 (p 256, n 2,048, r 128).
    # One step per block keeps a pass short, so its variants see the same load of a shared
    # machine; ten passes give the median something to reject. One thread: on the shared
    # 2-core machines two threads ran 3x slower per step and swung 5x between passes.
    "cpu": Preset(
        "cpu", 32768, 32, 20, 512, passes=10, steps_per_pass=1, threads=1, precision="fp32"
    ),
    # The paper's sizes, one GPU's share of the batch (128 sequences as in v1's 8 GPUs). The
    # seven variants need about 107 GiB together by the memory model (each has 1.6B table
    # parameters plus their Adagrad state): on a smaller GPU they are timed in groups that fit
    # (lm1b.benchmark.session.plan_groups; three on an 80 GB H100, one on a 141 GB H200). The
    # time goes to each variant's warm-up (compilation, CUDA-graph capture: tens of seconds);
    # the 5 x 5 timed steps of all seven take seconds: the run is meant to fit
    # scripts/gpu_check.sh's 300 s (unmeasured).
    "full": Preset(
        "paper",
        793471,
        128,
        20,
        8192,
        passes=5,
        steps_per_pass=5,
        threads=None,
        precision="auto",
        gpu_only=True,
    ),
}


@dataclass
class BenchConfig:
    preset: str = "tiny"  # one of PRESETS
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    device: str = "auto"  # auto: CUDA when torch sees a GPU
    # Overrides of the preset's settings (null: the preset's value).
    passes: int | None = None
    steps_per_pass: int | None = None
    threads: int | None = None
    precision: str | None = None
    batch_size: int | None = None
    # CUDA only: fp32 matmuls and cuDNN on TF32 tensor cores, for the whole process and in
    # every variant's trainer.tf32 (what the cuDNN baseline runs under `auto`).
    tf32: bool = True
    # Seconds spent timing each ceiling (a large matmul, a large copy), spread over its
    # measurements: one before the variants are built and one after every pass.
    ceiling_seconds: float = 1.0
    # GPU memory kept free beyond the memory model's estimates when variants are grouped:
    # the model's error (within 4% at paper size, docs/scale.md: about 3 GiB of 78), the
    # runtime's workspaces and allocator slack (2 GiB, as lm1b.plan keeps) and the copy
    # ceiling's two 1 GiB buffers, measured after every pass.
    memory_margin_gib: float = 8.0
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # train-config overrides, every variant


def register_bench_config() -> None:
    """Register the schema under the name `bench_schema` (idempotent)."""
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


def resolve_preset(cfg: BenchConfig) -> Preset:
    """The preset named by `cfg.preset` with the config's non-null overrides applied."""
    names = ("passes", "steps_per_pass", "threads", "precision", "batch_size")
    overrides = {name: getattr(cfg, name) for name in names if getattr(cfg, name) is not None}
    return replace(PRESETS[cfg.preset], **overrides)


def validate_bench_config(cfg: BenchConfig) -> BenchConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    require(cfg.preset in PRESETS, "preset", cfg.preset, f"one of {list(PRESETS)}")
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    distinct = len(set(cfg.variants)) == len(cfg.variants)  # a variant's name is its key
    require(
        bool(cfg.variants) and not unknown and distinct,
        "variants",
        cfg.variants,
        f"distinct names from {VARIANTS}",
    )
    require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    for name in ("passes", "steps_per_pass", "threads", "batch_size"):
        value = getattr(cfg, name)
        require(value is None or value >= 1, name, value, "null or at least 1")
    require(
        cfg.precision is None or cfg.precision in PRECISIONS,
        "precision",
        cfg.precision,
        f"null or one of {list(PRECISIONS)}",
    )
    require(cfg.ceiling_seconds > 0, "ceiling_seconds", cfg.ceiling_seconds, "greater than 0")
    require(cfg.memory_margin_gib >= 0, "memory_margin_gib", cfg.memory_margin_gib, "0 or more")
    return cfg
