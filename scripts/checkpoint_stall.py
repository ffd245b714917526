"""How long a checkpoint stalls training, written in the step and in the background.

Builds a trainer from the Hydra overrides given (a vocabulary file large enough to make the
checkpoint the size of interest) on the GPU if there is one, else on the CPU, takes one step,
then times `Trainer.save_checkpoint` three times each way: synchronously (the step waits for
the disk) and with `async_checkpoint` (the step waits for the host copy; the write goes on in
the background, timed separately). On a GPU the first background save also allocates the
pinned buffers the later ones reuse, so it is reported on its own, and the copy rate is the
checkpoint's size over the median background stall.

    python scripts/checkpoint_stall.py experiment=biglstm size=cpu data.vocab_file=V.txt ...
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lm1b.config import compose_config
from lm1b.training.distributed import DistContext
from lm1b.training.loop import Votes
from lm1b.training.setup import build_trainer


def main() -> None:
    torch.set_num_threads(2)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    cfg = compose_config([*sys.argv[1:], "trainer.async_checkpoint=true", "trainer.keep_last=2"])
    stalls: dict[str, list[float]] = {"sync": [], "async": [], "background_write": []}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as run_dir:
        trainer = build_trainer(cfg, ctx, Path(run_dir), {}, config_yaml="")
        trainer.steps.run(next(iter(trainer.loader)), 1, Votes(0.0, 0.0, 0.0, 0.0))
        for _ in range(3):
            started = time.perf_counter()
            trainer.save_checkpoint(now=True)
            stalls["sync"].append(time.perf_counter() - started)
            started = time.perf_counter()
            trainer.save_checkpoint()
            copied = time.perf_counter()
            trainer.writer.finish()
            stalls["async"].append(copied - started)
            stalls["background_write"].append(time.perf_counter() - copied)
        size = max(p.stat().st_size for p in (Path(run_dir) / "checkpoints").glob("*.pt"))
        trainer.metrics.close()
    medians = {k: statistics.median(v) for k, v in stalls.items()}
    report = {
        "device": str(device),
        "checkpoint_bytes": size,
        "median_seconds": medians,
        "first_async_seconds": stalls["async"][0],
        "host_copy_gb_per_s": size / 1e9 / medians["async"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
