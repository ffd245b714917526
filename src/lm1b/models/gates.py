"""Pluggable gate maps T([x, h]) -> (i, j, f, o) of one LSTMP layer (docs/models.md).

A gate map owns the gate weights and biases and splits T into the two halves the layer's
autograd Function (`recurrence.LSTMPLayerFunction`) needs: `input_side(x)` for all time steps at
once (hoisted out of the time loop as one batched product), and the recurrent half, which the
Function drives step by step through `step` / `step_backward`. After the backward sweep it asks
for every gradient at once through `backward`: the input's and all the weights', each one
product over all T*B rows. `step_backward` returns the gradient of h_{t-1} and that of the
step's slice of `pre`, or None where pre enters the gates additively (then pre's gradient is the
gate gradient itself).

Gate layout inside the recurrence is group-major, (G, B, 4, n/G): group g's slice of i, j, f,
o in that order, G = num_groups (1 for BIGLSTM and F-LSTM). Cell unit u of group g is unit
g * n/G + u of the natural (B, n) state, exactly as the original GLSTMCell concatenates groups.

Why the layouts (measured on a CPU, docs/performance.md): the recurrent product is added in
place into the hoisted `pre` buffer (a fresh product plus an add reads and writes the gates
twice; for G-LSTM k = 8 that add cost as much as the product), and the backward sweep
multiplies by contiguous transposed copies of the weights, made once per window (a transposed
view made the per-step products of G-LSTM up to 2x slower).

Initialisation: Glorot-uniform for every matrix, biases zero, forget bias +1.0 added in the
forward as a constant. This is what the authors' code (okuchaiev/f-lm) got: it passed no
initializer, so TensorFlow's `get_variable` default (glorot_uniform) applied, with each matrix's
own fans - per group for G-LSTM, [x, h] -> 4n/k, and W1, W2 separately for F-LSTM.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

# Gate slots along the "4" axis, in the original (TensorFlow) order.
GATE_I, GATE_J, GATE_F, GATE_O = range(4)


@runtime_checkable
class GateMap(Protocol):
    """The contract between a layer's gates and its autograd Function (GroupedGates and
    FactorizedGates implement it). `plain_gates` is the definition, used by the plain LSTMP
    loop (`recurrence.run_plain`); the other methods are the same map split for the fast path
    (`recurrence.LSTMPLayerFunction`), and the equivalence tests hold them equal.
    Shapes: G groups, w = 4n/G gate columns per group, w' = the width of `pre` (w, or the rank
    r for F-LSTM), T steps, B rows. `weights` are the tensors of `forward_weights()`, in the
    dtype the layer runs in."""

    num_groups: int  # G: 1 for BIGLSTM and F-LSTM

    def plain_gates(self, x_t: Tensor, h: Tensor) -> Tensor:
        """One step's natural (B, 4n) [i | j | f | o] from x_t (B, p) and h (B, p)."""
        ...

    def forward_weights(self) -> tuple[Tensor, ...]:
        """The tensors the fast path reads (differentiable functions of the parameters, e.g.
        the bias with the forget offset), passed through the Function to get their gradients."""
        ...

    def input_side(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """Every step's input half plus biases: x (T, B, p) -> a new (G, T, B, w') buffer,
        which `step` may overwrite."""
        ...

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """Gates of one step, (G, B, w), from pre_t (G, B, w'), a slice of `input_side`'s
        buffer that it may overwrite in place, and h (B, p)."""
        ...

    def backward_weights(self, weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """What `step_backward` reads, prepared once per backward sweep."""
        ...

    def step_backward(
        self, d_gates_t: Tensor, prepared: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor | None]:
        """Gradients of h_{t-1} (B, p) and of pre_t (None: pre_t's is d_gates_t itself)."""
        ...

    def backward(
        self,
        d_gates: Tensor,
        d_pre: Tensor,
        x: Tensor,
        h_prev: Tensor,
        pre: Tensor,
        weights: tuple[Tensor, ...],
    ) -> tuple[Tensor, ...]:
        """The window's gradient of x (T, B, p), then those of `weights` in order, each one
        batched product: d_gates (G, T, B, w), d_pre (G, T, B, w'), h_prev (T, B, p) the
        state each step read, `pre` the buffer as the steps left it."""
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

    def forward_weights(self) -> tuple[Tensor, ...]:
        """W_ih, W_hh (k, p/k, 4n/k) and the group-major bias with the forget offset."""
        return self.weight_ih, self.weight_hh, self._grouped_bias()

    def _groups(self, x: Tensor) -> Tensor:
        """Rows of natural (R, p) -> a group-major view (k, R, p/k)."""
        return x.reshape(x.shape[0], self.num_groups, -1).transpose(0, 1)

    def input_side(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """All steps' input half plus biases, one batched product: (T, B, p) -> (k, T, B, 4n/k)."""
        weight_ih, _, bias = weights
        steps, batch, _ = x.shape
        # bmm then add_: baddbmm first copies the broadcast bias into its output, an extra pass.
        pre = torch.bmm(self._groups(x.reshape(steps * batch, -1)), weight_ih).add_(bias)
        return pre.view(self.num_groups, steps, batch, -1)

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """Gate pre-activations of one step, added in place into pre_t (k, B, 4n/k) from
        h (B, p)."""
        return pre_t.baddbmm_(self._groups(h), weights[1])

    def backward_weights(self, weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """W_hh^T (k, 4n/k, p/k), contiguous: read by every step (the window's products over
        T*B rows run as fast on a transposed view, so W_ih gets no copy)."""
        return (weights[1].transpose(1, 2).contiguous(),)

    def step_backward(self, d_gates_t: Tensor, prepared: tuple[Tensor, ...]) -> tuple[Tensor, None]:
        """Gradient of h_{t-1} (B, p) from d_gates_t (k, B, 4n/k); pre's is d_gates_t itself."""
        d_h = torch.bmm(d_gates_t, prepared[0])  # (k, B, p/k)
        return d_h.transpose(0, 1).reshape(d_h.shape[1], -1), None

    def backward(
        self,
        d_gates: Tensor,
        d_pre: Tensor,
        x: Tensor,
        h_prev: Tensor,
        pre: Tensor,
        weights: tuple[Tensor, ...],
    ) -> tuple[Tensor, ...]:
        """dx (T, B, p), dW_ih, dW_hh and the group-major bias's gradient for the window."""
        k, steps, batch, _ = d_gates.shape
        d_g = d_gates.view(k, steps * batch, -1)  # (k, T*B, 4n/k)
        d_x = torch.bmm(d_g, weights[0].transpose(1, 2))  # (k, T*B, p/k)
        d_x = d_x.transpose(0, 1).reshape(steps, batch, -1)
        # dW_ih and dW_hh in one product over [x_g, h_g] (k, T*B, 2p/k): twice the rows per
        # group, which the thin products of G-LSTM need (k = 2: 17 ms instead of 21 per layer).
        x_h = torch.cat([self._groups(t.reshape(steps * batch, -1)) for t in (x, h_prev)], 2)
        d_weight_ih, d_weight_hh = torch.bmm(x_h.transpose(1, 2), d_g).chunk(2, dim=1)
        return d_x, d_weight_ih, d_weight_hh, d_g.sum(1, keepdim=True)

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

    def forward_weights(self) -> tuple[Tensor, ...]:
        """W1_x, W1_h, W2 and the bias with the forget offset (autograd carries its gradient
        to `bias`)."""
        bias = self.bias + forget_offset(self.bias, self.forget_bias)
        return self.w1_x, self.w1_h, self.w2, bias

    def input_side(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """W1_x x for all steps: (T, B, p) -> (1, T, B, r)."""
        return torch.matmul(x, weights[0]).unsqueeze(0)

    def step(self, pre_t: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """pre_t (1, B, r) + h (B, p) -> gates (1, B, 4n). z = W1 [x, h] (B, r) is written
        over pre_t in place: the buffer then holds every step's z for `backward`."""
        _, w1_h, w2, bias = weights
        z = pre_t[0].addmm_(h, w1_h)  # (B, r)
        return torch.addmm(bias, z, w2).unsqueeze(0)

    def backward_weights(self, weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """W1_h^T (r, p) and W2^T (4n, r), contiguous: read by every step."""
        return tuple(w.t().contiguous() for w in weights[1:3])

    def step_backward(
        self, d_gates_t: Tensor, prepared: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """Gradients of h_{t-1} (B, p) and of pre's slice, dz (1, B, r), from d_gates_t."""
        w1_h_t, w2_t = prepared
        d_z = torch.mm(d_gates_t[0], w2_t)  # (B, r)
        return torch.mm(d_z, w1_h_t), d_z.unsqueeze(0)

    def backward(
        self,
        d_gates: Tensor,
        d_pre: Tensor,
        x: Tensor,
        h_prev: Tensor,
        pre: Tensor,
        weights: tuple[Tensor, ...],
    ) -> tuple[Tensor, ...]:
        """dx (T, B, p), dW1_x, dW1_h, dW2 and dbias for the window: d_gates (1, T, B, 4n),
        d_pre = dz (1, T, B, r), pre = z (1, T, B, r)."""
        rows = h_prev.shape[0] * h_prev.shape[1]
        d_g = d_gates.reshape(rows, -1)  # (T*B, 4n)
        d_z = d_pre.reshape(rows, -1)  # (T*B, r)
        d_x = torch.mm(d_z, weights[0].t()).view(x.shape)
        d_w1_x = x.reshape(rows, -1).t() @ d_z
        d_w1_h = h_prev.reshape(rows, -1).t() @ d_z
        return d_x, d_w1_x, d_w1_h, pre.reshape(rows, -1).t() @ d_g, d_g.sum(0)

    def plain_gates(self, x_t: Tensor, h: Tensor) -> Tensor:
        """Reference: one step's natural (B, 4n) [i | j | f | o] = W2 (W1 [x, h]) + b + offset."""
        w1 = torch.cat([self.w1_x, self.w1_h], dim=0)  # (2p, r)
        z = torch.cat([x_t, h], dim=1) @ w1
        return z @ self.w2 + self.bias + forget_offset(self.bias, self.forget_bias)
