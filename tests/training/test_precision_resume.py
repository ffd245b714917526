"""A run may resume in another trainer.precision than it saved in (bf16 autocast on the CPU
here): the carried LSTM state is cast to the dtypes the resumed run carries, its values kept,
and training goes on with finite losses, for our LSTMP stack and for nn.LSTM's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lm1b.config import compose_config
from lm1b.training.setup import build_trainer
from trained_checkpoint import CPU, train_tiny

QUIET = ["logger.tensorboard=false"]  # importing TensorBoard alone takes seconds


def saved_lstm_state(run_dir: Path, step: int) -> tuple[torch.Tensor, ...]:
    state = torch.load(run_dir / "checkpoints" / f"step-{step:09d}.pt", weights_only=True)
    return tuple(state["ranks"][0]["lstm_state"])


def logged_losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss, from metrics.jsonl (tiny_overrides log every step)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["sampled_loss"] for r in records if "sampled_loss" in r}


def resume(run_dir: Path, overrides: list[str], steps: int):
    """The trainer of `run_dir` resumed from its newest checkpoint, not yet trained further."""
    cfg = compose_config([f"trainer.max_steps={steps}", "trainer.checkpoint_every=0", *overrides])
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    return build_trainer(cfg, CPU, run_dir, container, config_yaml="")


@pytest.mark.parametrize("model", ["biglstm", "biglstm_cudnn"])
@pytest.mark.parametrize(("saved_in", "resumed_in"), [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_resume_in_another_precision_casts_the_carried_state_and_trains_on(
    tmp_path, tiny_overrides, model, saved_in, resumed_in
):
    run = [*tiny_overrides, *QUIET, f"model={model}"]
    train_tiny(tmp_path, [*run, f"trainer.precision={saved_in}"], steps=2)
    saved = saved_lstm_state(tmp_path, 2)

    trainer = resume(tmp_path, [*run, f"trainer.precision={resumed_in}"], steps=4)
    restored = trainer.steps.lstm_state
    trainer.fit()
    trainer.metrics.close()

    # The dtypes the resumed run carries itself, read after it stepped in its own precision.
    carried = [s.dtype for s in trainer.steps.lstm_state]
    assert [s.dtype for s in saved] != carried  # the precision change does change them
    assert [s.dtype for s in restored] == carried
    for before, after in zip(saved, restored, strict=True):  # cast, not reset to zeros
        assert before.abs().sum() > 0
        assert torch.equal(after, before.to(after.dtype))
    losses = logged_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(math.isfinite(loss) for loss in losses.values()), losses
