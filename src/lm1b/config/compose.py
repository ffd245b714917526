"""Compose Hydra configs without `@hydra.main`, for commands that make no run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lm1b.config.checks import ConfigError
from lm1b.config.schema import TrainConfig, validate_config

Schema = TypeVar("Schema")


def _find_config_dir() -> Path:
    """configs/ of the checkout this package was installed from (editable install)."""
    override = os.environ.get("LM1B_CONFIG_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[3] / "configs"


CONFIG_DIR = _find_config_dir()


def compose_schema(name: str, schema: type[Schema], overrides: list[str] | None = None) -> Schema:
    """`configs/<name>.yaml` (whose defaults list `<name>_schema` first) composed with
    `overrides`, as an instance of `schema`; a required field left unset raises ConfigError."""
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        raise FileNotFoundError(
            f"no {name}.yaml in {CONFIG_DIR}; set LM1B_CONFIG_DIR to the project's configs/"
        )
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)
    if GlobalHydra.instance().is_initialized():
        # Inside a running @hydra.main app (bench, table), already initialised on configs/:
        # initialising a second time would fail, so compose with the running instance.
        dict_cfg = compose(config_name=name, overrides=list(overrides or []))
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            dict_cfg = compose(config_name=name, overrides=list(overrides or []))
    missing = sorted(OmegaConf.missing_keys(dict_cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} required: pass " + " ".join(f"{key}=..." for key in missing)
        )
    return OmegaConf.to_object(dict_cfg)


def compose_config(overrides: list[str] | None = None, world_size: int = 1) -> TrainConfig:
    """`configs/train.yaml` composed with Hydra overrides; the validated TrainConfig."""
    return validate_config(compose_schema("train", TrainConfig, overrides), world_size=world_size)
