"""A small trained checkpoint for the commands built on inference (score, generate, compress)."""

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

    The checkpoint carries the whole resolved config, as `python -m lm1b.train` writes it.
    """
    cfg = compose_config([*overrides, f"trainer.max_steps={steps}", "trainer.checkpoint_every=0"])
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    trainer = build_trainer(cfg, CPU, run_dir, container, config_yaml="")
    trainer.fit()
    if trainer.metrics is not None:
        trainer.metrics.close()
    return run_dir
