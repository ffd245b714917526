"""Capture and restore the random number generators a training step draws from.

The state is built only from objects `torch.load(weights_only=True)` accepts, so it can live in
a checkpoint: Python's `random.getstate()` is a tuple of ints (allowed as is), the torch CPU and
CUDA states are ByteTensors. numpy's global RNG is not covered: the project does not use it.
Each rank has its own generators, so each rank's state describes that rank only: its CUDA state
is the one of the GPU it drives (the current device, set by `init_distributed`), whatever index
that GPU has in the process that resumes it.
"""

from __future__ import annotations

import logging
import random

import torch

logger = logging.getLogger(__name__)


def capture_rng_state() -> dict:
    """The current state of Python's `random`, torch's CPU generator and this rank's GPU's."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        # Not every visible device's state by index: a rank draws on its own GPU only, and its
        # index changes with the launch (under SLURM's per-task binding every rank's is cuda:0).
        state["cuda_device"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore_rng_state(state: dict) -> None:
    """Put the generators back to a `capture_rng_state()` result, so the next draws repeat."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    _restore_cuda(state)


def _restore_cuda(state: dict) -> None:
    """Put this rank's saved CUDA state on the GPU it drives now."""
    if "cuda_device" not in state and "cuda" not in state:
        return
    if not torch.cuda.is_available():
        logger.info("CUDA is not available; the saved CUDA RNG state is not restored")
        return
    device = torch.cuda.current_device()
    own = state["cuda_device"] if "cuda_device" in state else _own_of_every(state["cuda"], device)
    if own is not None:
        torch.cuda.set_rng_state(own, device)


def _own_of_every(states: list[torch.Tensor], device: int) -> torch.Tensor | None:
    """This rank's state in a checkpoint written before "cuda_device", which held every visible
    device's state by index. The writer drove GPU <local rank>, the index `_choose_device` gives
    the rank again when the launch is the same (the only launch in which such a run could use
    several GPUs: per-task binding failed there with "invalid device ordinal")."""
    if device >= len(states):
        logger.warning(
            "the checkpoint holds CUDA RNG states for %d devices, none for cuda:%d; its CUDA RNG "
            "state is not restored",
            len(states),
            device,
        )
        return None
    return states[device]
