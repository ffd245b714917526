"""Every command's run directory: the run id that names it (the same on every rank of a run
and across its restarts), the resolvers the Hydra configs use, and a Hydra callback that
checks the directory before Hydra creates it or writes its `.hydra/` files.

A path that is a regular file, or on a full disk, ends the command in one line (Hydra would
print a traceback, or an error naming no file). A directory that already holds a run keeps
its first composed config in `.hydra/` and each later start's in `.hydra/<time>/`, so that a
resume, or a start refused for changed settings, never overwrites the record of the run that
is in the checkpoints."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from lm1b.config import ConfigError

# Less than this free means Hydra cannot even write the composed config and the log.
_MIN_FREE_BYTES = 2**20


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def run_id() -> str:
    """The same string on every rank of one run, and across its restarts."""
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if elastic != "none":
        return f"torchrun-{elastic}"
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{task}" if task else "")
    if world_size() > 1:
        raise ConfigError(
            "several ranks but no shared run id: pass hydra.run.dir=<dir>, or start torchrun with "
            "--standalone or --rdzv-id=<id>"
        )
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def register_resolvers() -> None:
    resolvers = {
        "lm1b_run_id": run_id,
        # Only rank 0 saves .hydra/; each rank logs to its own file.
        "lm1b_output_subdir": lambda: ".hydra" if rank() == 0 else None,
        "lm1b_log_suffix": lambda: "" if rank() == 0 else f"_rank{rank()}",
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


class RunDirectoryCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir, command = Path(config.hydra.run.dir), f"lm1b.{config.hydra.job.name}"
        if run_dir.exists() and not run_dir.is_dir():
            sys.exit(
                f"{command}: hydra.run.dir={run_dir} is a file, not a directory: pass a "
                "directory (new or holding a run)"
            )
        existing = next(p for p in (run_dir.absolute(), *run_dir.absolute().parents) if p.exists())
        if shutil.disk_usage(existing).free < _MIN_FREE_BYTES:
            sys.exit(f"{command}: the disk holding hydra.run.dir={run_dir} is full")
        subdir = config.hydra.output_subdir
        if subdir is not None and (run_dir / subdir / "config.yaml").is_file():
            with open_dict(config):
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
                config.hydra.output_subdir = f"{subdir}/{stamp}"
