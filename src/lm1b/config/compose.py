"""Compose the Hydra config without `@hydra.main`, for commands that make no run directory."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lm1b.config.schema import TrainConfig, register_configs, validate_config


def _find_config_dir() -> Path:
    """configs/ of the checkout this package was installed from (editable install)."""
    override = os.environ.get("LM1B_CONFIG_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[3] / "configs"


CONFIG_DIR = _find_config_dir()


def compose_config(
    overrides: list[str] | None = None, config_name: str = "train", world_size: int = 1
) -> TrainConfig:
    """Compose `configs/<config_name>.yaml` with Hydra overrides; return the validated object."""
    if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(
            f"no {config_name}.yaml in {CONFIG_DIR}; set LM1B_CONFIG_DIR to the project's configs/"
        )
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(config_name=config_name, overrides=list(overrides or []))
    cfg = OmegaConf.to_object(dict_cfg)
    return validate_config(cfg, world_size=world_size)
