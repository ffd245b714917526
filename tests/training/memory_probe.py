"""Run as a script: build a trainer from the Hydra overrides given as arguments, take three
steps, save a checkpoint, and print the process's memory as JSON (bytes): the resident set
before the build and after it, and its peak during the steps and during the save (Linux:
/proc/self/status, VmHWM reset before each)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def main() -> None:
    from lm1b.config import compose_config
    from lm1b.training.distributed import DistContext
    from lm1b.training.loop import Votes
    from lm1b.training.setup import build_trainer

    torch.set_num_threads(1)
    cfg = compose_config(sys.argv[1:])
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    report = {"before": _status("VmRSS")}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, ctx, Path(run_dir), {}, config_yaml="")
        report["built"] = _status("VmRSS")
        _reset_peak()
        batches = iter(trainer.loader)
        for step in range(1, 4):
            result = trainer.steps.run(next(batches), step, Votes(0.0, 0.0, 0.0, 0.0))
            assert not result.skipped
        report["steps_peak"] = _status("VmHWM")
        _reset_peak()
        trainer.save_checkpoint()
        report["save_peak"] = _status("VmHWM")
        trainer.metrics.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
