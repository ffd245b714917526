"""Checkpoints written while training goes on (`trainer.async_checkpoint`).

At paper size a checkpoint is about 14 GB: written in the step, it stalls training for as long
as the disk takes (docs/scale.md). Instead the state is copied to host memory at the step (a
device-to-host copy on a GPU: about a second), and a background thread writes that copy with
the usual atomic write and retention. Training continues meanwhile; the copy is the state at
the step, so resuming from it is as exact as from a synchronous save. One write at a time:
the next save, and the end of training, first wait for the previous write, and an error in
the background is raised there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


def host_copy(state: Any) -> Any:
    """`state` with every tensor copied to host memory (a new copy also for host tensors, so
    training may change the originals while the copy is written)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: host_copy(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(host_copy(value) for value in state)
    return state


class CheckpointWriter:
    """Writes checkpoints on rank 0: in the step, or from a host copy in a background thread.
    One write at a time: every write, and `finish()`, first waits for the one in progress and
    raises its error, if it failed."""

    def __init__(self, background: bool | None, device: torch.device) -> None:
        # null (the default): in the background on a GPU, where the host copy is a transfer;
        # on a CPU it would double the process's memory.
        self.background = device.type == "cuda" if background is None else background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, save: Callable[[Any, int], Any], state: Any, step: int, *, now=False):
        """`save(state, step)`: before returning when `now` or not in the background, else
        from a host copy taken here and written by a thread."""
        self.finish()
        if now or not self.background:
            save(state, step)
            return
        snapshot = host_copy(state)
        self._thread = threading.Thread(
            target=self._run, args=(lambda: save(snapshot, step),), name="checkpoint"
        )
        self._thread.start()

    def finish(self) -> None:
        """Wait for the write in progress; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except BaseException as error:  # raised in the training thread by the next finish()
            self._error = error
