"""The background checkpoint writer: a copy independent of training, one write at a time,
errors raised in the training thread; on a GPU, pinned buffers allocated once, filled by
non-blocking copies and waited for once per save."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from lm1b.training import background_save
from lm1b.training.background_save import CheckpointWriter, PinnedHostCopy, host_copy


class RecordingBuffer(torch.Tensor):
    """A host tensor in a pinned buffer's place: notes whether each copy into it was
    non-blocking."""

    def copy_(self, source, non_blocking=False):
        self.non_blocking_copies.append(non_blocking)
        return super().copy_(source, non_blocking=non_blocking)


class FakeCuda:
    """The GPU side of `PinnedHostCopy` on a CPU: floating-point tensors play the device
    tensors; the buffers allocated and the copies done at each wait are counted."""

    def __init__(self) -> None:
        self.buffers: list[RecordingBuffer] = []
        self.copies_at_each_wait: list[int] = []

    def copier(self) -> PinnedHostCopy:
        return PinnedHostCopy(
            is_on_device=torch.Tensor.is_floating_point,
            new_buffer=self.new_buffer,
            wait_for_copies=self.wait,
        )

    def new_buffer(self, tensor: torch.Tensor) -> RecordingBuffer:
        buffer = torch.empty_like(tensor).as_subclass(RecordingBuffer)
        buffer.non_blocking_copies = []
        self.buffers.append(buffer)
        return buffer

    def wait(self, devices: set[torch.device]) -> None:
        self.copies_at_each_wait.append(sum(len(b.non_blocking_copies) for b in self.buffers))


def training_state() -> dict:
    """Two device tensors (float), two host tensors (an RNG state, a step counter)."""
    return {
        "model": {"w": torch.ones(3), "b": torch.zeros(2)},
        "optimizers": {"step": torch.tensor(7)},
        "ranks": [{"rng": torch.zeros(4, dtype=torch.uint8)}],
        "step": 5,
    }


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


def test_the_pinned_copy_allocates_once_copies_without_blocking_and_waits_once_per_save():
    cuda = FakeCuda()
    copy = cuda.copier()
    state = training_state()
    first = copy(state)
    state["model"]["w"].add_(1.0)  # the steps before the next save
    second = copy(state)
    assert len(cuda.buffers) == 2  # one per device tensor, at the first save only
    assert second["model"]["w"] is first["model"]["w"]  # the same buffer, refilled
    assert all(buffer.non_blocking_copies == [True, True] for buffer in cuda.buffers)
    assert cuda.copies_at_each_wait == [2, 4]  # one wait per save, after all its copies
    assert torch.equal(second["model"]["w"], torch.full((3,), 2.0))
    assert torch.equal(second["model"]["b"], torch.zeros(2)) and second["step"] == 5


def test_the_pinned_copy_copies_host_tensors_anew_at_every_save():
    copy = FakeCuda().copier()
    state = training_state()
    first, second = copy(state), copy(state)
    state["ranks"][0]["rng"].add_(1)  # training draws random numbers
    state["optimizers"]["step"].add_(1)
    for snapshot in (first, second):
        assert torch.equal(snapshot["ranks"][0]["rng"], torch.zeros(4, dtype=torch.uint8))
        assert snapshot["optimizers"]["step"].item() == 7
    assert second["ranks"][0]["rng"] is not first["ranks"][0]["rng"]


def test_an_entry_whose_shape_changed_gets_a_new_buffer_and_a_dropped_entry_none():
    cuda = FakeCuda()
    copy = cuda.copier()
    copy({"w": torch.ones(3), "v": torch.ones(2)})
    snapshot = copy({"w": torch.full((5,), 2.0)})
    assert len(cuda.buffers) == 3 and torch.equal(snapshot["w"], torch.full((5,), 2.0))
    copy({"w": torch.ones(5), "v": torch.ones(2)})
    assert len(cuda.buffers) == 4  # "v" was dropped with the state that lacked it


def test_on_a_gpu_the_next_save_keeps_the_buffers_until_the_write_reading_them_ends(
    monkeypatch,
):
    """The buffers are reused: refilled while a write still read them, the file written would
    hold the next save's state."""
    monkeypatch.setattr(background_save, "PinnedHostCopy", FakeCuda().copier)
    writer = CheckpointWriter(background=None, device=torch.device("cuda"))  # the GPU default
    weight, written = torch.ones(3), {}

    def slow_disk(state, step):
        time.sleep(0.2)  # still writing when the next save comes
        written[step] = state["w"].clone()

    writer.write(slow_disk, {"w": weight}, 1)
    weight.add_(1.0)
    writer.write(slow_disk, {"w": weight}, 2)
    writer.finish()
    assert torch.equal(written[1], torch.ones(3)) and torch.equal(written[2], weight)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_real_gpu_the_snapshot_is_pinned_reused_and_the_state_at_the_save():
    weight = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    state = {"w": weight, "rng": torch.cuda.get_rng_state()}
    copy = PinnedHostCopy()
    first = copy(state)
    weight.add_(1.0)  # the next step: the snapshot keeps the state at the save
    assert first["w"].is_pinned() and torch.equal(first["w"], weight.cpu() - 1.0)
    second = copy(state)
    assert second["w"].data_ptr() == first["w"].data_ptr()
    assert torch.equal(second["w"], weight.cpu())


def test_a_host_that_cannot_pin_the_buffers_gets_a_plain_copy_and_a_warning(monkeypatch, caplog):
    """Page-locked memory is limited (ulimit -l, containers): a failed pinned allocation must
    not stop the run; the save, and every later one, falls back to a plain host copy."""
    attempts = []

    def no_pinned_memory(tensor):
        attempts.append(tensor.shape)
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported...")

    def copier():
        return PinnedHostCopy(
            is_on_device=torch.Tensor.is_floating_point, new_buffer=no_pinned_memory
        )

    monkeypatch.setattr(background_save, "PinnedHostCopy", copier)
    writer = CheckpointWriter(background=None, device=torch.device("cuda"))
    weight, written = torch.ones(3), {}

    def save(state, step):
        written[step] = state["w"]

    with caplog.at_level("WARNING", logger="lm1b.training.background_save"):
        writer.write(save, {"w": weight}, 1)
        weight.add_(1.0)
        writer.write(save, {"w": weight}, 2)
        writer.finish()
    assert torch.equal(written[1], torch.ones(3)) and torch.equal(written[2], torch.full((3,), 2.0))
    assert written[2] is not weight  # a copy, not the live tensor
    assert len(attempts) == 1  # not retried at every save
    assert [r.getMessage().count("pinned host memory") for r in caplog.records] == [1]
    assert "out of memory" in caplog.records[0].getMessage()
