"""Pluggable gate maps T([x, h]) -> (i, j, f, o) of one LSTMP layer (docs/models.md).

A gate map owns the gate weights and biases and splits T into the two halves the recurrence
needs: `input_side(x)` for all time steps at once (hoisted out of the time loop, autograd
differentiates it as one batched product) and the recurrent half, which the fused recurrence
(`recurrence.LSTMPRecurrence`) drives step by step through `step` / `step_backward` and whose
weight gradients it asks for once per window through `weight_grads`. `step_backward` returns
the gradient of h_{t-1} and that of the step's slice of `pre`, or None where pre enters the
gates additively (then pre's gradient is the gate gradient itself).

Gate layout inside the recurrence is group-major, (G, B, 4, n/G): group g's slice of i, j, f,
o in that order, G = num_groups (1 for BIGLSTM and F-LSTM). Cell unit u of group g is unit
g * n/G + u of the natural (B, n) state, exactly as the original GLSTMCell concatenates groups.

Initialisation: Glorot-uniform for every matrix, biases zero, forget bias +1.0 added in the
forward as a constant. This is what the authors' code (okuchaiev/f-lm) got: it passed no
initializer, so TensorFlow's `get_variable` default (glorot_uniform) applied, with each matrix's
own fans - per group for G-LSTM, [x, h] -> 4n/k, and W1, W2 separately for F-LSTM.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

# Gate slots along the "4" axis, in the original (TensorFlow) order.
GATE_I, GATE_J, GATE_F, GATE_O = range(4)


@runtime_checkable
class GateMap(Protocol):
    """The contract between a layer's gates and the recurrence (GroupedGates and
    FactorizedGates implement it). `plain_gates` is the definition, used by the plain LSTMP
    loop (`recurrence.run_plain`); the other methods are the same map split for the fused
    path (`recurrence.LSTMPRecurrence`), and the equivalence tests hold them equal.
    Shapes: G groups, w = 4n/G gate columns per group, T steps, B rows."""

    num_groups: int  # G: 1 for BIGLSTM and F-LSTM

    def plain_gates(self, x_t: Tensor, h: Tensor) -> Tensor:
        """One step's natural (B, 4n) [i | j | f | o] from x_t (B, p) and h (B, p)."""
        ...

    def input_side(self, x: Tensor) -> Tensor:
        """Every step's input half plus biases: x (T, B, p) -> (G, T, B, w)."""
        ...

    def recurrent_weights(self) -> tuple[Tensor, ...]:
        """The tensors `step` reads (the recurrence returns their gradients)."""
        ...

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Any]:
        """Gates of one step, (G, B, w), from pre_t (G, B, w) and h (B, p); plus whatever
        `weight_grads` needs saved from the step (or None)."""
        ...

    def step_backward(
        self, d_gates_t: Tensor, weights: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor | None]:
        """Gradients of h_{t-1} (B, p) and of pre_t (None: pre_t's is d_gates_t itself)."""
        ...

    def weight_grads(
        self, d_gates: Tensor, d_pre: Tensor, h_prev: Tensor, saved: list
    ) -> tuple[Tensor, ...]:
        """The window's gradients of `recurrent_weights()`, in one batched product each."""
        ...


