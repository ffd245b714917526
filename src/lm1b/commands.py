"""Typed options for the commands that are not training runs (score, generate, compress, plan).

Each command has a dataclass schema registered in Hydra's ConfigStore as `<name>_schema` and a
`configs/<name>.yaml` that lists it first in its defaults, so `key=value` arguments are checked
when they are composed: an unknown key or a wrong type fails with Hydra's message. Composition
uses Hydra's compose API, so these commands make no run directory and leave stdout to results.
"""

from __future__ import annotations

from typing import TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lm1b.config import CONFIG_DIR, ConfigError

Schema = TypeVar("Schema")


def compose_command(name: str, schema: type[Schema], overrides: list[str]) -> Schema:
    """`configs/<name>.yaml` composed with `overrides`, as an instance of `schema`; a required
    field left unset raises ConfigError naming it."""
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        raise FileNotFoundError(
            f"no {name}.yaml in {CONFIG_DIR}; set LM1B_CONFIG_DIR to the project's configs/"
        )
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(config_name=name, overrides=list(overrides))
    missing = sorted(OmegaConf.missing_keys(dict_cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} required: pass " + " ".join(f"{key}=..." for key in missing)
        )
    return OmegaConf.to_object(dict_cfg)
