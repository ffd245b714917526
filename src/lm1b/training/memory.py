"""What training holds in memory, per rank, predicted from the config (docs/scale.md checks it
against measured peaks).

Fixed part (independent of the batch): the fp32 weights; the LSTM's dense gradients (and, with
several ranks, DDP's flat bucket copy of them); the optimizers' state (Adagrad: one
accumulator per weight, the tables' included, allocated when the optimizer is built; Adam:
two); the EMA of the LSTM weights; under bf16 the per-step bf16 copy of the LSTM weights. The
tables' gradients are row-sparse: one row per looked-up id (the embedding: one per input
token; the softmax weight and bias: one per target plus the S shared sampled rows), never V
rows, unless the model trains with the full softmax (`num_sampled=0`: dense softmax
gradients and an (N, V) logit block).

Activations, per row of the batch (T tokens, d bytes per value: 4 in fp32, 2 in bf16), are the
tensors the backward keeps, counted from the code: the embedding output and its dropout mask;
per layer (`layer_activation_bytes`) the gate pre-activations (T, 4n; F-LSTM's z, (T, r),
instead), m (T, n) and the layer output (T, p) in d bytes, the cell's gate activations (T, 4n),
c and tanh(c) (T, n each) in fp32 whatever the precision (the cell state stays fp32), and the
output's dropout mask; the softmax's (S + 1) logits and their gradient per token. The backward
adds one layer's gradients at a time: gates, h, and the window products' [x, h] and x. Allocator
slack, the framework itself and temporary buffers are not in the model; the measured comparison
says how much they add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lm1b.config.model import ModelConfig
from lm1b.config.optim import OptimConfig
from lm1b.models.counts import count_parameters
from lm1b.models.language_model import build_language_model

FP32 = 4
ID_BYTES = 8  # int64 ids of a sparse gradient's rows
MASK_BYTES = 1  # a dropout mask is bool
# Host memory of a word vocabulary: its Python list and dict, measured (96 MB for 400,000
# entries). Host-side only: on a GPU it is not in the device's budget.
HOST_BYTES_PER_VOCAB_ENTRY = 240


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on one rank; `activations_per_row` is per sequence of the rank's batch."""

    weights: int  # fp32 weights, and under bf16 the step's bf16 copy of the LSTM weights
    gradients: int
    optimizer: int
    ema: int
    activations_per_row: int
    rows: int  # the rank's batch (sequences)

    @property
    def fixed(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.ema

    @property
    def activations(self) -> int:
        return self.activations_per_row * self.rows

    @property
    def total(self) -> int:
        return self.fixed + self.activations

    def largest_batch(self, capacity_bytes: float, reserve_bytes: float = 2 * 2**30) -> int:
        """The most rows per rank that fit `capacity_bytes`, keeping `reserve_bytes` for the
        runtime (CUDA context, workspaces, allocator slack)."""
        free = capacity_bytes - reserve_bytes - self.fixed
        return max(int(free // self.activations_per_row), 0)


def layer_activation_bytes(model: ModelConfig, value: int) -> int:
    """Bytes one LSTMP layer keeps for its backward per token, `value` bytes per matmul-dtype
    value (recurrence.LSTMPLayerFunction): the gate pre-activations (F-LSTM: z), m and h in
    the matmul dtype, the cell's gate activations, c and tanh(c) in fp32."""
    n, p = model.state_size, model.projection_size
    pre = model.factor_rank if model.type == "flstm" else 4 * n
    return value * (pre + n + p) + FP32 * (4 * n + 2 * n)


def estimate_training_memory(
    model: ModelConfig,
    optim: OptimConfig,
    *,
    vocab_size: int,
    rows: int,
    num_steps: int,
    precision: str = "fp32",
    world_size: int = 1,
) -> MemoryEstimate:
    """Predicted bytes of a training rank holding `rows` sequences of `num_steps` tokens."""
    with torch.device("meta"):
        built = build_language_model(model, vocab_size=vocab_size)
    counts = count_parameters(built)
    rnn, tables = counts["rnn"], counts["embedding"] + counts["softmax"]
    value = 2 if precision == "bf16" else FP32
    p, n, samples = model.projection_size, model.state_size, model.num_sampled
    tokens = rows * num_steps

    gradients = rnn * FP32 * (2 if world_size > 1 else 1)  # + DDP's bucket copy
    if samples:
        embedding_rows, softmax_rows = tokens, tokens + samples
        gradients += embedding_rows * (p * FP32 + ID_BYTES)
        gradients += softmax_rows * ((p + 1) * FP32 + 2 * ID_BYTES)
    else:  # full softmax: dense softmax gradients, the embedding's stay sparse
        gradients += tokens * (p * FP32 + ID_BYTES) + counts["softmax"] * FP32
    slots = 2 if optim.name == "adam" else 1
    table_slots = 2 if optim.tables == "adam" else 1
    optimizer = rnn * FP32 * slots + tables * FP32 * table_slots
    ema = rnn * FP32 if optim.ema_decay else 0
    bf16_copy = rnn * 2 if precision == "bf16" else 0  # the step's bf16 LSTM weights

    per_token = p * (value + MASK_BYTES)  # embedding output and its dropout mask
    per_token += model.num_layers * (layer_activation_bytes(model, value) + p * MASK_BYTES)
    # The backward, one layer at a time: gate gradients (T, 4n), h's (T, p), the window
    # products' [x, h] (T, 2p) and x's gradient (T, p); F-LSTM's z gradient (T, r).
    per_token += value * (4 * n + 4 * p + (model.factor_rank if model.type == "flstm" else 0))
    logits = (samples + 1) if samples else vocab_size
    per_token += 2 * FP32 * logits  # logits (upcast to fp32) and their gradient
    return MemoryEstimate(
        weights=counts["total"] * FP32 + bf16_copy,
        gradients=gradients,
        optimizer=optimizer,
        ema=ema,
        activations_per_row=per_token * num_steps,
        rows=rows,
    )
