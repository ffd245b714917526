"""The background checkpoint writer: a copy independent of training, one write at a time,
errors raised in the training thread."""

from __future__ import annotations

import threading

import pytest
import torch

from lm1b.training.background_save import CheckpointWriter, host_copy


def test_the_host_copy_does_not_change_with_the_training_state():
    weight = torch.ones(3)
    state = {"model": {"w": weight}, "ranks": [{"rng": torch.zeros(2)}], "step": 5}
    copy = host_copy(state)
    weight.add_(1.0)  # the next step changes the weights in place
    assert torch.equal(copy["model"]["w"], torch.ones(3)) and copy["step"] == 5
    assert copy["ranks"][0]["rng"] is not state["ranks"][0]["rng"]


def test_one_write_at_a_time_and_errors_reach_the_next_wait():
    writer = CheckpointWriter(background=True, device=torch.device("cpu"))
    release, order = threading.Event(), []

    def slow(state, step):
        release.wait(5)
        order.append(("first", step))

    writer.write(slow, {}, 1)
    release.set()
    writer.write(lambda state, step: order.append(("second", step)), {}, 2)  # waits for the first
    writer.finish()
    assert order == [("first", 1), ("second", 2)]

    def failing(state, step):
        raise OSError(28, "No space left on device")

    writer.write(failing, {}, 3)
    with pytest.raises(OSError, match="No space left"):
        writer.finish()
    writer.finish()  # the error is raised once


def test_a_failed_background_write_stops_the_run_at_the_next_save(tmp_path, tiny_overrides):
    """The write fails in the background; the next save (any rank's collective) raises it."""
    from lm1b.config import compose_config
    from lm1b.training.distributed import DistContext
    from lm1b.training.setup import build_trainer

    cfg = compose_config([*tiny_overrides, "trainer.async_checkpoint=true", "trainer.max_steps=2"])
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = build_trainer(cfg, ctx, tmp_path, {}, config_yaml="")

    def full_disk(state, step):
        raise OSError(28, "No space left on device")

    trainer.checkpoints.save = full_disk
    trainer.save_checkpoint()  # returns once the host copy is taken
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint()
    trainer.metrics.close()
