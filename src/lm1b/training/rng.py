"""Capture and restore the random number generators a training step draws from.

The state is built only from objects `torch.load(weights_only=True)` accepts, so it can live in
a checkpoint: Python's `random.getstate()` is a tuple of ints (allowed as is), the torch CPU and
CUDA states are ByteTensors. numpy's global RNG is not covered: the project does not use it.
Each rank has its own generators, so each rank's state describes that rank only.
"""

from __future__ import annotations

import logging
import random

import torch

logger = logging.getLogger(__name__)


def capture_rng_state() -> dict:
    """The current state of Python's `random`, torch's CPU generator and every CUDA device's."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Put the generators back to a `capture_rng_state()` result, so the next draws repeat."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    _restore_cuda(state.get("cuda"))


def _restore_cuda(states: list[torch.Tensor] | None) -> None:
    """Restore per-device CUDA states; a different device count restores the common prefix."""
    if states is None:
        return
    if not torch.cuda.is_available():
        logger.info("CUDA is not available; the saved CUDA RNG state is not restored")
        return
    num_devices = torch.cuda.device_count()
    if len(states) != num_devices:
        # Draws on the devices beyond the common prefix will differ from the original run.
        logger.warning(
            "the checkpoint holds CUDA RNG states for %d devices but %d are visible; "
            "restoring the first %d",
            len(states),
            num_devices,
            min(len(states), num_devices),
        )
    for device, device_state in enumerate(states[:num_devices]):
        torch.cuda.set_rng_state(device_state, device)
