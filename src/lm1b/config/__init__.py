"""Typed configuration: one dataclass schema per Hydra config group, plus cross-field checks."""

from lm1b.config.checks import ConfigError
from lm1b.config.compose import CONFIG_DIR, compose_config
from lm1b.config.schema import TrainConfig, register_configs, validate_config

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "TrainConfig",
    "compose_config",
    "register_configs",
    "validate_config",
]
