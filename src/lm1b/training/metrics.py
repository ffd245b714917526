"""Rank 0's record of a run: TensorBoard scalars and hyperparameters, and `metrics.jsonl`.

After a resume from step k the TensorBoard writer purges events after k and the JSON lines
after k are dropped, so no step appears twice in either.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from lm1b.atomic_files import write_text_atomically

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"  # <run_dir>/metrics.jsonl


def _json_key(tag: str) -> str:
    """`train/sampled_loss` -> `sampled_loss`; other groups keep their prefix:
    `val/ppl` -> `val_ppl`."""
    group, _, name = tag.partition("/")
    return name if group == "train" else tag.replace("/", "_")


class MetricsWriter:
    """Writes scalars to `<run_dir>/tensorboard` and `<run_dir>/metrics.jsonl`."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_step: int = 0) -> None:
        self.jsonl_path = Path(run_dir) / METRICS_FILE
        _drop_lines_after(self.jsonl_path, resume_step)
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            purge = resume_step + 1 if resume_step > 0 else None
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def write_hparams(self, params: dict, config_yaml: str) -> None:
        """Hyperparameters in the run's own event file (not a sub-run), plus the whole config."""
        if self._tb is None:
            return
        experiment, start, end = hparams(params, {"val/ppl": 0.0})
        for summary in (experiment, start, end):
            self._tb.file_writer.add_summary(summary)
        self._tb.add_text("config", f"```\n{config_yaml}\n```", global_step=0)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, global_step=step)
        record = {"step": step, **{_json_key(t): float(v) for t, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _drop_lines_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= `step` (all of them are redone after a resume)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: dropping an unreadable line (a run killed mid-write)", path)
    # Through a temporary file and a rename: a kill mid-rewrite must not lose the history.
    write_text_atomically("".join(f"{line}\n" for line in kept), path)


class StepWindow:
    """Sums over the steps since the last log line, turned into the logged scalars.

    The training loss is logged under the name of what it is: `train/sampled_loss` and
    `train/sampled_ppl` under sampled softmax, whose value is far below the model's real
    (full-softmax) perplexity and must never be read as it; `train/loss` and `train/ppl` when
    training with the full softmax. `val/ppl` is the model's perplexity.
    """

    def __init__(self, sampled: bool = True) -> None:
        self.loss_tag = "train/sampled_loss" if sampled else "train/loss"
        self.ppl_tag = "train/sampled_ppl" if sampled else "train/ppl"
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss_sum = 0.0
        self.seconds = 0.0
        self.data_seconds = 0.0
        self.grad_norm = 0.0

    def add(self, result, seconds: float) -> None:
        if not result.skipped:
            self.steps += 1
            self.loss_sum += result.loss
            self.grad_norm = result.grad_norm
        self.seconds += seconds

    def scalars(self, tokens_per_step: int) -> dict[str, float]:
        loss = self.loss_sum / max(self.steps, 1)
        seconds = max(self.seconds, 1e-9)
        return {
            self.loss_tag: loss,
            self.ppl_tag: math.exp(min(loss, 50.0)),
            "train/words_per_sec": self.steps * tokens_per_step / seconds,
            "optim/grad_norm": self.grad_norm,
            "perf/data_wait_fraction": min(self.data_seconds / seconds, 1.0),
        }
