"""`python -m lm1b.table [budget_seconds=180]`: the paper's table, on data this machine can train.

Every variant is trained by `python -m lm1b.train` for the same training wall-clock budget
(`trainer.max_time`; validation time excluded) on the same data with the same seed, then
evaluated by `python -m lm1b.evaluate` on the data config's test files (the shared sample's
heldout shard 11 by default). Writes into the run directory (`hydra.run.dir` when given, else
outputs/table/<run id>): `runs/<variant>/` (each training run, its `eval/eval.json` and the
commands' output), `table.md` (the paper's columns: model, perplexity, RNN parameters,
words/sec, steps, with the paper's perplexity beside ours), `table.json`, and `table.png`
(validation perplexity against training time for every variant, and words/sec bars).
Variants run one after another, so on a shared machine their words/sec carry its noise: for
speed ratios use `python -m lm1b.bench`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lm1b.atomic_files import write_json_atomically
from lm1b.benchmark.plot import plot_table
from lm1b.benchmark.runs import VariantResult, run_variant, variant_training_overrides
from lm1b.benchmark.timing import device_name
from lm1b.commands.run_directory import register_resolvers
from lm1b.config import CONFIG_DIR, ConfigError, compose_config
from lm1b.config.table import TableConfig, register_table_config, validate_table_config
from lm1b.inference import resolve_device
from lm1b.reference import PAPER_PERPLEXITY, SAMPLE_KNESER_NEY_PERPLEXITY

logger = logging.getLogger("lm1b.table")


def describe_setup(cfg: TableConfig, results: list[VariantResult]) -> str:
    """The caption: what was trained, on what, how it was scored, and where."""
    shared = cfg.train
    train_cfg = compose_config([*variant_training_overrides(cfg, "biglstm"), *shared.overrides])
    m, d, o = train_cfg.model, train_cfg.data, train_cfg.optim
    device = resolve_device(train_cfg.trainer.device)
    threads = "default threads" if cfg.threads is None else f"{cfg.threads} thread(s)"
    machine = (
        f"{device_name(device)} ({os.cpu_count()} CPUs, {threads} per run), "
        f"torch {torch.__version__}"
    )
    extra = f" {' '.join(shared.overrides)}" if shared.overrides else ""
    weights = "EMA weights" if o.ema_decay else "raw weights (no EMA with this optimizer)"
    return (
        f"Each variant trained for {cfg.budget_seconds:g} s of training wall-clock (validation "
        f"excluded) by `python -m lm1b.train experiment=<variant> {_groups(cfg)} "
        f"seed={shared.seed}{extra}`: n {m.state_size}, p {m.projection_size}, r {m.factor_rank}, "
        f"V {results[0].vocab_size:,}, {m.num_sampled} sampled, B {d.batch_size}, "
        f"T {d.num_steps}; {o.name} (lr {o.lr:g}) for the LSTM weights and {o.tables} "
        f"(lr {o.table_lr:g}) for the vocabulary tables. One variant after another on "
        f"{machine}, {date.today()}. Perplexity: full softmax per predicted token on "
        f"{_names(d.test_files)} by `python -m lm1b.evaluate`, {weights}, of the best checkpoint "
        f"(a validation every {cfg.val_every} steps on the first {cfg.val_max_batches or 'all'} "
        "windows of each validation row). words/sec = steps x B x T / training seconds. "
        "Paper: v3, one week on 4x V100 with the full corpus."
    )


def _groups(cfg: TableConfig) -> str:
    return f"size={cfg.train.size} data={cfg.train.data} optim={cfg.train.optim}"


def _names(files) -> str:
    return ", ".join(Path(f).name for f in ([files] if isinstance(files, str) else files))


def format_markdown(results: list[VariantResult], kneser_ney: float | None = None) -> str:
    """The table's rows as a Markdown table; `kneser_ney`, the n-gram baseline on the same
    text, as a last row when given."""
    lines = [
        "| model | perplexity | RNN parameters | words/sec | steps | best at step "
        "| paper perplexity |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        paper = PAPER_PERPLEXITY.get(r.name)
        lines.append(
            f"| {r.name} | {r.perplexity:.1f} | {r.rnn_params:,} | {r.words_per_sec:,.0f} | "
            f"{r.steps:,} | {r.best_step:,} | {'-' if paper is None else paper} |"
        )
    if kneser_ney is not None:
        lines.append(f"| Kneser-Ney 5-gram (KenLM) | {kneser_ney} | - | - | - | - | 67.6 |")
    return "\n".join(lines)


def write_outputs(cfg: TableConfig, results: list[VariantResult], out_dir: Path) -> str:
    """table.md, table.json and table.png; returns the Markdown."""
    caption = describe_setup(cfg, results)
    baseline = SAMPLE_KNESER_NEY_PERPLEXITY if cfg.train.data == "sample" else None
    markdown = f"{caption}\n\n{format_markdown(results, baseline)}\n"
    (out_dir / "table.md").write_text(markdown, encoding="utf-8")
    report = {"config": asdict(cfg), "caption": caption, "variants": [r.to_json() for r in results]}
    write_json_atomically(report, out_dir / "table.json")
    title = f"{cfg.budget_seconds:g} s of training per variant, {_groups(cfg)}"
    plot_table(results, title, out_dir / "table.png", kneser_ney=baseline)
    return markdown


def _table(dict_cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = validate_table_config(OmegaConf.to_object(dict_cfg))
    results = [run_variant(cfg, name, out_dir / "runs") for name in cfg.variants]
    print(write_outputs(cfg, results, out_dir))
    logger.info("wrote table.md, table.json and table.png in %s", out_dir)


@hydra.main(config_path=str(CONFIG_DIR), config_name="table", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    try:
        _table(dict_cfg)
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        logger.error("%s", error)
        sys.exit(f"lm1b.table: {str(error).splitlines()[0]}")


register_table_config()
register_resolvers()

if __name__ == "__main__":
    main()