def glorot_uniform_(weight: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """Fill `weight` from U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (TF's glorot_uniform)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def forget_offset(bias: Tensor, forget_bias: float) -> Tensor:
    """The constant added to the natural (4n,) bias: forget_bias on the f slice, 0 elsewhere."""
    offset = torch.zeros(4, 1, dtype=bias.dtype, device=bias.device)
    offset[GATE_F].fill_(forget_bias)  # fill_: no tensor made from a host number
    return offset.expand(4, bias.numel() // 4).reshape(-1)


class GroupedGates(nn.Module):
    """Dense (k = 1, BIGLSTM) or grouped (k > 1, G-LSTM) gate map.

    Group g maps [x^(g), h^(g)] (2p/k) to its own slice (4n/k) of i, j, f, o; the bias is full
    width (4n), laid out naturally as [i | j | f | o], each n wide, as in the original code.
    """

    def __init__(self, input_size: int, state_size: int, num_groups: int, forget_bias: float):
        super().__init__()
        if input_size % num_groups or state_size % num_groups:
            raise ValueError(
                f"num_groups={num_groups} must divide input_size={input_size} "
                f"and state_size={state_size}"
            )
        self.num_groups = num_groups
        self.state_size = state_size
        self.forget_bias = forget_bias
        k, p_g, w = num_groups, input_size // num_groups, 4 * state_size // num_groups
        self.weight_ih = nn.Parameter(torch.empty(k, p_g, w))  # x^(g) @ W_ih[g]
        self.weight_hh = nn.Parameter(torch.empty(k, p_g, w))  # h^(g) @ W_hh[g]
        self.bias = nn.Parameter(torch.empty(4 * state_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform over each group's [x, h] -> 4n/k matrix (x and h halves together)."""
        _, p_g, w = self.weight_ih.shape
        for weight in (self.weight_ih, self.weight_hh):
            glorot_uniform_(weight, fan_in=2 * p_g, fan_out=w)
        nn.init.zeros_(self.bias)

    def _grouped_bias(self) -> Tensor:
        """Bias plus forget offset in group-major layout: (k, 1, 4n/k)."""
        k, n_g = self.num_groups, self.state_size // self.num_groups
        bias = self.bias + forget_offset(self.bias, self.forget_bias)  # (4n,)
        return bias.view(4, k, n_g).transpose(0, 1).reshape(k, 1, 4 * n_g)

    def input_side(self, x: Tensor) -> Tensor:
        """All steps' input half plus biases, one batched product: (T, B, p) -> (k, T, B, 4n/k)."""
        steps, batch, p = x.shape
        k = self.num_groups
        x_g = x.reshape(steps * batch, k, p // k).transpose(0, 1)  # (k, T*B, p/k)
        pre = torch.baddbmm(self._grouped_bias(), x_g, self.weight_ih)  # (k, T*B, 4n/k)
        return pre.view(k, steps, batch, -1)

    def recurrent_weights(self) -> tuple[Tensor, ...]:
        """The tensors `step` reads, passed through the autograd Function to get their grads."""
        return (self.weight_hh,)

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, None]:
        """Gate pre-activations of one step: pre_t (k, B, 4n/k) + h (B, p) -> (k, B, 4n/k)."""
        (weight_hh,) = weights
        h_g = h.view(h.shape[0], self.num_groups, -1).transpose(0, 1)  # (k, B, p/k)
        return torch.baddbmm(pre_t, h_g, weight_hh), None

    def step_backward(self, d_gates_t: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, None]:
        """Gradient of h_{t-1} (B, p) from d_gates_t (k, B, 4n/k); pre's is d_gates_t itself."""
        (weight_hh,) = weights
        d_h = torch.bmm(d_gates_t, weight_hh.transpose(1, 2))  # (k, B, p/k)
        return d_h.transpose(0, 1).reshape(d_h.shape[1], -1), None

    def weight_grads(
        self, d_gates: Tensor, d_pre: Tensor, h_prev: Tensor, saved: list
    ) -> tuple[Tensor, ...]:
        """dW_hh for the whole window in one batched product: d_gates (k, T, B, 4n/k)."""
        k = self.num_groups
        h_g = h_prev.reshape(-1, k, h_prev.shape[-1] // k).permute(1, 2, 0)  # (k, p/k, T*B)
        return (torch.bmm(h_g, d_gates.reshape(k, h_g.shape[-1], -1)),)

    def plain_gates(self, x_t: Tensor, h: Tensor) -> Tensor:
        """Reference: one step's natural (B, 4n) [i | j | f | o], group by group as in f-lm."""
        k = self.num_groups
        weight = torch.cat([self.weight_ih, self.weight_hh], dim=1)  # (k, 2p/k, 4n/k)
        parts = [
            torch.cat([xg, hg], dim=1) @ weight[g]  # (B, 4n/k) = [i_g | j_g | f_g | o_g]
            for g, (xg, hg) in enumerate(zip(x_t.chunk(k, 1), h.chunk(k, 1), strict=True))
        ]
        gates = [torch.cat([part.chunk(4, 1)[slot] for part in parts], 1) for slot in range(4)]
        return torch.cat(gates, 1) + self.bias + forget_offset(self.bias, self.forget_bias)


class FactorizedGates(nn.Module):
    """F-LSTM gate map: T = W2 (W1 [x, h]) + b, W1: 2p -> r without bias, W2: r -> 4n with bias.

    Only W1's x half is hoisted; W1's h half and W2 stay on the sequential path.
    """

    num_groups = 1

    def __init__(self, input_size: int, state_size: int, rank: int, forget_bias: float):
        super().__init__()
        self.forget_bias = forget_bias
        self.w1_x = nn.Parameter(torch.empty(input_size, rank))  # x @ W1_x
        self.w1_h = nn.Parameter(torch.empty(input_size, rank))  # h @ W1_h
        self.w2 = nn.Parameter(torch.empty(rank, 4 * state_size))
        self.bias = nn.Parameter(torch.empty(4 * state_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform on W1 = [W1_x; W1_h] (2p -> r) and on W2 (r -> 4n); bias zero."""
        two_p, rank = 2 * self.w1_x.shape[0], self.w1_x.shape[1]
        for weight in (self.w1_x, self.w1_h):
            glorot_uniform_(weight, fan_in=two_p, fan_out=rank)
        glorot_uniform_(self.w2, fan_in=rank, fan_out=self.w2.shape[1])
        nn.init.zeros_(self.bias)

    def input_side(self, x: Tensor) -> Tensor:
        """W1_x x for all steps: (T, B, p) -> (1, T, B, r)."""
        return torch.matmul(x, self.w1_x).unsqueeze(0)

    def recurrent_weights(self) -> tuple[Tensor, ...]:
        """W1_h, W2 and the bias with the forget offset (autograd carries its grad to `bias`)."""
        return self.w1_h, self.w2, self.bias + forget_offset(self.bias, self.forget_bias)

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """pre_t (1, B, r) + h (B, p) -> gates (1, B, 4n); also returns z = W1 [x, h] (B, r)."""
        w1_h, w2, bias = weights
        z = torch.addmm(pre_t[0], h, w1_h)  # (B, r)
        return torch.addmm(bias, z, w2).unsqueeze(0), z

    def step_backward(
        self, d_gates_t: Tensor, weights: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """Gradients of h_{t-1} (B, p) and of pre's slice, dz (1, B, r), from d_gates_t."""
        w1_h, w2, _ = weights
        d_z = torch.mm(d_gates_t[0], w2.t())  # (B, r)
        return torch.mm(d_z, w1_h.t()), d_z.unsqueeze(0)

    def weight_grads(
        self, d_gates: Tensor, d_pre: Tensor, h_prev: Tensor, saved: list
    ) -> tuple[Tensor, ...]:
        """dW1_h, dW2, dbias for the window, each one product: d_gates (1, T, B, 4n)."""
        d_g = d_gates.reshape(-1, d_gates.shape[-1])  # (T*B, 4n)
        z = torch.stack(saved).reshape(d_g.shape[0], -1)  # (T*B, r): z_t saved by `step`
        d_z = d_pre.reshape(d_g.shape[0], -1)  # (T*B, r)
        return h_prev.reshape(d_g.shape[0], -1).t() @ d_z, z.t() @ d_g, d_g.sum(0)

    def plain_gates(self, x_t: Tensor, h: Tensor) -> Tensor:
        """Reference: one step's natural (B, 4n) [i | j | f | o] = W2 (W1 [x, h]) + b + offset."""
        w1 = torch.cat([self.w1_x, self.w1_h], dim=0)  # (2p, r)
        z = torch.cat([x_t, h], dim=1) @ w1
        return z @ self.w2 + self.bias + forget_offset(self.bias, self.forget_bias)
