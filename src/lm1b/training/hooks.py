"""The points where tests and the benchmark look into training, kept out of the step and the
loop: `StepHooks` does nothing (what training runs with); `FaultInjection` injects the
reliability tests' faults (the `testing.*` config fields, all off by default); the benchmark's
phase clock (lm1b.benchmark.timing) times the phases of a step."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import torch

from lm1b.config.schema import TestingConfig

if TYPE_CHECKING:
    from lm1b.training.loop import Trainer


class StepHooks:
    """No-op hooks, overridden one method at a time."""

    def on_phase(self, phase: str) -> None:
        """The step has queued its "forward", "backward" or "optimizer" phase."""

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The step's loss (a scalar tensor), possibly replaced before the backward."""
        return loss

    def after_step(self, trainer: Trainer) -> None:
        """A step has been counted, validated and checkpointed (on every rank)."""


class FaultInjection(StepHooks):
    """The faults `testing.*` asks for, on the rank `rank` of a training run."""

    def __init__(self, testing: TestingConfig, rank: int) -> None:
        self.testing = testing
        self.rank = rank

    @classmethod
    def from_config(cls, testing: TestingConfig, rank: int) -> StepHooks:
        """FaultInjection when any fault is asked for, else the no-op hooks."""
        return cls(testing, rank) if testing != TestingConfig() else StepHooks()

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        testing = self.testing
        hit = testing.nan_every_step or testing.nan_at_step == step
        on_rank = testing.nan_on_rank is None or testing.nan_on_rank == self.rank
        return loss * float("nan") if hit and on_rank else loss

    def after_step(self, trainer: Trainer) -> None:
        testing, step = self.testing, trainer.counters.step
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if testing.crash_at_step == step and first_attempt:
            raise RuntimeError(f"injected crash after step {step} (testing.crash_at_step)")
        if testing.check_replicas:
            _check_replicas(trainer)
        if testing.sleep_per_step:
            time.sleep(testing.sleep_per_step)


def _check_replicas(trainer: Trainer) -> None:
    """Every rank must hold bitwise the same weights (one gather per step)."""
    digest = [float(p.detach().double().sum()) for p in trainer.model.parameters()]
    digests = trainer.ctx.all_gather_object(digest)
    if any(d != digests[0] for d in digests):
        raise RuntimeError(f"step {trainer.counters.step}: weights differ between ranks")
