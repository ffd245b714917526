"""One row of the paper's table: train a variant with `python -m lm1b.train`, evaluate it with
`python -m lm1b.evaluate`, and read back what the two commands wrote.

The commands run as subprocesses, exactly as a user runs them, each into a fixed run directory
under the table's, with their output in `train.out` / `evaluate.out` there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lm1b.benchmark.candidates import variant_overrides
from lm1b.config import ConfigError, TrainConfig, compose_config
from lm1b.config.evaluate import EVAL_FILE
from lm1b.config.table import TableConfig
from lm1b.models.counts import count_parameters
from lm1b.models.language_model import build_language_model
from lm1b.training.checkpoint import find_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class VariantResult:
    """What the table and the picture show of one trained variant."""

    name: str
    perplexity: float  # full softmax on the test files, EMA weights when the run has them
    rnn_params: int
    vocab_size: int
    steps: int
    best_step: int  # the step of the checkpoint evaluated: the best by validation, else the last
    train_seconds: float  # the trainer's own clock: training steps only, no validation
    words_per_sec: float  # steps x B x T / train_seconds (docs/models.md's definition)
    curve: list[tuple[float, float]]  # (training seconds, validation perplexity)

    def to_json(self) -> dict:
        return asdict(self)


def run_command(args: list[str], log: Path, threads: int | None) -> None:
    """`python -m <args>` with its output in `log` and `threads` intra-op threads (None:
    torch's default); RuntimeError with the log's tail on failure."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", *args]
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code.returncode:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
        raise RuntimeError(f"{args[0]} failed (exit {code.returncode}); end of {log}:\n{tail}")


def variant_training_overrides(cfg: TableConfig, name: str) -> list[str]:
    """Variant `name` with what every run of the table shares (not the user's overrides)."""
    shared = cfg.train
    groups = [f"size={shared.size}", f"data={shared.data}", f"optim={shared.optim}"]
    return [*variant_overrides(name), *groups, f"seed={shared.seed}"]


def _override_value(value: str | list[str]) -> str:
    """A glob or a list of globs as a Hydra override value (quoted: globs hold ? and *)."""
    if isinstance(value, str):
        return f"'{value}'"
    return "[" + ",".join(f"'{v}'" for v in value) + "]"


def train_variant(cfg: TableConfig, name: str, run_dir: Path) -> None:
    """Train for `cfg.budget_seconds` of training time (resuming a run the directory holds)."""
    val_max = "null" if cfg.val_max_batches is None else cfg.val_max_batches
    args = [
        "lm1b.train",
        *variant_training_overrides(cfg, name),
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=null",
        f"trainer.max_time={cfg.budget_seconds}",
        f"trainer.val_every={cfg.val_every}",
        f"trainer.val_max_batches={val_max}",
        f"trainer.log_every={cfg.log_every}",
        "trainer.checkpoint_every=0",  # one checkpoint, at the end
        "logger.progress_bar=false",
        *cfg.train.overrides,  # last, so that the user's overrides win
    ]
    run_command(args, run_dir / "train.out", cfg.threads)


def evaluate_variant(cfg: TableConfig, train_cfg: TrainConfig, run_dir: Path) -> dict:
    """Full-softmax evaluation of the run's best checkpoint (its newest when it has no best)
    on the data's test files."""
    test_files = train_cfg.data.test_files
    if test_files is None:
        raise ConfigError(
            f"train.data={cfg.train.data} has no test_files: the table needs a test set"
        )
    args = [
        "lm1b.evaluate",
        f"checkpoint={run_dir}",
        f"hydra.run.dir={run_dir / 'eval'}",
        f"data.test_files={_override_value(test_files)}",
        "progress_bar=false",
    ]
    if cfg.eval_batch_size is not None:
        args.append(f"batch_size={cfg.eval_batch_size}")
    run_command(args, run_dir / "evaluate.out", cfg.threads)
    return json.loads((run_dir / "eval" / EVAL_FILE).read_text())


def read_curve(
    run_dir: Path, tokens_per_step: int, final_step: int, train_seconds: float
) -> list[tuple[float, float]]:
    """(training seconds, validation perplexity) of every validation in metrics.jsonl.

    metrics.jsonl gives steps, not times: each training log line holds the words/sec of the
    steps since the previous line, so their times add up to the trainer's clock at each logged
    step (validation excluded, as in trainer.max_time); validations at other steps (the final
    one) are placed by interpolating up to the checkpoint's total training seconds.
    """
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    steps, seconds = [0], [0.0]
    for record in records:
        if record.get("words_per_sec") and record["step"] > steps[-1]:
            window = record["step"] - steps[-1]
            steps.append(record["step"])
            seconds.append(seconds[-1] + window * tokens_per_step / record["words_per_sec"])
    steps.append(max(final_step, steps[-1]))
    seconds.append(max(train_seconds, seconds[-1]))
    return [
        (float(np.interp(r["step"], steps, seconds)), float(r["val_ppl"]))
        for r in records
        if "val_ppl" in r
    ]


def run_variant(cfg: TableConfig, name: str, runs_dir: Path) -> VariantResult:
    """Train, evaluate and read back one variant; its run directory is runs_dir/name. A run
    directory that already holds its evaluation is read back as it is (an interrupted table
    continues where it stopped; delete the directory to redo the variant)."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    train_cfg = compose_config([*variant_training_overrides(cfg, name), *cfg.train.overrides])
    eval_file = run_dir / "eval" / EVAL_FILE
    if eval_file.is_file():
        logger.info("%s: reusing %s", name, eval_file)
        report = json.loads(eval_file.read_text())
    else:
        logger.info("%s: training for %.0f s in %s", name, cfg.budget_seconds, run_dir)
        train_variant(cfg, name, run_dir)
        logger.info("%s: evaluating", name)
        report = evaluate_variant(cfg, train_cfg, run_dir)
    counters = find_checkpoint(run_dir)[1]["counters"]  # the newest: the run's steps and time
    steps, seconds = int(counters["step"]), float(counters["train_seconds"])
    tokens_per_step = train_cfg.data.batch_size * train_cfg.data.num_steps
    with torch.device("meta"):
        model = build_language_model(train_cfg.model, vocab_size=report["vocab_size"])
    return VariantResult(
        name=name,
        perplexity=float(report["perplexity"]),
        rnn_params=count_parameters(model)["rnn"],
        vocab_size=int(report["vocab_size"]),
        steps=steps,
        best_step=int(report["step"]),
        train_seconds=seconds,
        words_per_sec=steps * tokens_per_step / seconds,
        curve=read_curve(run_dir, tokens_per_step, steps, seconds),
    )
