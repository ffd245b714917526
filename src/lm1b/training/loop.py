"""The training loop: steps, logging, validation, checkpoints and stopping, on every rank.

Every decision that must be the same on all ranks is either a pure function of the step
(logging, validation, step-based checkpoints, max_steps) or a vote reduced with MAX in the
step's single all-reduce (a signal, the wall-clock budget, a time-based checkpoint, a rank
that could not read its training data).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lm1b.config import TrainConfig
from lm1b.data.batch import Batch
from lm1b.data.eval_stream import EvalStream
from lm1b.data.train_loader import TrainLoader
from lm1b.evaluation import evaluate_stream
from lm1b.training.background_save import CheckpointWriter
from lm1b.training.checkpoint import CheckpointError, CheckpointManager
from lm1b.training.distributed import DistContext
from lm1b.training.ema import ExponentialMovingAverage
from lm1b.training.hooks import StepHooks
from lm1b.training.metrics import MetricsWriter, StepWindow
from lm1b.training.optim import Optimizers
from lm1b.training.preemption import PreemptionHandler
from lm1b.training.rng import capture_rng_state, restore_rng_state
from lm1b.training.step import StepRunner

logger = logging.getLogger(__name__)


class Votes(NamedTuple):
    """What a rank says after each step, reduced with MAX over ranks in the step's all-reduce
    (floats: they travel in one float32 tensor with the step's non-finite flag)."""

    signal: float  # 1: SIGTERM or SIGUSR1 arrived
    out_of_time: float  # 1: trainer.max_time is spent
    checkpoint_due: float  # 1: trainer.checkpoint_every_minutes have passed since the last
    data_error: float  # rank + 1 of a rank that could not read its training data, else 0


class TrainingDataError(RuntimeError):
    """A rank could not read its training data (a shard vanished or turned unreadable); every
    rank raises it after the same step, with the last checkpoint intact."""


@dataclass
class Counters:
    step: int = 0  # completed steps (skipped ones included: their batch was consumed)
    skipped_steps: int = 0
    consecutive_skips: int = 0
    train_seconds: float = 0.0  # wall time spent training, over all resumes (for max_time)
    best_val_ppl: float | None = None  # the best validation perplexity so far, and its step
    best_step: int | None = None
    validations_since_best: int = 0  # validations in a row without a new best (for patience)


class Trainer:
    """Trains `model` on `loader` until a budget is spent,
    a signal arrives, or too many steps in a row are non-finite."""

    def __init__(
        self,
        cfg: TrainConfig,
        ctx: DistContext,
        model: nn.Module,
        loader: TrainLoader,
        valid: EvalStream | None,
        checkpoints: CheckpointManager,
        metrics: MetricsWriter | None,
        static_state: dict,
        hooks: StepHooks | None = None,
    ) -> None:
        self.cfg, self.ctx, self.model = cfg, ctx, model
        self.loader, self.valid = loader, valid
        self.checkpoints, self.metrics = checkpoints, metrics
        self.static_state = static_state  # config and tokenizer, saved in every checkpoint
        self.optimizers = Optimizers(model, cfg.optim)
        rnn_params = list(model.rnn.parameters())
        self.ema = (
            ExponentialMovingAverage(rnn_params, cfg.optim.ema_decay)
            if cfg.optim.ema_decay
            else None
        )
        self.hooks = hooks or StepHooks()
        self.steps = StepRunner(model, self.optimizers, self.ema, cfg, ctx, self.hooks)
        self.counters = Counters()
        self.requeue = False  # set when a SIGUSR1 stopped the run: the job should be requeued
        self._last_validation = self._last_checkpoint = -1  # steps of the latest of each
        self.tokens_per_step = cfg.data.batch_size * cfg.data.num_steps  # all ranks together
        self._bar: tqdm | None = None
        self._bar_fields: dict[str, str] = {}  # what the progress bar shows after the counts
        self._data_error: str | None = None  # why this rank could not read its next batch
        self.writer = CheckpointWriter(cfg.trainer.async_checkpoint, ctx.device)

    # ---- checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> dict | None:
        """The whole training state on rank 0 (None elsewhere); collective: every rank calls."""
        lstm_state = self.steps.lstm_state
        per_rank = self.ctx.all_gather_object(
            {
                "data": self.loader.state_dict(),
                "rng": capture_rng_state(),
                "lstm_state": None if lstm_state is None else [s.cpu() for s in lstm_state],
            }
        )
        if not self.ctx.is_main:
            return None
        return {
            **self.static_state,
            "model": self.model.state_dict(),
            "optimizers": self.optimizers.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "counters": asdict(self.counters),
            "world_size": self.ctx.world_size,
            "ranks": per_rank,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore everything but the model weights (loaded before DDP wrapped the stack)."""
        if state["world_size"] != self.ctx.world_size:
            raise ValueError(
                f"the checkpoint was written by {state['world_size']} ranks; resume it with "
                f"the same number (this run has {self.ctx.world_size})"
            )
        self.optimizers.load_state_dict(state["optimizers"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.counters = Counters(**state["counters"])
        mine = state["ranks"][self.ctx.rank]
        self.loader.load_state_dict(mine["data"])
        restore_rng_state(mine["rng"])
        saved = mine["lstm_state"]
        self.steps.lstm_state = (
            None if saved is None else tuple(s.to(self.ctx.device) for s in saved)
        )

    def save_checkpoint(self, now: bool = False) -> None:
        """Save the whole state as this step's checkpoint; collective (every rank calls).
        `now` writes it before returning even under async_checkpoint."""
        self._save(self.checkpoints.save, now)
        self._last_checkpoint = self.counters.step

    def save_best_checkpoint(self) -> None:
        """The whole state as `best.pt`: any command given the run directory then uses it."""
        self._save(self.checkpoints.save_best, now=False)

    def _save(self, save, now: bool) -> None:
        """Gather the state, write it on rank 0, and agree on the outcome: if rank 0 could not
        write (this checkpoint, or the previous one in the background), every rank raises,
        instead of the others waiting for it until the process group's timeout."""
        state = self.state_dict()
        failure = None
        if self.ctx.is_main:
            try:
                self.writer.write(save, state, self.counters.step, now=now)
            except Exception as error:  # reported to every rank below
                failure = error
        if self.ctx.all_reduce_max(float(failure is not None)):
            if failure is not None:
                raise failure
            raise CheckpointError("rank 0 could not write a checkpoint; see its log")

    # ---- validation -------------------------------------------------------------------------

    def validate(self) -> float | None:
        """Full-softmax perplexity on the validation stream (EMA weights), token-weighted over
        all ranks; at most `trainer.val_max_batches` windows per row."""
        if self.valid is None:
            return None
        with self.ema.averaged_weights() if self.ema is not None else nullcontext():
            totals = evaluate_stream(
                self.model, self.valid, max_batches=self.cfg.trainer.val_max_batches
            )
        sums = torch.tensor(
            [totals.nll, float(totals.num_tokens)], dtype=torch.float64, device=self.ctx.device
        )
        if self.ctx.is_distributed:
            # No collective runs inside the evaluation (it runs the unwrapped model, not the
            # step's DDP wrapper), so ranks may have walked different numbers of windows.
            dist.all_reduce(sums)
        return math.exp(sums[0].item() / max(sums[1].item(), 1.0))

    # ---- the loop ---------------------------------------------------------------------------

    def fit(self) -> str:
        """Train until a budget, early stopping or a signal stops the run; returns why it
        stopped: "max_steps", "max_time", "patience" or "signal" (the caller saves and exits
        accordingly)."""
        trainer_cfg = self.cfg.trainer
        self.model.train()
        try:
            with PreemptionHandler() as preemption, self._progress_bar() as bar:
                self._preemption = preemption
                with logging_redirect_tqdm():
                    reason = self._run_steps(trainer_cfg, bar)
            if reason != "signal" and self._last_validation != self.counters.step:
                self._validate_and_log()
            if self._last_checkpoint != self.counters.step:
                self.save_checkpoint(now=True)  # the process exits next
        finally:
            # However the run ends, a checkpoint being written is finished first: the newest
            # checkpoint on disk is whole before the process exits (a no-op off rank 0).
            self.writer.finish()
        return reason

    def _run_steps(self, trainer_cfg, bar) -> str:
        batches = iter(self.loader)
        window = StepWindow(sampled=self.model.sampler is not None)
        self._bar = bar
        self._last_checkpoint_time = time.monotonic()
        while trainer_cfg.max_steps is None or self.counters.step < trainer_cfg.max_steps:
            started = time.perf_counter()
            batch = self._next_batch(batches)
            window.data_seconds += time.perf_counter() - started
            step_votes = self._votes()
            result = self.steps.run(
                batch, self.counters.step + 1, step_votes, usable=not step_votes.data_error
            )
            votes = Votes(*result.votes)
            if votes.data_error:
                self._stop_on_data_error(int(votes.data_error) - 1)
            self._count(result, window, started)
            bar.update(1)
            self._log(window)
            if votes.signal:
                self._agree_on_signal()
                return "signal"
            self._validate_and_checkpoint_if_due(votes.checkpoint_due)
            self.hooks.after_step(self)
            if votes.out_of_time:
                return "max_time"
            if self._out_of_patience():
                return "patience"
        return "max_steps"

    def _out_of_patience(self) -> bool:
        """Early stopping: `trainer.patience` validations in a row brought no new best (the
        validation perplexity is all-reduced, so every rank decides alike)."""
        patience = self.cfg.trainer.patience
        return bool(patience) and self.counters.validations_since_best >= patience

    def _votes(self) -> Votes:
        """This rank's view of the signal, the time budget, the checkpoint timer and its data."""
        budget = self.cfg.trainer.max_time
        since_checkpoint = time.monotonic() - self._last_checkpoint_time
        return Votes(
            signal=float(self._preemption.requested()),
            out_of_time=float(budget is not None and self.counters.train_seconds >= budget),
            checkpoint_due=float(
                since_checkpoint >= 60 * self.cfg.trainer.checkpoint_every_minutes
            ),
            data_error=0.0 if self._data_error is None else float(self.ctx.rank + 1),
        )

    def _next_batch(self, batches: Iterator[Batch]) -> Batch:
        """The next batch on the device. If this rank cannot read its data, the error is kept
        for the vote and a batch of zeros stands in, so that this rank still joins the step's
        collectives: the other ranks would otherwise wait in them until the process group's
        timeout. (The stand-in step is skipped on every rank.)"""
        try:
            return next(batches).to(self.ctx.device, non_blocking=True)
        except Exception as error:  # any failure: a missing shard, a dead loader worker
            # A loader worker's error arrives with the worker's traceback: keep its last line.
            last_line = (str(error).strip().splitlines() or [""])[-1]
            self._data_error = f"{type(error).__name__}: {last_line}"
            logger.exception("rank %d could not read its training data", self.ctx.rank)
            shape = (self.cfg.data.batch_size // self.ctx.world_size, self.cfg.data.num_steps)
            zeros = torch.zeros(shape, dtype=torch.int64, device=self.ctx.device)
            return Batch(zeros, zeros)

    def _stop_on_data_error(self, failed_rank: int) -> None:
        """Every rank stops after the step in which a rank could not read its data, without
        saving: the newest checkpoint on disk is the last good state to resume from."""
        what = self._data_error if failed_rank == self.ctx.rank else "see its log"
        raise TrainingDataError(
            f"rank {failed_rank} could not read its training data ({what}); every rank stopped "
            f"after step {self.counters.step} without saving: fix the data and run the same "
            "command again to resume from the newest checkpoint"
        )

    def _agree_on_signal(self) -> None:
        """Every rank learns which signal stopped the run (SIGUSR1 anywhere means requeue)."""
        self._preemption.should_stop(self.ctx.all_reduce_max)
        self.requeue = self._preemption.requeue_requested
        name = self._preemption.signal_name
        logger.warning("stop requested by %s at step %d", name, self.counters.step)

    def _validate_and_checkpoint_if_due(self, checkpoint_timer_expired: float) -> None:
        step, trainer_cfg = self.counters.step, self.cfg.trainer
        if trainer_cfg.val_every and step % trainer_cfg.val_every == 0:
            self._validate_and_log()
        every = trainer_cfg.checkpoint_every
        if (every and step % every == 0) or checkpoint_timer_expired:
            self.save_checkpoint()
            self._last_checkpoint_time = time.monotonic()

    def _count(self, result, window: StepWindow, started: float) -> None:
        counters = self.counters
        counters.step += 1
        elapsed = time.perf_counter() - started
        counters.train_seconds += elapsed
        window.add(result, elapsed)
        if result.skipped:
            counters.skipped_steps += 1
            counters.consecutive_skips += 1
            logger.warning(
                "step %d skipped: non-finite loss or gradient (or a short sample set)",
                counters.step,
            )
            if counters.consecutive_skips >= self.cfg.trainer.max_consecutive_skips:
                raise FloatingPointError(
                    f"step {counters.step}: {counters.consecutive_skips} consecutive steps had a "
                    "non-finite loss or gradient (trainer.max_consecutive_skips); stopping"
                )
        else:
            counters.consecutive_skips = 0

    def _log(self, window: StepWindow) -> None:
        step = self.counters.step
        if step % self.cfg.trainer.log_every == 0:
            scalars = window.scalars(self.tokens_per_step)
            scalars.update(
                {"optim/lr": self.optimizers.lr, "optim/skipped_steps": self.counters.skipped_steps}
            )
            loss_name = window.loss_tag.removeprefix("train/")
            self._show(**{loss_name: f"{scalars[window.loss_tag]:.3f}"})
            self._show(wps=f"{scalars['train/words_per_sec']:.0f}")
            if self.ctx.is_main:
                logger.info(
                    "step %d | %s %.4f | %.0f words/s | grad norm %.3f | skipped %d",
                    step,
                    loss_name.replace("_", " "),
                    scalars[window.loss_tag],
                    scalars["train/words_per_sec"],
                    scalars["optim/grad_norm"],
                    self.counters.skipped_steps,
                )
                if self.metrics is not None:
                    self.metrics.write(step, scalars)
            window.reset()

    def _show(self, **fields: str) -> None:
        """Update some of the progress bar's fields, keeping the others (the last validation
        perplexity stays in view between validations)."""
        self._bar_fields.update(fields)
        if self._bar is not None:
            self._bar.set_postfix(self._bar_fields, refresh=False)

    def _validate_and_log(self) -> None:
        counters = self.counters
        self._last_validation = counters.step
        ppl = self.validate()
        if ppl is None:
            return
        improved = counters.best_val_ppl is None or ppl < counters.best_val_ppl
        if improved:
            counters.best_val_ppl, counters.best_step = ppl, counters.step
            counters.validations_since_best = 0
        else:
            counters.validations_since_best += 1
        if improved and self.cfg.trainer.keep_best:
            self.save_best_checkpoint()  # after the counters: best.pt records itself as best
        self._show(val_ppl=f"{ppl:.1f}", best=f"{counters.best_val_ppl:.1f}")
        if not self.ctx.is_main:
            return
        logger.info(
            "step %d | validation perplexity %.2f | best %.2f at step %d",
            counters.step,
            ppl,
            counters.best_val_ppl,
            counters.best_step,
        )
        if self.metrics is not None:
            self.metrics.write(
                counters.step, {"val/ppl": ppl, "val/best_ppl": counters.best_val_ppl}
            )
            self.metrics.flush()

    def _progress_bar(self):
        enabled = self.ctx.is_main and self.cfg.logger.progress_bar
        return tqdm(
            total=self.cfg.trainer.max_steps,
            initial=self.counters.step,
            disable=not enabled,
            unit="step",
            dynamic_ncols=True,
        )
