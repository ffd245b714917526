"""Model config group (configs/model/*.yaml): which LSTMP variant and its sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm1b.config.checks import ConfigError, require

# biglstm: our fused LSTMP stack with a dense gate map (the recipe's BIGLSTM).
# biglstm_cudnn: torch.nn.LSTM(proj_size=...), the cuDNN-backed baseline a user would pick.
# flstm: gate map factorized as W2 (W1 [x, h]) with rank factor_rank.
# glstm: gate map split into num_groups independent groups (an int, or one per layer).
MODEL_TYPES = ("biglstm", "biglstm_cudnn", "flstm", "glstm")


@dataclass
class ModelConfig:
    type: str = "biglstm"
    # Vocabulary size V; null means "take it from the vocabulary file when the model is built".
    vocab_size: int | None = None
    num_layers: int = 2
    state_size: int = 8192  # n: LSTM cell width
    projection_size: int = 1024  # p: projected output width, also the embedding width e
    factor_rank: int | None = None  # r, used by flstm only
    num_groups: Any = 1  # k, used by glstm only: an int, or a list with one k per layer
    # Sampled-softmax candidates per step, shared by the batch; 0 trains with the full softmax
    # (dense softmax gradients: for small vocabularies such as the sample's or a 32K subword one).
    num_sampled: int = 8192
    dropout: float = 0.1  # 1 - keep_prob; on the embedding output and after every layer
    # The embedding and softmax weight tables start as U(-table_init, table_init); null: f-lm's
    # U(-sqrt(3/V), sqrt(3/V)), tiny at any real vocabulary (0.018 at V = 9,082).
    table_init: float | None = None
    forget_bias: float = 1.0
    sparse_embedding: bool = True  # row-sparse gradients for the embedding table

    def groups_per_layer(self) -> list[int]:
        """The group count of each layer: [1, 1] unless this is a (hierarchical) G-LSTM."""
        if self.type != "glstm":
            return [1] * self.num_layers
        if isinstance(self.num_groups, int):
            return [self.num_groups] * self.num_layers
        return [int(k) for k in self.num_groups]


def _check_groups(cfg: ModelConfig) -> None:
    groups = cfg.num_groups
    if isinstance(groups, bool) or not isinstance(groups, (int, list, tuple)):
        raise ConfigError(
            f"model.num_groups={groups!r} is invalid: an int or a list of ints, one per layer"
        )
    if isinstance(groups, (list, tuple)):
        require(
            len(groups) == cfg.num_layers and all(isinstance(k, int) for k in groups),
            "model.num_groups",
            list(groups),
            f"a list needs one int per layer (model.num_layers={cfg.num_layers})",
        )
    divisors = [d for d in range(1, cfg.projection_size + 1) if _divides(d, cfg)]
    for k in cfg.groups_per_layer():
        require(
            k >= 1 and _divides(k, cfg),
            "model.num_groups",
            groups,
            f"each k must divide model.state_size={cfg.state_size} and "
            f"model.projection_size={cfg.projection_size}; allowed: {divisors}",
        )


def _divides(k: int, cfg: ModelConfig) -> bool:
    return k >= 1 and cfg.state_size % k == 0 and cfg.projection_size % k == 0


def validate_model(cfg: ModelConfig) -> None:
    """Check the model fields against each other; raise ConfigError naming the field."""
    require(cfg.type in MODEL_TYPES, "model.type", cfg.type, f"one of {list(MODEL_TYPES)}")
    require(cfg.num_layers >= 1, "model.num_layers", cfg.num_layers, "at least 1")
    require(cfg.state_size >= 1, "model.state_size", cfg.state_size, "at least 1")
    require(cfg.projection_size >= 1, "model.projection_size", cfg.projection_size, "at least 1")
    require(
        0.0 <= cfg.dropout < 1.0, "model.dropout", cfg.dropout, "in [0, 1) (dropout = 1 - keep)"
    )
    require(
        cfg.table_init is None or cfg.table_init > 0,
        "model.table_init",
        cfg.table_init,
        "null (f-lm's sqrt(3/V)) or greater than 0",
    )
    if cfg.type == "flstm":
        two_p = 2 * cfg.projection_size
        require(
            cfg.factor_rank is not None and 0 < cfg.factor_rank <= two_p,
            "model.factor_rank",
            cfg.factor_rank,
            f"an int with 0 < r <= 2 * model.projection_size = {two_p}",
        )
    if cfg.type == "glstm":
        _check_groups(cfg)
    require(cfg.num_sampled >= 0, "model.num_sampled", cfg.num_sampled, "0 (full softmax) or more")
    if cfg.vocab_size is not None:
        require(cfg.vocab_size >= 4, "model.vocab_size", cfg.vocab_size, "at least 4 (or null)")
        require(
            cfg.num_sampled < cfg.vocab_size,
            "model.num_sampled",
            cfg.num_sampled,
            f"fewer than model.vocab_size={cfg.vocab_size}",
        )
