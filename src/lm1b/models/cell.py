"""The LSTM cell's pointwise math for one time step, eager or fused by torch.compile.

    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(j),   m_t = sigmoid(o) * tanh(c_t)

Both functions are pure (they return new tensors and mutate no input), so torch.compile can
fuse each into one kernel on a GPU: the step's gate tensor is then read once instead of by a
dozen separate pointwise kernels (docs/performance.md: compile at most the pointwise gate math).
Layouts are group-major as in the recurrence: gates (G, B, 4, w), state (G, B, w), w = n/G.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import Tensor

from lm1b.models.gates import GATE_J

logger = logging.getLogger(__name__)


def cell_forward(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """gates (G, B, 4, w) pre-activations, c_prev (G, B, w) -> act (G, B, 4, w) holding
    [sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)], c_t, tanh(c_t) and m_t, each (G, B, w)."""
    act = torch.sigmoid(gates)
    act[:, :, GATE_J] = torch.tanh(gates[:, :, GATE_J])
    i, j, f, o = act.unbind(2)
    c = torch.addcmul(f * c_prev, i, j)
    tanh_c = torch.tanh(c)
    return act, c, tanh_c, o * tanh_c


def cell_backward(
    d_m: Tensor, d_c: Tensor, act: Tensor, tanh_c: Tensor, c_prev: Tensor
) -> tuple[Tensor, Tensor]:
    """One step back: d_m = dL/dm_t and d_c = dL/dc_t from the later steps, each (G, B, w),
    with the step's saved act, tanh(c_t) and c_{t-1} -> dL/d(gate pre-activations)
    (G, B, 4, w) and dL/dc_{t-1} (G, B, w)."""
    i, j, f, o = act.unbind(2)
    d_c = d_c + d_m * o * (1 - tanh_c * tanh_c)
    d_gates = torch.stack(
        [
            d_c * j * i * (1 - i),  # through sigmoid(i)
            d_c * i * (1 - j * j),  # through tanh(j)
            d_c * c_prev * f * (1 - f),  # through sigmoid(f)
            d_m * tanh_c * o * (1 - o),  # through sigmoid(o)
        ],
        dim=2,
    )
    return d_gates, d_c * f


def _own_copy(function):
    """`function` with a code object of its own. Dynamo keeps a function's compiled versions
    on its code object, at most `recompile_limit` (8) of them, and raises once they are used up
    under fullgraph=True: every model's CellMath gets its own budget this way, rather than all
    models of a process (the benchmark holds seven) sharing one."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


class CellMath:
    """The pair (forward, backward) a recurrence calls each step: eager, or compiled.

    A compiled pair that fails (no compiler back-end, an unsupported device, a shape it
    cannot handle) logs one warning and is replaced by the eager pair for good, so a run
    never stops because fusion was unavailable.
    """

    def __init__(self, fused: bool = False) -> None:
        self.fused = fused
        self._forward, self._backward = cell_forward, cell_backward
        if fused:
            # dynamic=False: one kernel per shape; a run has a single shape per layer. The
            # recurrence passes the same layouts every step, and runs its backward with autocast
            # off as the forward does, so each shape compiles once per dtype.
            self._forward = torch.compile(_own_copy(cell_forward), dynamic=False, fullgraph=True)
            self._backward = torch.compile(_own_copy(cell_backward), dynamic=False, fullgraph=True)

    def forward(self, gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self._call(self._forward, cell_forward, gates, c_prev)

    def backward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        return self._call(self._backward, cell_backward, *args)

    def _call(self, function, eager, *args):
        if not self.fused:
            return function(*args)
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure means "run eager"
            logger.warning("fused LSTM cell unavailable, running it eagerly: %s", error)
            self.fused = False
            self._forward, self._backward = cell_forward, cell_backward
            return eager(*args)


EAGER = CellMath(fused=False)
