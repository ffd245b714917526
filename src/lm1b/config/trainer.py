"""Trainer config group (configs/trainer/*.yaml): length, precision, validation, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from lm1b.config.checks import require

RESOLVED_PRECISIONS = ("fp32", "bf16")  # what `auto` becomes on a given device
PRECISIONS = ("auto", *RESOLVED_PRECISIONS)
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainerConfig:
    max_steps: int | None = None  # null: until max_time
    max_time: float | None = None  # wall-clock budget in seconds; null: until max_steps
    device: str = "auto"
    # auto: bf16 autocast on a GPU with native bf16 (compute capability 8.0+), fp32 elsewhere (lm1b.training.precision).
    precision: str = "auto"
    # CUDA only: fp32 matmuls and cuDNN kernels on TF32 tensor cores (PyTorch's matmul default
    # is full fp32). Applies to whatever runs in fp32 under either precision.
    tf32: bool = True
    log_every: int = 100  # steps between scalar logs
    val_every: int = 5000  # steps between validations (0: never)
    val_max_batches: int | None = None  # cap on validation batches (null: the whole set)
    # Stop after this many validations in a row without a new best validation perplexity
    # (0: never stop early). The best checkpoint (checkpoints/best.pt) is kept whenever the
    # run validates (keep_best), outside the keep_last rotation.
    patience: int = 0
    keep_best: bool = True
    # Steps between checkpoints (0: none by step count, only every checkpoint_every_minutes,
    # at the end and on a signal).
    checkpoint_every: int = 0
    checkpoint_every_minutes: float = 30.0
    # Write checkpoints in the background from a host copy of the state taken at the step
    # (lm1b.training.background_save): the step stalls for the copy, not for the disk. Needs
    # page-locked host memory for one checkpoint on a GPU, about 19 GB at paper size (pinned
    # allocations are rounded up to powers of two). null: on a GPU only.
    async_checkpoint: bool | None = None
    keep_last: int = 3
    resume: str = "auto"  # auto: newest valid checkpoint in the run dir; never; or a path
    # Start a fresh run from the model weights (and tokenizer) of this checkpoint file or run
    # directory, e.g. one written by `python -m lm1b.compress`; optimizer state and counters
    # start afresh. Ignored when the run resumes from its own checkpoint.
    init_from: str | None = None
    max_consecutive_skips: int = 10  # non-finite steps in a row before aborting
    # Fast paths of our LSTM stack (each falls back to the plain path, with a warning, where
    # it cannot be used): replay every LSTM layer's training step as a CUDA graph (GPU only),
    # and fuse the cell's pointwise math with torch.compile (on a GPU its forward and
    # backward, on a CPU its backward; compiled once per process, cached on disk).
    cuda_graphs: bool = True
    fused_cell: bool = True
    # Several ranks: all-reduce the LSTM gradients in bf16 (half the bytes; see
    # docs/performance.md for when communication matters).
    ddp_bf16_grads: bool = False


def validate_trainer(cfg: TrainerConfig) -> None:
    """Check the trainer fields; raise ConfigError naming the field."""
    require(
        cfg.max_steps is None or cfg.max_steps >= 0,
        "trainer.max_steps",
        cfg.max_steps,
        "null or 0 or more",
    )
    require(
        cfg.max_time is None or cfg.max_time > 0,
        "trainer.max_time",
        cfg.max_time,
        "null or seconds greater than 0",
    )
    require(
        cfg.max_steps is not None or cfg.max_time is not None,
        "trainer.max_steps",
        cfg.max_steps,
        "set trainer.max_steps or trainer.max_time (or both)",
    )
    require(cfg.device in DEVICES, "trainer.device", cfg.device, f"one of {list(DEVICES)}")
    require(
        cfg.precision in PRECISIONS,
        "trainer.precision",
        cfg.precision,
        f"one of {list(PRECISIONS)}",
    )
    require(cfg.log_every >= 1, "trainer.log_every", cfg.log_every, "at least 1")
    require(cfg.val_every >= 0, "trainer.val_every", cfg.val_every, "0 (never) or more")
    require(cfg.patience >= 0, "trainer.patience", cfg.patience, "0 (never stop early) or more")
    require(
        cfg.patience == 0 or cfg.val_every > 0,
        "trainer.patience",
        cfg.patience,
        "0 unless trainer.val_every > 0 (early stopping counts validations)",
    )
    require(cfg.checkpoint_every >= 0, "trainer.checkpoint_every", cfg.checkpoint_every, ">= 0")
    require(
        cfg.keep_last >= 2,
        "trainer.keep_last",
        cfg.keep_last,
        "at least 2, so a corrupt newest checkpoint leaves a valid one to fall back to",
    )
    require(
        cfg.init_from is None or bool(cfg.init_from),
        "trainer.init_from",
        cfg.init_from,
        "null or a checkpoint file or run directory",
    )
    require(
        cfg.max_consecutive_skips >= 1,
        "trainer.max_consecutive_skips",
        cfg.max_consecutive_skips,
        "at least 1",
    )
