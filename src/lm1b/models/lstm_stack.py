"""The LSTMP stack of BIGLSTM, F-LSTM and (hierarchical) G-LSTM, and `build_lstm_stack`.

Interface shared by every variant (and by `cudnn.CudnnLSTMStack`): time-major
`forward(inputs (T, B, p), state=None) -> (outputs (T, B, p), (h (L, B, p), c (L, B, n)))`,
the same state convention as nn.LSTM's (h_0, c_0); None means zeros. Dropout (1 - keep_prob)
is applied after every layer in training mode; the embedding dropout belongs to the caller.
There is no recurrent dropout. The caller detaches the returned state between windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm1b.config.model import ModelConfig
from lm1b.models.cell import EAGER, CellMath
from lm1b.models.cudnn import CudnnLSTMStack
from lm1b.models.gates import FactorizedGates, GateMap, GroupedGates, glorot_uniform_
from lm1b.models.graphs import LayerGraphs
from lm1b.models.recurrence import LSTMPLayerFunction, autocast_dtype, run_plain

State = tuple[Tensor, Tensor]


class LSTMPLayer(nn.Module):
    """One LSTM layer with projection: a pluggable gate map plus a dense projection P (n, p)."""

    def __init__(self, gates: GateMap, state_size: int, projection_size: int):
        super().__init__()
        self.gates = gates
        self.proj = nn.Parameter(torch.empty(state_size, projection_size))  # h = m @ P
        glorot_uniform_(self.proj, fan_in=state_size, fan_out=projection_size)
        self.cell: CellMath = EAGER  # the fused one is switched on by acceleration.py

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fast path: hoisted input product + time loop in one autograd Function.
        Returns (T, B, p), h_T, c_T; c stays in the parameters' dtype (see recurrence.py)."""
        weights = self.gates.forward_weights()
        c0 = c0.to(self.proj.dtype)  # a state carried from a bf16 run (or saved by one)
        dtype = autocast_dtype(x.device)
        if dtype is None:
            return LSTMPLayerFunction.apply(self.gates, self.cell, x, h0, c0, self.proj, *weights)
        # Under autocast (bf16 training) the layer's products get one dtype and the Function
        # runs with autocast off. The casts are differentiable, so the fp32 master weights
        # still receive fp32 gradients.
        x, h0, proj, *weights = (t.to(dtype) for t in (x, h0, self.proj, *weights))
        with torch.autocast(x.device.type, enabled=False):
            return LSTMPLayerFunction.apply(self.gates, self.cell, x, h0, c0, proj, *weights)

    def forward_plain(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The definition: the per-step loop under autograd, of which `forward` is the
        optimisation (the same result, tested)."""
        return run_plain(self.gates, self.proj, x, h0, c0)


class LSTMPStack(nn.Module):
    """A stack of LSTMP layers with dropout after every layer."""

    def __init__(self, layers: list[LSTMPLayer], state_size: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.state_size = state_size
        self.dropout = dropout
        self.graphs: LayerGraphs | None = None  # CUDA graphs, switched on by acceleration.py

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """inputs (T, B, p) -> outputs (T, B, p), (h (L, B, p), c (L, B, n))."""
        return self._run(inputs, state, plain=False)

    def forward_plain(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The same computation through the per-step reference loop (for tests)."""
        return self._run(inputs, state, plain=True)

    def zero_state(self, batch_size: int, like: Tensor) -> State:
        """Zero (h, c) for `batch_size` rows on the device of `like`, in the dtypes the layers
        return: h in autocast's dtype (else that of `like`), c in the parameters' dtype. The
        first window's state then looks like every later one's, so CUDA graphs are captured
        on the second call."""
        num_layers, p = len(self.layers), like.shape[-1]
        h = like.new_zeros(
            num_layers, batch_size, p, dtype=autocast_dtype(like.device) or like.dtype
        )
        c_dtype = self.layers[0].proj.dtype
        return h, like.new_zeros(num_layers, batch_size, self.state_size, dtype=c_dtype)

    def _run(self, inputs: Tensor, state: State | None, plain: bool) -> tuple[Tensor, State]:
        h0, c0 = state if state is not None else self.zero_state(inputs.shape[1], inputs)
        runs = [layer.forward_plain if plain else layer for layer in self.layers]
        if self.graphs is not None and self.training and not plain:
            runs = self.graphs.layer_calls(inputs, h0, c0) or runs
        x, h_last, c_last = inputs, [], []
        for run, h, c in zip(runs, h0.unbind(0), c0.unbind(0), strict=True):
            x, h, c = run(x, h, c)
            x = F.dropout(x, self.dropout, self.training)
            h_last.append(h)
            c_last.append(c)
        return x, (torch.stack(h_last), torch.stack(c_last))


def build_gates(cfg: ModelConfig, num_groups: int) -> nn.Module:
    """The gate map of one layer: F-LSTM for type flstm, else dense (k = 1) or grouped."""
    p, n = cfg.projection_size, cfg.state_size
    if cfg.type == "flstm":
        return FactorizedGates(p, n, cfg.factor_rank, cfg.forget_bias)
    return GroupedGates(p, n, num_groups, cfg.forget_bias)


def build_lstm_stack(cfg: ModelConfig) -> nn.Module:
    """The RNN part of the model selected by cfg.type (biglstm, biglstm_cudnn, flstm, glstm)."""
    if cfg.type == "biglstm_cudnn":
        return CudnnLSTMStack(cfg)
    layers = [
        LSTMPLayer(build_gates(cfg, k), cfg.state_size, cfg.projection_size)
        for k in cfg.groups_per_layer()
    ]
    return LSTMPStack(layers, cfg.state_size, cfg.dropout)
