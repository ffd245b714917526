"""A Hydra callback that checks a command's run directory before Hydra creates it or writes
its `.hydra/` files: a path that is a regular file, or on a full disk, ends the command in one
line (Hydra would print a traceback, or an error naming no file), and a directory that already holds a run keeps its first composed config
in `.hydra/`, each later start's in `.hydra/<time>/` (so that a resume, or a start refused for
changed settings, never overwrites the record of the run that is in the checkpoints)."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

# Less than this free means Hydra cannot even write the composed config and the log.
_MIN_FREE_BYTES = 2**20


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
