"""Schema of `configs/table.yaml` (`python -m lm1b.table [budget_seconds=S] [key=value ...]`).

Every variant is trained by `python -m lm1b.train` for the same training wall-clock budget on
the same data with the same seed, then evaluated by `python -m lm1b.evaluate` on the data
config's test files. Registered in Hydra's ConfigStore as `table_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from lm1b.config.bench import VARIANTS
from lm1b.config.checks import require

# The benchmark's variants, plus BIGLSTM trained with the full softmax: the reference that
# shows what sampling costs (or gains) in perplexity at the sample's 9,082-word vocabulary.
TABLE_VARIANTS = (*VARIANTS, "biglstm_full_softmax")


@dataclass
class SharedTraining:
    """What every variant's training run shares: the training config groups (configs/size,
    configs/data, configs/optim), the seed and any further training overrides. (A node of its
    own because `size=`, `data=` and `optim=` at the top would name Hydra config groups.)"""

    # The small-data preset (configs/size/small.yaml) with the recipe's Adagrad.
    size: str = "small"
    data: str = "sample"
    optim: str = "adagrad"
    seed: int = 1
    overrides: list[str] = field(default_factory=list)  # e.g. ['data.root=DIR'] (quoted)


@dataclass
class TableConfig:
    budget_seconds: float = 600.0  # training wall-clock per variant (trainer.max_time)
    variants: list[str] = field(default_factory=lambda: list(TABLE_VARIANTS))
    train: SharedTraining = field(default_factory=SharedTraining)
    # The perplexity curve: a validation every `val_every` steps on the first
    # `val_max_batches` windows of every validation row (null: the whole validation set).
    # The defaults are size=small's: they also choose the best checkpoint that is evaluated.
    val_every: int = 200
    val_max_batches: int | None = 40
    log_every: int = 50  # must divide val_every: each validation step then has a timed log line
    eval_batch_size: int | None = None  # rows per forward pass of the final evaluation
    # Intra-op threads of each training and evaluation process (OMP_NUM_THREADS; null: torch's
    # default). 1 keeps a shared, oversubscribed CPU from stalling multi-threaded steps.
    threads: int | None = None


def register_table_config() -> None:
    """Register the schema under the name `table_schema` (idempotent)."""
    ConfigStore.instance().store(name="table_schema", node=TableConfig)


def validate_table_config(cfg: TableConfig) -> TableConfig:
    """Check the fields; raise ConfigError naming the field and the allowed values."""
    require(cfg.budget_seconds > 0, "budget_seconds", cfg.budget_seconds, "greater than 0")
    unknown = [v for v in cfg.variants if v not in TABLE_VARIANTS]
    require(
        bool(cfg.variants) and not unknown,
        "variants",
        cfg.variants,
        f"a subset of {list(TABLE_VARIANTS)}",
    )
    require(cfg.val_every >= 1, "val_every", cfg.val_every, "at least 1")
    require(
        cfg.log_every >= 1 and cfg.val_every % cfg.log_every == 0,
        "log_every",
        cfg.log_every,
        f"at least 1 and a divisor of val_every={cfg.val_every}",
    )
    for name in ("val_max_batches", "eval_batch_size", "threads"):
        value = getattr(cfg, name)
        require(value is None or value >= 1, name, value, "null or at least 1")
    return cfg
