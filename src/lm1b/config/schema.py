"""The root schema: one typed node per config group, registered in Hydra's ConfigStore.

`configs/train.yaml` lists `train_schema` first in its defaults, so every group file is merged
onto these dataclasses: an unknown key or a wrong type fails when the config is composed.
Rules that relate several fields are checked by `validate_config` after composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from lm1b.config.checks import require
from lm1b.config.data import DataConfig, validate_data
from lm1b.config.logger import LoggerConfig
from lm1b.config.model import ModelConfig, validate_model
from lm1b.config.optim import OptimConfig, validate_optim
from lm1b.config.trainer import TrainerConfig, validate_trainer


@dataclass
class TestingConfig:
    """Fault injection for the reliability tests; all off by default."""

    crash_at_step: int | None = None  # raise after this step (only on the first torchrun attempt)
    nan_at_step: int | None = None  # make this step's loss NaN
    nan_every_step: bool = False  # make every loss NaN (a NaN storm)
    nan_on_rank: int | None = None  # restrict the NaN to one rank (None: every rank)
    sleep_per_step: float = 0.0  # seconds; lets a test signal a run mid-way
    check_replicas: bool = False  # after every step, fail unless all ranks hold equal weights


@dataclass
class TrainConfig:
    name: str = "biglstm"  # the experiment's name; names the run directory
    seed: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    testing: TestingConfig = field(default_factory=TestingConfig)


def register_configs() -> None:
    """Register the root schema under the name `train_schema` (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def validate_config(cfg: TrainConfig, world_size: int = 1) -> TrainConfig:
    """Check every group and the rules between groups; return `cfg` unchanged."""
    require(cfg.seed >= 0, "seed", cfg.seed, "0 or more")
    validate_model(cfg.model)
    validate_data(cfg.data, world_size=world_size)
    validate_optim(cfg.optim)
    validate_trainer(cfg.trainer)
    return cfg
