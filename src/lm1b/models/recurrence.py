"""The time loop of one LSTMP layer: a fused autograd Function, and a plain per-step reference.

    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(j)     (f already holds the forget bias)
    m_t = sigmoid(o) * tanh(c_t),   h_t = m_t @ P          (P: (n, p), no bias)

`LSTMPRecurrence` runs the sequential half of a layer with autograd switched off inside and
writes its own backward sweep. Why: plain autograd records ~10 nodes per step and computes
the recurrent weight gradients once per step (T small products); here the sweep only
propagates activation gradients, and dP and the gate map's recurrent weight gradients are
each one large product over all T*B rows afterwards (PERFORMANCE.md: about a quarter of the
step time). All per-step buffers are slices of preallocated (.., T, ..) tensors, so nothing is
zero-filled per step. `run_plain` is the textbook loop under autograd, kept as the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lm1b.models.gates import GATE_F, GATE_I, GATE_J, GATE_O

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _to_groups(x: Tensor, num_groups: int) -> Tensor:
    """Natural (B, G*w) -> group-major view (G, B, w), no copy."""
    return x.view(x.shape[0], num_groups, -1).transpose(0, 1)


def _from_groups(x: Tensor) -> Tensor:
    """Group-major (G, B, w) -> natural (B, G*w) (a copy unless G == 1)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class LSTMPRecurrence(torch.autograd.Function):
    """Sequential half of one LSTMP layer with a hand-written backward sweep.

    Inputs: gate_map (see gates.py), pre (G, T, B, w) = the hoisted input half, h0 (B, p),
    c0 (B, n), proj P (n, p), then gate_map.recurrent_weights(). Outputs: h for every step
    (T, B, p), h_T (B, p), c_T (B, n).
    """

    @staticmethod
    def forward(ctx, gate_map, pre, h0, c0, proj, *weights):
        groups, steps, batch, _ = pre.shape
        n, p = proj.shape
        n_g = n // groups
        acts = pre.new_empty(groups, steps, batch, 4, n_g)  # sigmoid(i), tanh(j), sigmoid(f, o)
        cells = pre.new_empty(groups, steps + 1, batch, n_g)  # c_{t-1} at index t
        cells[:, 0] = _to_groups(c0, groups)
        tanh_c = pre.new_empty(groups, steps, batch, n_g)
        m = pre.new_empty(steps, batch, n)  # natural layout, the projection's input
        out = pre.new_empty(steps, batch, p)
        saved = []  # whatever the gate map needs back (F-LSTM: z_t)
        h = h0
        for t in range(steps):
            gates, extra = gate_map.step(pre[:, t], h, weights)  # (G, B, 4n/G)
            if extra is not None:
                saved.append(extra)
            gates = gates.view(groups, batch, 4, n_g)
            act = acts[:, t]
            torch.sigmoid(gates, out=act)
            torch.tanh(gates[:, :, GATE_J], out=act[:, :, GATE_J])
            i, j, f, o = act.unbind(2)  # each (G, B, n/G)
            c = torch.mul(f, cells[:, t], out=cells[:, t + 1]).addcmul_(i, j)
            torch.tanh(c, out=tanh_c[:, t])
            torch.mul(o, tanh_c[:, t], out=_to_groups(m[t], groups))
            h = torch.mm(m[t], proj, out=out[t])  # (B, p)
        ctx.gate_map = gate_map
        ctx.pre_shape = pre.shape
        ctx.intermediates = (acts, cells, tanh_c, m, saved)
        ctx.save_for_backward(h0, proj, out, *weights)
        return out, out[-1].clone(), _from_groups(cells[:, steps]).clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h_last, d_c_last):
        gate_map = ctx.gate_map
        h0, proj, out, *weights = ctx.saved_tensors
        acts, cells, tanh_c, m, saved = ctx.intermediates
        groups, steps, batch, _, n_g = acts.shape
        d_h = d_out.clone(memory_format=torch.contiguous_format)  # (T, B, p), gets dh_rec added
        d_h[-1] += d_h_last
        d_c = _to_groups(d_c_last, groups).contiguous()  # (G, B, n/G), running dL/dc
        d_gates = torch.empty_like(acts)  # (G, T, B, 4, n/G)
        d_pre = gate_map.new_pre_grad(ctx.pre_shape, d_gates.view(groups, steps, batch, -1))
        for t in reversed(range(steps)):
            d_m = _to_groups(torch.mm(d_h[t], proj.t()), groups)  # (G, B, n/G)
            _cell_backward(d_m, d_c, acts[:, t], tanh_c[:, t], cells[:, t], d_gates[:, t])
            d_h_prev = gate_map.step_backward(
                d_gates[:, t].view(groups, batch, -1), d_pre[:, t], weights
            )
            if t > 0:
                d_h[t - 1] += d_h_prev
        # Weight gradients, each one product over all T*B rows.
        d_proj = m.view(-1, m.shape[-1]).t() @ d_h.view(-1, d_h.shape[-1])  # (n, p)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, p)
        d_gates = d_gates.view(groups, steps, batch, -1)
        d_weights = gate_map.weight_grads(d_gates, d_pre, h_prev, saved)
        return None, d_pre, d_h_prev, _from_groups(d_c), d_proj, *d_weights


def _cell_backward(d_m, d_c, act, tanh_c, c_prev, d_gates) -> None:
    """One step of the cell's backward, in place: d_c (G, B, n/G) becomes dL/dc_{t-1} and
    d_gates (G, B, 4, n/G) receives dL/d(gate pre-activations)."""
    i, j, f, o = act.unbind(2)
    torch.mul(d_m, tanh_c, out=d_gates[:, :, GATE_O])  # dL/d sigmoid(o)
    d_c += _tanh_backward(d_m * o, tanh_c)
    torch.mul(d_c, j, out=d_gates[:, :, GATE_I])
    torch.mul(d_c, i, out=d_gates[:, :, GATE_J])
    torch.mul(d_c, c_prev, out=d_gates[:, :, GATE_F])
    d_c.mul_(f)
    # Activations -> pre-activations in place: sigmoid on i and on (f, o), tanh on j.
    for lo, hi in ((GATE_I, GATE_I + 1), (GATE_F, GATE_O + 1)):
        _sigmoid_backward.grad_input(
            d_gates[:, :, lo:hi], act[:, :, lo:hi], grad_input=d_gates[:, :, lo:hi]
        )
    _tanh_backward.grad_input(d_gates[:, :, GATE_J], j, grad_input=d_gates[:, :, GATE_J])


def run_plain(gate_map, proj: Tensor, x: Tensor, h0: Tensor, c0: Tensor):
    """Reference: the textbook per-step loop under autograd. x (T, B, p) -> (T, B, p), h, c."""
    h, c, outputs = h0, c0, []
    for x_t in x.unbind(0):
        i, j, f, o = gate_map.plain_gates(x_t, h).chunk(4, dim=1)  # each (B, n)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        h = (torch.sigmoid(o) * torch.tanh(c)) @ proj
        outputs.append(h)
    return torch.stack(outputs), h, c
