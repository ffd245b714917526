"""Data config group (configs/data/*.yaml): where the shards are, tokenization and batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm1b.config.checks import ConfigError, require

TOKENIZERS = ("word", "sentencepiece")


@dataclass
class DataConfig:
    # Shard locations: a glob or a list of globs, relative to `root` unless absolute.
    root: str = "data/lm1b"
    train_files: Any = None
    valid_files: Any = None
    test_files: Any = None
    # Word vocabulary in the standard "word count" format; built from train_files when missing
    # (null: built into the run directory, so a run is self-contained).
    vocab_file: str | None = None
    vocab_min_count: int = 3  # 3 on the full corpus gives the standard 793,471 entries
    vocab_max_size: int | None = None
    # "word" uses vocab_file; "sentencepiece" uses spm_model (trained on train_files if missing;
    # null: trained into the run directory).
    tokenizer: str = "word"
    spm_model: str | None = None
    spm_vocab_size: int = 32000
    batch_size: int = 1024  # sequences per step over all ranks (split evenly across ranks)
    num_steps: int = 20  # BPTT window T
    eval_batch_size: int = 64  # sequences per evaluation step on each rank
    num_workers: int = 0  # loader worker processes per rank
    max_line_tokens: int = 10000  # longer lines are truncated with a warning (bounded memory)


def _is_globs(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, str) and v for v in value)
    )


def validate_data(cfg: DataConfig, world_size: int = 1) -> None:
    """Check the data fields; raise ConfigError naming the field and the allowed values."""
    require(
        _is_globs(cfg.train_files),
        "data.train_files",
        cfg.train_files,
        "a glob or a non-empty list of globs (relative to data.root)",
    )
    for name in ("valid_files", "test_files"):
        value = getattr(cfg, name)
        require(
            value is None or _is_globs(value),
            f"data.{name}",
            value,
            "null, a glob, or a non-empty list of globs",
        )
    require(cfg.tokenizer in TOKENIZERS, "data.tokenizer", cfg.tokenizer, f"one of {TOKENIZERS}")
    require(cfg.vocab_min_count >= 1, "data.vocab_min_count", cfg.vocab_min_count, "at least 1")
    require(
        cfg.vocab_max_size is None or cfg.vocab_max_size >= 4,
        "data.vocab_max_size",
        cfg.vocab_max_size,
        "null or at least 4 (the three specials and one word)",
    )
    require(cfg.num_steps >= 1, "data.num_steps", cfg.num_steps, "at least 1")
    require(cfg.batch_size >= 1, "data.batch_size", cfg.batch_size, "at least 1")
    if cfg.batch_size % world_size != 0:
        raise ConfigError(
            f"data.batch_size={cfg.batch_size} is invalid: it is the global batch and must be "
            f"divisible by the number of ranks ({world_size})"
        )
    require(cfg.eval_batch_size >= 1, "data.eval_batch_size", cfg.eval_batch_size, "at least 1")
    require(cfg.num_workers >= 0, "data.num_workers", cfg.num_workers, "0 or more")
    require(cfg.max_line_tokens >= 1, "data.max_line_tokens", cfg.max_line_tokens, "at least 1")
