"""Checkpoints written while training goes on (`trainer.async_checkpoint`).

At paper size a checkpoint is 14.8 GB: written in the step, it stalls training for as long as
the disk takes (docs/scale.md). Instead the state is copied to host memory at the step, and a
background thread writes that copy with the usual atomic write and retention. Training
continues meanwhile; the copy is the state at the step, so resuming from it is as exact as from
a synchronous save. One write at a time: the next save, and the end of training, first wait for
the previous write, and an error in the background is raised there.

On a GPU the copy goes into pinned host buffers kept from one save to the next
(`PinnedHostCopy`); on a CPU it is a plain copy into new memory (`host_copy`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

# A tensor's replacement, given the tensor and its path in the state (the keys and indices
# that lead to it).
TensorCopy = Callable[[torch.Tensor, tuple], torch.Tensor]


def map_tensors(state: Any, copy: TensorCopy, path: tuple = ()) -> Any:
    """`state` (dicts, lists and tuples holding tensors and other values) with every tensor
    replaced by `copy(tensor, path)`."""
    if isinstance(state, torch.Tensor):
        return copy(state, path)
    if isinstance(state, dict):
        return {key: map_tensors(value, copy, (*path, key)) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(
            map_tensors(value, copy, (*path, index)) for index, value in enumerate(state)
        )
    return state


def new_host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` copied into new host memory (a new copy also of a host tensor, so training may
    change the original while the copy is written)."""
    return tensor.detach().to("cpu", copy=True)


def host_copy(state: Any) -> Any:
    """`state` with every tensor copied into new host memory."""
    return map_tensors(state, lambda tensor, path: new_host_copy(tensor))


def pinned_buffer_like(tensor: torch.Tensor) -> torch.Tensor:
    """A page-locked host tensor with `tensor`'s shape, dtype and strides. Needs CUDA: without
    it, pinned allocation raises."""
    return torch.empty_like(tensor, device="cpu", pin_memory=True)


def wait_for_current_streams(devices: set[torch.device]) -> None:
    """Block until the work queued so far on each device's current stream is done: a
    device-to-host copy runs on the current stream of its source device."""
    for device in devices:
        torch.cuda.current_stream(device).synchronize()


class PinnedHostCopy:
    """Copies a state to the host, its CUDA tensors into pinned buffers reused by every save.

    Why pinned: a device-to-host copy into pageable memory is staged by the driver and returns
    only once done, so a state copied tensor by tensor into new pageable memory costs one
    synchronous transfer per tensor, each also faulting in fresh pages: several seconds at
    14.8 GB. Into pinned memory every copy is a DMA transfer queued with `non_blocking=True`,
    and the host waits once, after the last, before anything reads the buffers (0.3-0.6 s at
    14.8 GB; both figures are estimates: docs/scale.md).

    Why reused: allocating pinned memory is slow (the driver locks every page), so the buffers
    are allocated at the first save, keyed by their path in the state, and reallocated only
    for an entry whose shape or dtype changed. They stay allocated for the whole run: page-
    locked host memory the size of the checkpoint's device tensors, and more, since PyTorch's
    pinned allocator rounds every allocation up to a power of two (about 19 GB for 14.8 GB at
    paper size: docs/scale.md). Reuse is safe only because a new copy starts after the
    previous write has finished (`CheckpointWriter.write`).

    Host tensors (RNG states, counters) get a new copy at every save, as in `host_copy`.
    """

    def __init__(
        self,
        *,
        is_on_device: Callable[[torch.Tensor], bool] = lambda tensor: tensor.is_cuda,
        new_buffer: Callable[[torch.Tensor], torch.Tensor] = pinned_buffer_like,
        wait_for_copies: Callable[[set[torch.device]], None] = wait_for_current_streams,
    ) -> None:
        # The CUDA operations are parameters so that tests can check this logic without a GPU.
        self._is_on_device = is_on_device
        self._new_buffer = new_buffer
        self._wait_for_copies = wait_for_copies
        self._buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, state: Any) -> Any:
        """`state` copied to the host; every copy is complete when this returns."""
        buffers: dict[tuple, torch.Tensor] = {}
        devices: set[torch.device] = set()
        snapshot = map_tensors(
            state, lambda tensor, path: self._copy(tensor, path, buffers, devices)
        )
        # The device copies are only queued: the host must not read the buffers before this.
        self._wait_for_copies(devices)
        # The buffers of entries the state no longer has are dropped here; PyTorch's pinned
        # allocator keeps their pages locked, cached for later pinned allocations.
        self._buffers = buffers
        return snapshot

    def _copy(
        self,
        tensor: torch.Tensor,
        path: tuple,
        buffers: dict[tuple, torch.Tensor],
        devices: set[torch.device],
    ) -> torch.Tensor:
        """`tensor` on the host: a device tensor's copy queued into its buffer (noted in
        `buffers` and `devices`), a host tensor copied into new memory."""
        if not self._is_on_device(tensor):
            return new_host_copy(tensor)
        buffer = self._buffer_for(tensor, path)
        buffer.copy_(tensor.detach(), non_blocking=True)
        buffers[path] = buffer
        devices.add(tensor.device)
        return buffer

    def _buffer_for(self, tensor: torch.Tensor, path: tuple) -> torch.Tensor:
        """The previous save's buffer for `path` if it still fits `tensor`, else a new one."""
        buffer = self._buffers.get(path)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = self._new_buffer(tensor)
        return buffer


class CheckpointWriter:
    """Writes checkpoints on rank 0: in the step, or from a host copy in a background thread.
    One write at a time: every write, and `finish()`, first waits for the one in progress and
    raises its error, if it failed."""

    def __init__(self, background: bool | None, device: torch.device) -> None:
        # null (the default): in the background on a GPU, where the host copy is a transfer;
        # on a CPU it would double the process's memory.
        self.background = device.type == "cuda" if background is None else background
        self._copy_to_host = PinnedHostCopy() if device.type == "cuda" else host_copy
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, save: Callable[[Any, int], Any], state: Any, step: int, *, now=False):
        """`save(state, step)`: before returning when `now` or not in the background, else
        from a host copy taken here and written by a thread."""
        # First: on a GPU the write in progress reads the pinned buffers this copy refills.
        self.finish()
        if now or not self.background:
            save(state, step)
            return
        snapshot = self._snapshot(state)
        self._thread = threading.Thread(
            target=self._run, args=(lambda: save(snapshot, step),), name="checkpoint"
        )
        self._thread.start()

    def _snapshot(self, state: Any) -> Any:
        """`state` copied to the host. A host that cannot lock the pinned buffers' memory
        (page-locked memory is limited: `ulimit -l`, containers, a busy node) gets a plain copy
        instead, this save and every later one, with a warning: slower, but the run goes on."""
        try:
            return self._copy_to_host(state)
        except RuntimeError as error:  # a failed pinned allocation; anything else fails again
            if self._copy_to_host is host_copy:
                raise
            logger.warning(
                "pinned host memory for background checkpoints unavailable (%s); copying "
                "checkpoints to pageable memory instead, a longer stall per save",
                str(error).splitlines()[0],
            )
            self._copy_to_host = host_copy
            return host_copy(state)

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
