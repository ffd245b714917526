"""`python -m lm1b.train experiment=<name> [size=cpu|tiny] [key=value ...]`: train a model.

The same command runs on one CPU, one GPU, under `torchrun` (one node or several) and under
SLURM (`srun`, or Hydra's submitit launcher). Every rank resolves the same run directory:
`hydra.run.dir` when given, else one keyed by torchrun's run id or the SLURM job id, so an
elastic restart or a requeued job finds its checkpoints; a single process gets a timestamp.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm1b.commands.run_directory import rank, register_resolvers, world_size
from lm1b.config import CONFIG_DIR, ConfigError, register_configs, validate_config
from lm1b.training.checkpoint import CheckpointError
from lm1b.training.distributed import init_distributed, shutdown_distributed
from lm1b.training.loop import TrainingDataError
from lm1b.training.preemption import PREEMPTED_EXIT_CODE, requeue_before_any_rank_exits
from lm1b.training.run_lock import RunDirectoryInUse, RunDirectoryLock
from lm1b.training.setup import build_trainer
from lm1b.vocab import VocabularyError

logger = logging.getLogger("lm1b.train")


def _train(dict_cfg: DictConfig) -> int:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = validate_config(OmegaConf.to_object(dict_cfg), world_size=world_size())
    # Rank 0 holds the run directory for the whole job; a second trainer there stops here.
    with RunDirectoryLock(run_dir) if rank() == 0 else nullcontext():
        return _train_locked(cfg, dict_cfg, run_dir)


def _train_locked(cfg, dict_cfg: DictConfig, run_dir: Path) -> int:
    ctx = init_distributed(cfg.trainer.device)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        container = OmegaConf.to_container(dict_cfg, resolve=True)
        trainer = build_trainer(cfg, ctx, run_dir, container, OmegaConf.to_yaml(dict_cfg))
        reason = trainer.fit()
        if trainer.metrics is not None:
            trainer.metrics.close()
        if reason == "signal":  # needs the process group: its barrier
            requeue_before_any_rank_exits(trainer.requeue, ctx.rank, ctx.barrier)
    finally:
        shutdown_distributed()
    if reason == "signal":
        return PREEMPTED_EXIT_CODE
    logger.info(
        "finished (%s) at step %d; run directory %s", reason, trainer.counters.step, run_dir
    )
    return 0


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    try:
        code = _train(dict_cfg)
    except (
        ConfigError,
        OSError,  # a missing file, a full disk: named in the error
        CheckpointError,
        VocabularyError,
        RunDirectoryInUse,
        TrainingDataError,
    ) as error:
        logger.error("%s", error)
        sys.exit(f"lm1b.train: {error}")
    if code:
        sys.exit(code)


register_configs()
register_resolvers()

if __name__ == "__main__":
    main()
