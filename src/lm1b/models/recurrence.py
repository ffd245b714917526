"""One LSTMP layer as an autograd Function, and the plain per-step reference.

    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(j)     (f already holds the forget bias)
    m_t = sigmoid(o) * tanh(c_t),   h_t = m_t @ P          (P: (n, p), no bias)

`LSTMPLayerFunction` runs the whole layer - the gate map's hoisted input product, then the
time loop - with autograd switched off inside, and writes its own backward. Why: plain
autograd records ~10 nodes per step and computes the weight gradients once per step (T small
products); here the backward sweep only propagates activation gradients, and the input's,
the projection's and every gate weight's gradients are each one large product over all T*B
rows afterwards (docs/performance.md). The pointwise cell math is `cell.CellMath` (eager, or
fused by torch.compile); its per-step results are kept as they come, so nothing is zero-filled
or copied per step. `run_plain` is the textbook loop under autograd: the definition, which the
Function is tested against. The gate map's side of the contract is `gates.GateMap`.

Precision: the Function runs in the dtype of x and the weights (bf16 under autocast, whose
casts happen before it), but keeps the cell state c, and the pointwise math, in the dtype of
c0 (the parameters' fp32): a bf16 cell state would lose the small updates of long memories.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lm1b.models.gates import GateMap
from lm1b.models.scopes import (
    CELL,
    LSTM_BACKWARD,
    LSTM_FORWARD,
    STEP_PRODUCTS,
    TIME_LOOP,
    WINDOW_PRODUCTS,
    scope,
)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force for `device`, or None when autocast is off there: the dtype
    a layer runs its recurrence in, and so that of its outputs and carried state."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _to_groups(x: Tensor, num_groups: int) -> Tensor:
    """Natural (B, G*w) -> group-major view (G, B, w), no copy."""
    return x.view(x.shape[0], num_groups, -1).transpose(0, 1)


def _contiguous_groups(x: Tensor, num_groups: int) -> Tensor:
    """Natural (B, G*w) -> a contiguous group-major copy (G, B, w), strides canonical even
    for G = 1 (`.contiguous()` would keep the view's stride on the size-1 dimension)."""
    return _to_groups(x, num_groups).clone(memory_format=torch.contiguous_format)


def _from_groups(x: Tensor) -> Tensor:
    """Group-major (G, B, w) -> natural (B, G*w) (a copy unless G == 1)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class LSTMPLayerFunction(torch.autograd.Function):
    """One LSTMP layer with a hand-written backward.

    Inputs: gate_map (see gates.py), cell (cell.CellMath: the pointwise step), x (T, B, p),
    h0 (B, p), c0 (B, n), proj P (n, p), then gate_map.forward_weights(). Outputs: h for every
    step (T, B, p), h_T (B, p), c_T (B, n) in c0's dtype.
    """

    @staticmethod
    def forward(ctx, gate_map, cell, x, h0, c0, proj, *weights):
        with scope(LSTM_FORWARD):
            with scope(WINDOW_PRODUCTS):
                pre = gate_map.input_side(x, weights)  # (G, T, B, w'), the steps overwrite it
            hs, ms, intermediates = _forward_steps(gate_map, cell, pre, h0, c0, proj, weights)
        ctx.gate_map, ctx.cell = gate_map, cell
        ctx.intermediates = intermediates
        ctx.save_for_backward(x, proj, hs, ms, pre, *weights)
        cells = intermediates[1]
        return hs[1:], hs[-1].clone(), _from_groups(cells[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h_last, d_c_last):
        # Autocast off as in the forward: CUDA-graph capture runs this backward under the
        # step's autocast, and the sweep's dtypes must not depend on who calls it.
        with torch.autocast(d_out.device.type, enabled=False), scope(LSTM_BACKWARD):
            return LSTMPLayerFunction._backward(ctx, d_out, d_h_last, d_c_last)

    @staticmethod
    def _backward(ctx, d_out, d_h_last, d_c_last):
        gate_map = ctx.gate_map
        x, proj, hs, ms, pre, *weights = ctx.saved_tensors
        prepared = gate_map.backward_weights(weights)
        d_h = d_out.to(x.dtype, memory_format=torch.contiguous_format, copy=True)  # (T, B, p)
        d_h[-1] += d_h_last
        d_gates, d_pre, d_h0, d_c0 = _backward_steps(
            gate_map, ctx.cell, ctx.intermediates, d_h, d_c_last, proj, prepared
        )
        d_gates = d_gates.view(*pre.shape[:3], -1)  # (G, T, B, 4n/G)
        d_pre = d_gates if d_pre[0] is None else torch.stack(d_pre, dim=1)  # pre's shape
        h_prev = hs[:-1]  # (T, B, p): the h each step read
        with scope(WINDOW_PRODUCTS):
            d_proj = ms.view(-1, ms.shape[-1]).t() @ d_h.view(-1, d_h.shape[-1])  # (n, p)
            d_x, *d_weights = gate_map.backward(d_gates, d_pre, x, h_prev, pre, weights)
        return None, None, d_x, d_h0, d_c0, d_proj, *d_weights


def _forward_steps(gate_map: GateMap, cell, pre: Tensor, h0: Tensor, c0: Tensor, proj, weights):
    """The time loop: h_t for every step with h_0 first (T + 1, B, p), m_t for every step
    (T, B, n), and what the backward sweep reads, the cell's per-step results (acts, cells,
    tanh_cs)."""
    groups, steps, batch = pre.shape[:3]
    hs = h0.new_empty(steps + 1, batch, proj.shape[1])  # h_0 .. h_T: outputs and h_prev at once
    hs[0] = h0
    ms = h0.new_empty(steps, batch, proj.shape[0])  # m_t, natural (B, n): P's input
    # Per step, as the cell returns them: act (G, B, 4, n/G), c_{t-1}, tanh(c_t).
    # c_0 gets the fresh contiguous layout of the cell's own outputs, so a compiled cell sees
    # one input layout at every step (Dynamo recompiles for a new one).
    acts, cells, tanh_cs = [], [_contiguous_groups(c0, groups)], []
    with scope(TIME_LOOP):
        for t in range(steps):
            with scope(STEP_PRODUCTS):
                gates = gate_map.step(pre[:, t], hs[t], weights)  # (G, B, 4n/G)
            with scope(CELL):  # m_t goes straight into the natural layout P reads
                act, c, tanh_c = cell.forward(
                    gates.view(groups, batch, 4, -1), cells[-1], _to_groups(ms[t], groups)
                )
            acts.append(act)
            cells.append(c)
            tanh_cs.append(tanh_c)
            with scope(STEP_PRODUCTS):
                torch.mm(ms[t], proj, out=hs[t + 1])  # (B, p)
    return hs, ms, (acts, cells, tanh_cs)


def _backward_steps(gate_map: GateMap, cell, intermediates, d_h: Tensor, d_c_last, proj, prepared):
    """The backward sweep, last step first: the gradients of every step's gate pre-activations
    (G, T, B, 4, n/G), those of pre where they are not the same (a list per step), and those of
    h0 (B, p) and c0 (B, n). d_h (T, B, p) holds dL/dh_t from above and receives the
    recurrent part in place."""
    acts, cells, tanh_cs = intermediates
    groups, steps = gate_map.num_groups, d_h.shape[0]
    batch, width = acts[0].shape[1], acts[0].shape[-1]
    proj_t = proj.t().contiguous()  # (p, n): the sweep's products read it row by row
    d_c = _contiguous_groups(d_c_last.to(cells[0].dtype), groups)  # (G, B, n/G): dL/dc
    d_gates = d_h.new_empty(groups, steps, batch, 4, width)  # the cell writes step t's slot
    d_pre = [None] * steps  # per step, where pre's gradient is not the gate gradient
    with scope(TIME_LOOP):
        for t in reversed(range(steps)):
            with scope(STEP_PRODUCTS):
                d_m = _to_groups(torch.mm(d_h[t], proj_t), groups)  # (G, B, n/G)
            with scope(CELL):
                d_c = cell.backward(d_m, d_c, acts[t], tanh_cs[t], cells[t], d_gates[:, t])
            with scope(STEP_PRODUCTS):
                d_h_prev, d_pre[t] = gate_map.step_backward(
                    d_gates[:, t].view(groups, batch, -1), prepared
                )
            if t > 0:
                d_h[t - 1] += d_h_prev
    return d_gates, d_pre, d_h_prev, _from_groups(d_c)


def run_plain(gate_map: GateMap, proj: Tensor, x: Tensor, h0: Tensor, c0: Tensor):
    """The definition: the textbook per-step loop under autograd, which `LSTMPLayerFunction`
    optimises. x (T, B, p) -> (T, B, p), h, c."""
    h, c, outputs = h0, c0, []
    for x_t in x.unbind(0):
        i, j, f, o = gate_map.plain_gates(x_t, h).chunk(4, dim=1)  # each (B, n)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        h = (torch.sigmoid(o) * torch.tanh(c)) @ proj
        outputs.append(h)
    return torch.stack(outputs), h, c
