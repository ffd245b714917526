"""Schema of `configs/evaluate.yaml` (`python -m lm1b.evaluate checkpoint=PATH ...`).

Everything about the model and its tokenizer comes from the checkpoint; this config only says
which checkpoint, which weights, which text and how to batch it. Registered in Hydra's
ConfigStore as `evaluate_schema`, so a typo in an override fails when the config is composed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lm1b.config.checks import ConfigError, require
from lm1b.config.trainer import DEVICES

EVAL_FILE = "eval.json"  # the report `lm1b.evaluate` writes in its run directory

# Tokens per pass over the full softmax's (V, p) weight; the pass's logit blocks are
# (tokens_per_pass, 32,768) float32: 256 MiB at 2,048, whatever V.
DEFAULT_TOKENS_PER_PASS = 2048

# The standard LM1B test set: this one heldout shard, relative to the corpus root.
STANDARD_TEST_FILES = "heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"


@dataclass
class EvalDataConfig:
    root: str | None = None  # null: the checkpoint's data.root
    test_files: Any = None  # a glob or list of globs under root; null: STANDARD_TEST_FILES


@dataclass
class EvaluateConfig:
    checkpoint: str = MISSING  # a checkpoint file, or a run / checkpoints directory
    use_ema: bool = True  # evaluate the EMA weights when the checkpoint has them
    device: str = "auto"
    # The text is cut into `num_streams` contiguous rows, each scored with its LSTM state
    # carried across windows and sentences; this fixes the result (null: the checkpoint's
    # data.eval_batch_size, the trainer's validation layout).
    num_streams: int | None = None
    # Rows per forward pass (null: all streams at once); changes speed and memory only.
    batch_size: int | None = None
    # Tokens scored together per pass over the vocabulary (their hidden states collected over
    # windows); changes speed and memory only.
    tokens_per_pass: int = DEFAULT_TOKENS_PER_PASS
    tf32: bool = True  # CUDA only: fp32 matmuls on TF32 tensor cores (no effect on a CPU)
    progress_bar: bool = True
    data: EvalDataConfig = field(default_factory=EvalDataConfig)


def register_evaluate_config() -> None:
    """Register the schema under the name `evaluate_schema` (idempotent)."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def validate_evaluate_config(cfg: EvaluateConfig) -> EvaluateConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    if not cfg.checkpoint:
        raise ConfigError(
            "checkpoint is required: pass checkpoint=PATH (a checkpoint file or a run directory)"
        )
    require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    for name in ("num_streams", "batch_size"):
        value = getattr(cfg, name)
        require(value is None or value >= 1, name, value, "null or at least 1")
    require(cfg.tokens_per_pass >= 1, "tokens_per_pass", cfg.tokens_per_pass, "at least 1")
    return cfg
