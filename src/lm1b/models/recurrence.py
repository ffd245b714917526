"""The time loop of one LSTMP layer: a fused autograd Function, and a plain per-step reference.

    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(j)     (f already holds the forget bias)
    m_t = sigmoid(o) * tanh(c_t),   h_t = m_t @ P          (P: (n, p), no bias)

`LSTMPRecurrence` runs the sequential half of a layer with autograd switched off inside and
writes its own backward sweep. Why: plain autograd records ~10 nodes per step and computes
the recurrent weight gradients once per step (T small products); here the sweep only
propagates activation gradients, and dP and the gate map's recurrent weight gradients are
each one large product over all T*B rows afterwards (docs/performance.md: about a quarter of the
step time). The pointwise cell math is `cell.CellMath` (eager, or fused by torch.compile); its
per-step results are kept as they come, so nothing is zero-filled or copied per step. `run_plain`
is the textbook loop under autograd: the definition, which the fused Function is tested
against. The gate map's side of the contract is `gates.GateMap`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lm1b.models.gates import GateMap


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


class LSTMPRecurrence(torch.autograd.Function):
    """Sequential half of one LSTMP layer with a hand-written backward sweep.

    Inputs: gate_map (see gates.py), cell (cell.CellMath: the pointwise step), pre
    (G, T, B, w) = the hoisted input half, h0 (B, p), c0 (B, n), proj P (n, p), then
    gate_map.recurrent_weights(). Outputs: h for every step (T, B, p), h_T (B, p), c_T (B, n).
    """

    @staticmethod
    def forward(ctx, gate_map, cell, pre, h0, c0, proj, *weights):
        groups, steps, batch, _ = pre.shape
        out = pre.new_empty(steps, batch, proj.shape[1])  # h_t for every step
        # Per step, as the cell returns them: act (G, B, 4, n/G), c_{t-1}, tanh(c_t), m_t.
        # c_0 gets the fresh contiguous layout of the cell's own outputs, so a compiled cell
        # sees one input layout at every step (Dynamo recompiles for a new one).
        acts, cells, tanh_cs, ms = [], [_contiguous_groups(c0, groups)], [], []
        saved = []  # whatever the gate map needs back (F-LSTM: z_t)
        h = h0
        for t in range(steps):
            gates, extra = gate_map.step(pre[:, t], h, weights)  # (G, B, 4n/G)
            if extra is not None:
                saved.append(extra)
            act, c, tanh_c, m = cell.forward(gates.view(groups, batch, 4, -1), cells[-1])
            acts.append(act)
            cells.append(c)
            tanh_cs.append(tanh_c)
            ms.append(_from_groups(m))  # (B, n), the projection's input
            h = torch.mm(ms[-1], proj, out=out[t])  # (B, p)
        ctx.gate_map, ctx.cell = gate_map, cell
        ctx.pre_shape = pre.shape
        ctx.intermediates = (acts, cells, tanh_cs, torch.stack(ms), saved)
        ctx.save_for_backward(h0, proj, out, *weights)
        return out, out[-1].clone(), _from_groups(cells[-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h_last, d_c_last):
        # Autocast off as in the forward: CUDA-graph capture runs this backward under the
        # step's autocast, and the sweep's dtypes must not depend on who calls it.
        with torch.autocast(d_out.device.type, enabled=False):
            return LSTMPRecurrence._backward(ctx, d_out, d_h_last, d_c_last)

    @staticmethod
    def _backward(ctx, d_out, d_h_last, d_c_last):
        gate_map, cell = ctx.gate_map, ctx.cell
        h0, proj, out, *weights = ctx.saved_tensors
        acts, cells, tanh_cs, m, saved = ctx.intermediates
        groups, steps = ctx.pre_shape[0], ctx.pre_shape[1]
        d_h = d_out.clone(memory_format=torch.contiguous_format)  # (T, B, p), gets dh_rec added
        d_h[-1] += d_h_last
        d_c = _contiguous_groups(d_c_last, groups)  # (G, B, n/G), running dL/dc
        d_gates = [None] * steps  # per step (G, B, 4, n/G)
        d_pre = [None] * steps  # per step, where pre's gradient is not the gate gradient
        for t in reversed(range(steps)):
            d_m = _to_groups(torch.mm(d_h[t], proj.t()), groups)  # (G, B, n/G)
            d_gates[t], d_c = cell.backward(d_m, d_c, acts[t], tanh_cs[t], cells[t])
            d_h_prev, d_pre[t] = gate_map.step_backward(
                d_gates[t].view(groups, d_m.shape[1], -1), weights
            )
            if t > 0:
                d_h[t - 1] += d_h_prev
        d_gates = torch.stack(d_gates, dim=1).view(*ctx.pre_shape[:3], -1)  # (G, T, B, 4n/G)
        d_pre = d_gates if d_pre[0] is None else torch.stack(d_pre, dim=1)  # pre's shape
        # Weight gradients, each one product over all T*B rows.
        d_proj = m.view(-1, m.shape[-1]).t() @ d_h.view(-1, d_h.shape[-1])  # (n, p)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, p)
        d_weights = gate_map.weight_grads(d_gates, d_pre, h_prev, saved)
        return None, None, d_pre, d_h_prev, _from_groups(d_c), d_proj, *d_weights


def run_plain(gate_map: GateMap, proj: Tensor, x: Tensor, h0: Tensor, c0: Tensor):
    """The definition: the textbook per-step loop under autograd, which `LSTMPRecurrence`
    optimises. x (T, B, p) -> (T, B, p), h, c."""
    h, c, outputs = h0, c0, []
    for x_t in x.unbind(0):
        i, j, f, o = gate_map.plain_gates(x_t, h).chunk(4, dim=1)  # each (B, n)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        h = (torch.sigmoid(o) * torch.tanh(c)) @ proj
        outputs.append(h)
    return torch.stack(outputs), h, c
