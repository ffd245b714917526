"""Small trained checkpoints for the tests of inference and the commands built on it."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from lm1b.config import compose_config
from lm1b.training.distributed import DistContext
from lm1b.training.setup import build_trainer

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def train_tiny(run_dir: Path, overrides: list[str], steps: int) -> Path:
    """Train `steps` steps in this process; return the run directory (its checkpoint inside).

    One checkpoint, at the end, unless `overrides` (which win) say otherwise. The checkpoint
    carries the whole resolved config, as `python -m lm1b.train` writes it.
    """
    cfg = compose_config([f"trainer.max_steps={steps}", "trainer.checkpoint_every=0", *overrides])
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    trainer = build_trainer(cfg, CPU, run_dir, container, config_yaml="")
    trainer.fit()
    if trainer.metrics is not None:
        trainer.metrics.close()
    return run_dir


def train_tiny_run(run_dir: Path, overrides: list[str]) -> Path:
    """4 steps of the tiny model with an EMA, checkpoints at steps 2 and 4, validated at 4."""
    extra = [
        "optim.ema_decay=0.9",
        "trainer.checkpoint_every=2",
        "trainer.val_every=4",
        "logger.tensorboard=false",  # importing TensorBoard alone takes seconds
    ]
    return train_tiny(run_dir, [*overrides, *extra], steps=4)
