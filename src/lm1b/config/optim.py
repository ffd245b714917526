"""Optimizer config group (configs/optim/*.yaml): the recipe's Adagrad, or Adam for small data."""

from __future__ import annotations

from dataclasses import dataclass

from lm1b.config.checks import require

OPTIMIZERS = ("adagrad", "adam")
TABLE_OPTIMIZERS = ("adagrad", "adam")


@dataclass
class OptimConfig:
    name: str = "adagrad"
    lr: float = 0.2
    initial_accumulator: float = 1.0  # Adagrad only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam only
    # The vocabulary tables' optimizer. Row-sparse Adagrad by default, whatever `name` is: with
    # sampled softmax, (Sparse)Adam's sign-normalised first steps push a rare word's rows up
    # by a full lr per coordinate while it is almost never sampled as a negative, and the
    # full-softmax perplexity explodes (measured: docs/benchmarks.md, "Optimizers").
    tables: str = "adagrad"
    table_lr: float = 0.2
    max_grad_norm: float = 1.0  # global norm over the LSTM weights only; 0 disables
    ema_decay: float = 0.999  # EMA of the LSTM weights used for validation; 0 disables
    # Quirks of the original code, needed for Adagrad at lr 0.2 to behave as in the paper:
    scale_loss_by_num_steps: bool = True  # loss multiplied by T before differentiation
    scale_embedding_grad_by_batch: bool = True  # embedding gradient multiplied by the batch


def validate_optim(cfg: OptimConfig) -> None:
    """Check the optimizer fields; raise ConfigError naming the field."""
    require(cfg.name in OPTIMIZERS, "optim.name", cfg.name, f"one of {list(OPTIMIZERS)}")
    require(cfg.lr > 0, "optim.lr", cfg.lr, "greater than 0")
    require(
        cfg.initial_accumulator >= 0,
        "optim.initial_accumulator",
        cfg.initial_accumulator,
        "0 or more",
    )
    require(all(0.0 <= b < 1.0 for b in cfg.betas), "optim.betas", cfg.betas, "each in [0, 1)")
    tables = list(TABLE_OPTIMIZERS)
    require(cfg.tables in TABLE_OPTIMIZERS, "optim.tables", cfg.tables, f"one of {tables}")
    require(cfg.table_lr > 0, "optim.table_lr", cfg.table_lr, "greater than 0")
    require(cfg.max_grad_norm >= 0, "optim.max_grad_norm", cfg.max_grad_norm, "0 (off) or more")
    require(0.0 <= cfg.ema_decay < 1.0, "optim.ema_decay", cfg.ema_decay, "in [0, 1) (0 = off)")
