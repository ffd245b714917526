"""Each LSTM layer's training step replayed as a CUDA graph (docs/performance.md: launch overhead).

Without graphs a GPU step of the stack launches thousands of small kernels (about 10 per time
step per layer forward and 15 backward, T = 20); for G-LSTM k = 8 launching them takes longer
than running them. `LayerGraphs` captures every layer's forward and backward once, with
`torch.cuda.make_graphed_callables`, and replays them afterwards: a few launches per layer.

When: a training-mode, grad-enabled call on CUDA whose arguments (shapes, dtypes, autocast)
match the previous call's, so capture happens on the second call of a run (the stack's zero
state already has the dtype of the state it carries later); any call that does not match the
captured signature (a different batch shape, validation, no_grad) runs eagerly. If capture fails, a warning is logged and the
stack stays eager for good: a run never stops for want of graphs.

The layers are handed to the capture through thin `_LayerCall` wrappers that are not
submodules of the stack: the capture replaces the wrapper's `forward`, not the layer's, and
the model's state_dict is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lm1b.models.recurrence import autocast_dtype

logger = logging.getLogger(__name__)

Signature = tuple  # (shape, dtype, requires_grad) of x, h0 and c0, then the autocast state


class _LayerCall(nn.Module):
    """Calls `layer` (x, h0, c0) -> (out, h, c); owns its parameters for the capture."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.layer(x, h0, c0)


def _spec(t: Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.requires_grad


class LayerGraphs:
    """The graphed versions of a stack's layers, captured for one call signature.

    `capture` is `torch.cuda.make_graphed_callables` (tests pass a stand-in to exercise the
    bookkeeping on a CPU); it receives the wrappers and one (x, h0, c0) sample per layer.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        capture: Callable = torch.cuda.make_graphed_callables,
    ) -> None:
        self._calls = tuple(_LayerCall(layer) for layer in layers)
        self._capture = capture
        self._previous: Signature | None = None
        self._captured: Signature | None = None
        self._graphed: tuple | None = None
        self.failed = False

    @property
    def captured(self) -> bool:
        return self._graphed is not None

    def layer_calls(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple | None:
        """The graphed layer callables for a stack call, or None to run it eagerly.

        x (T, B, p) is the stack's input, h0 (L, B, p) and c0 (L, B, n) its initial state.
        """
        if self.failed or not torch.is_grad_enabled():
            return None
        signature = (_spec(x), _spec(h0), _spec(c0), autocast_dtype(x.device))
        if self._graphed is None and signature == self._previous:
            self._try_capture(x, h0, c0)
            self._captured = signature if self._graphed is not None else None
        self._previous = signature
        return self._graphed if signature == self._captured else None

    def _samples(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple:
        """One (x, h0, c0) sample per layer, as the layers will see them: above the first,
        x is the previous layer's output, in the autocast dtype and requiring grad."""
        # Distinct tensors per layer: each becomes that layer's static input, which its
        # backward graph may read after the layers above it have run.
        dtype = autocast_dtype(x.device) or x.dtype
        inputs = [torch.zeros_like(x).requires_grad_(x.requires_grad)] + [
            torch.zeros(x.shape, dtype=dtype, device=x.device, requires_grad=True)
            for _ in self._calls[1:]
        ]
        return tuple(
            (inputs[i], torch.zeros_like(h0[i]), torch.zeros_like(c0[i]))
            for i in range(len(self._calls))
        )

    def _try_capture(self, x: Tensor, h0: Tensor, c0: Tensor) -> None:
        try:
            self._graphed = tuple(self._capture(self._calls, self._samples(x, h0, c0)))
            logger.info("captured %d LSTM layers as CUDA graphs", len(self._calls))
        except Exception as error:  # noqa: BLE001 - any capture failure means "stay eager"
            self.failed = True
            logger.warning("CUDA graph capture failed, the LSTM stays eager: %s", error)
