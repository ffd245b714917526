"""Building the data streams from the `data` config group: what the trainer and evaluator call.

Typical use (the trainer):

    files = resolve_data_files(cfg.data)           # at start-up, before any model is built
    tokenizer = lm1b.tokenizer.build_tokenizer(cfg.data, files["train"], cache_dir)
    train = build_train_loader(cfg.data, files["train"], tokenizer, seed=cfg.seed,
                               rank=rank, world_size=world_size)
    train.load_state_dict(checkpoint["data"])      # when resuming
    for batch in train: ...                        # endless; checkpoint["data"] = train.state_dict()
    valid = build_eval_stream(cfg.data, files["valid"], tokenizer, rank=rank, world_size=world_size)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lm1b.config.data import DataConfig
from lm1b.data.eval_stream import EvalStream
from lm1b.data.files import resolve_files
from lm1b.data.train_loader import TrainLoader
from lm1b.tokenizer import Tokenizer

SPLITS = ("train", "valid", "test")


def resolve_data_files(cfg: DataConfig) -> dict[str, list[Path]]:
    """The files of every configured split ("train", and "valid"/"test" when set); raises
    FileNotFoundError naming the field and pattern when a glob matches no file."""
    files = {}
    for split in SPLITS:
        patterns = getattr(cfg, f"{split}_files")
        if patterns is not None:
            files[split] = resolve_files(patterns, cfg.root, f"data.{split}_files")
    return files


def build_train_loader(
    cfg: DataConfig,
    files: Sequence[Path],
    tokenizer: Tokenizer,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> TrainLoader:
    """The rank's training stream: `cfg.batch_size // world_size` rows of `cfg.num_steps`."""
    if cfg.batch_size % world_size:
        raise ValueError(f"data.batch_size={cfg.batch_size} is not divisible by {world_size} ranks")
    return TrainLoader(
        files,
        tokenizer,
        batch_size=cfg.batch_size // world_size,
        num_steps=cfg.num_steps,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=cfg.num_workers,
        max_line_tokens=cfg.max_line_tokens,
        pin_memory=pin_memory,
    )


def build_eval_stream(
    cfg: DataConfig,
    files: Sequence[Path],
    tokenizer: Tokenizer,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> EvalStream:
    """The rank's evaluation stream: `cfg.eval_batch_size` rows of `cfg.num_steps`."""
    return EvalStream(
        files,
        tokenizer,
        batch_size=cfg.eval_batch_size,
        num_steps=cfg.num_steps,
        rank=rank,
        world_size=world_size,
        max_line_tokens=cfg.max_line_tokens,
    )
