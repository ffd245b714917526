"""Exponential moving average of the LSTM weights, used for validation and saved checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


class ExponentialMovingAverage:
    """Shadow copies s of parameters p, updated after every optimizer step as
    s <- d s + (1 - d) p with d = min(decay, (1 + n) / (10 + n)) after n updates.

    The warm-up term is TensorFlow's `ExponentialMovingAverage(num_updates=...)` rule (the
    original code's): without it the average would be dominated by the random initial weights
    for the first few thousand steps.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Swap the averages into the parameters for the duration of the block."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for mine, saved in zip(self.shadow, state["shadow"], strict=True):
                mine.copy_(saved)
