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


class BackgroundWriter:
    """Runs one write at a time in a background thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], Any]) -> None:
        """Wait for the previous write, then start `write` in the background."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(write,), name="checkpoint")
        self._thread.start()

    def wait(self) -> None:
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
        except BaseException as error:  # raised in the training thread by the next wait()
            self._error = error
