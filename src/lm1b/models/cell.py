"""The LSTM cell's pointwise math for one time step, eager or fused by torch.compile.

    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(j),   m_t = sigmoid(o) * tanh(c_t)

Each function is one fusable graph (each returns new tensors and writes one result, m_t or the
gate gradients, into a slot it is given, mutating nothing else), so torch.compile fuses each
into one kernel: the step's gate tensor is then read once instead of by a dozen separate
pointwise kernels (docs/performance.md: compile at most the pointwise gate math).
Layouts are group-major as in the recurrence: gates (G, B, 4, w), state (G, B, w), w = n/G.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import Tensor

from lm1b.models.gates import GATE_F, GATE_I, GATE_J

logger = logging.getLogger(__name__)


def cell_forward(gates: Tensor, c_prev: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """gates (G, B, 4, w) pre-activations in the matmul dtype, c_prev (G, B, w) in the state
    dtype -> act (G, B, 4, w) holding [sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)], c_t and
    tanh(c_t), each (G, B, w), in the state dtype; m_t = sigmoid(o) tanh(c_t) is written into
    m (G, B, w), the step's slot of the projection's input, in its dtype (the matmul's). Under
    bf16 autocast the math runs in fp32 (the state's dtype)."""
    if torch.compiler.is_compiling():
        return _forward_fusable(gates, c_prev, m)
    return _forward_eager(gates, c_prev, m)


def _forward_fusable(gates: Tensor, c_prev: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """cell_forward as one expression, which torch.compile turns into one kernel."""
    gates_32 = gates.to(c_prev.dtype)
    act = torch.sigmoid(gates_32)
    act[:, :, GATE_J] = torch.tanh(gates_32[:, :, GATE_J])
    i, j, f, o = act.unbind(2)
    c = torch.addcmul(f * c_prev, i, j)
    tanh_c = torch.tanh(c)
    m.copy_(o * tanh_c)
    return act, c, tanh_c


def _forward_eager(gates: Tensor, c_prev: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """cell_forward as ATen calls writing into their destinations (out=, in place): no
    temporaries, no sigmoid of j, and m stored straight into its (strided) slot. The same
    operations as `_forward_fusable`, equal up to float rounding (tested); on a CPU this ran
    G-LSTM k = 8's cell forward 3x faster than the fusable form run eagerly (229 against 755
    microseconds a step, in cache), BIGLSTM's 15% faster."""
    gates = gates.to(c_prev.dtype)  # an ATen op computes in its input's dtype, not out='s
    act = torch.empty_like(gates)
    torch.sigmoid(gates[:, :, GATE_I], out=act[:, :, GATE_I])
    torch.tanh(gates[:, :, GATE_J], out=act[:, :, GATE_J])
    torch.sigmoid(gates[:, :, GATE_F:], out=act[:, :, GATE_F:])  # f and o
    i, j, f, o = act.unbind(2)
    c = torch.mul(f, c_prev).addcmul_(i, j)
    tanh_c = torch.tanh(c)
    torch.mul(o, tanh_c, out=m)
    return act, c, tanh_c


def cell_backward(
    d_m: Tensor, d_c: Tensor, act: Tensor, tanh_c: Tensor, c_prev: Tensor, d_gates: Tensor
) -> Tensor:
    """One step back: d_m = dL/dm_t (matmul dtype) and d_c = dL/dc_t from the later steps
    (state dtype), each (G, B, w), with the step's saved act, tanh(c_t) and c_{t-1} ->
    dL/d(gate pre-activations) written into d_gates (G, B, 4, w), the step's slot of the
    window's buffer, in its dtype; returns dL/dc_{t-1} (G, B, w). Writing into the slot (a
    compiled cell stores straight into it) saves stacking the window's gradients afterwards."""
    i, j, f, o = act.unbind(2)
    d_m_32 = d_m.to(d_c.dtype)
    d_c = d_c + d_m_32 * o * (1 - tanh_c * tanh_c)
    d_gates.copy_(
        torch.stack(
            [
                d_c * j * i * (1 - i),  # through sigmoid(i)
                d_c * i * (1 - j * j),  # through tanh(j)
                d_c * c_prev * f * (1 - f),  # through sigmoid(f)
                d_m_32 * tanh_c * o * (1 - o),  # through sigmoid(o)
            ],
            dim=2,
        )
    )
    return d_c * f


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
    """The pair (forward, backward) a recurrence calls each step, each eager or compiled.

    On a GPU both are compiled (each fuses a dozen kernel launches into one). On a CPU only the
    backward pays: inductor's C++ kernel ran it 2.4x faster than eager ATen, while its sigmoid
    and tanh ran the forward slower than ATen's own vectorised ones (docs/performance.md).
    A compiled function that fails (no compiler back-end, an unsupported device, a shape it
    cannot handle) logs one warning and both are replaced by the eager pair for good, so a run
    never stops because fusion was unavailable.
    """

    def __init__(self, fuse_forward: bool = False, fuse_backward: bool = False) -> None:
        self.fused = fuse_forward or fuse_backward
        self._forward, self._backward = cell_forward, cell_backward
        # dynamic=False: one kernel per shape; a run has a single shape per layer. The
        # recurrence passes the same layouts every step, and runs its backward with autocast
        # off as the forward does, so each shape compiles once per dtype.
        if fuse_forward:
            self._forward = torch.compile(_own_copy(cell_forward), dynamic=False, fullgraph=True)
        if fuse_backward:
            self._backward = torch.compile(_own_copy(cell_backward), dynamic=False, fullgraph=True)

    def forward(self, gates: Tensor, c_prev: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._call(self._forward, cell_forward, gates, c_prev, m)

    def backward(self, *args: Tensor) -> Tensor:
        return self._call(self._backward, cell_backward, *args)

    def _call(self, function, eager, *args):
        if not self.fused or function is eager:
            return function(*args)
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure means "run eager"
            logger.warning("fused LSTM cell unavailable, running it eagerly: %s", error)
            self.fused = False
            self._forward, self._backward = cell_forward, cell_backward
            return eager(*args)


EAGER = CellMath()
