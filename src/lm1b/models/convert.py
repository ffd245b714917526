"""Turning a trained BIGLSTM's weights into an F-LSTM (truncated SVD) or a G-LSTM (block diagonal).

Every layer's dense gate map is one matrix W = [W_ih; W_hh] of shape (2p, 4n) acting on row
vectors, gates = [x, h] @ W + b (gates.py stores it as weight_ih, weight_hh of shape
(1, p, 4n), natural [i | j | f | o] column layout). The conversions touch only the gate
weights; biases, projections, embedding and softmax are copied unchanged.

- F-LSTM of rank r: W = U S V^T, W1 = U_r S_r^(1/2) (2p, r), W2 = S_r^(1/2) V_r^T (r, 4n), so
  W1 @ W2 is the best rank-r approximation of W (Eckart-Young); at r = min(2p, 4n) it is W
  itself up to float rounding. The square root of S is split evenly between the factors so
  both start at the same scale for fine-tuning.
- G-LSTM with k groups: group g keeps the block of W mapping [x^(g), h^(g)] to its own slice of
  i, j, f, o (gates.py's group-major layout) and drops the rest; lossy by design.

The SVD runs in float64; the factors are returned in the source dtype.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from lm1b.config.model import ModelConfig

_GATE_PREFIX = "rnn.layers.{layer}.gates."


def dense_gate_matrix(state: dict[str, Tensor], layer: int) -> Tensor:
    """The (2p, 4n) gate matrix [W_ih; W_hh] of a BIGLSTM layer from a model state dict."""
    prefix = _GATE_PREFIX.format(layer=layer)
    w_ih, w_hh = state[prefix + "weight_ih"], state[prefix + "weight_hh"]
    if w_ih.shape[0] != 1:
        raise ValueError(f"layer {layer} has {w_ih.shape[0]} groups; a dense (k = 1) map is needed")
    return torch.cat([w_ih[0], w_hh[0]], dim=0)  # (2p, 4n)


def factorize(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-`rank` factors (W1 (2p, r), W2 (r, 4n)) of weight (2p, 4n), by float64 SVD."""
    if not 0 < rank <= min(weight.shape):
        raise ValueError(f"rank={rank} is invalid: 0 < r <= min{tuple(weight.shape)}")
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)  # (2p, m), (m,), (m, 4n)
    root = s[:rank].sqrt()
    w1 = u[:, :rank] * root  # (2p, r)
    w2 = root[:, None] * vh[:rank]  # (r, 4n)
    return w1.to(weight.dtype), w2.to(weight.dtype)


def block_diagonal(weight: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """G-LSTM group weights (weight_ih, weight_hh), each (k, p/k, 4n/k), from weight (2p, 4n).

    Group g keeps rows g*p/k..(g+1)*p/k of each half and, in each gate slot, the columns of
    its units g*n/k..(g+1)*n/k, laid out [i_g | j_g | f_g | o_g] as GroupedGates expects.
    """
    two_p, four_n = weight.shape
    p, n, k = two_p // 2, four_n // 4, num_groups
    if p % k or n % k:
        raise ValueError(f"num_groups={k} must divide p={p} and n={n}")
    halves = []
    for half in weight.split(p, dim=0):  # W_ih, then W_hh: (p, 4n)
        blocks = half.reshape(k, p // k, 4, k, n // k)  # (row group, row, slot, col group, unit)
        diagonal = blocks.diagonal(dim1=0, dim2=3)  # (p/k, 4, n/k, k): row group == col group
        halves.append(diagonal.permute(3, 0, 1, 2).reshape(k, p // k, 4 * n // k).contiguous())
    return halves[0], halves[1]


def compressed_model_config(cfg: ModelConfig, method: str, amount) -> ModelConfig:
    """The model config of the conversion: method "svd" with rank `amount` (F-LSTM) or
    "block" with `amount` groups, an int or one per layer (G-LSTM)."""
    if cfg.type != "biglstm":
        raise ValueError(f"model.type={cfg.type!r} cannot be compressed: only 'biglstm' can")
    if method == "svd":
        return dataclasses.replace(cfg, type="flstm", factor_rank=int(amount))
    if method == "block":
        groups = int(amount) if isinstance(amount, int) else [int(k) for k in amount]
        return dataclasses.replace(cfg, type="glstm", num_groups=groups)
    raise ValueError(f"method={method!r} is invalid: one of ['svd', 'block']")


def convert_state_dict(state: dict[str, Tensor], target: ModelConfig) -> dict[str, Tensor]:
    """A BIGLSTM model state dict converted to `target` (from `compressed_model_config`):
    each layer's gate weights are replaced, every other entry is shared unchanged."""
    converted = dict(state)
    for layer, groups in enumerate(target.groups_per_layer()):
        prefix = _GATE_PREFIX.format(layer=layer)
        weight = dense_gate_matrix(state, layer)  # (2p, 4n)
        p = weight.shape[0] // 2
        del converted[prefix + "weight_ih"], converted[prefix + "weight_hh"]
        if target.type == "flstm":
            w1, w2 = factorize(weight, target.factor_rank)
            converted[prefix + "w1_x"], converted[prefix + "w1_h"] = w1[:p], w1[p:]
            converted[prefix + "w2"] = w2
        else:
            w_ih, w_hh = block_diagonal(weight, groups)
            converted[prefix + "weight_ih"], converted[prefix + "weight_hh"] = w_ih, w_hh
    return converted
