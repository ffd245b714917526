"""What a model costs: its parameter counts by part, and its training FLOPs per word (the
figures `lm1b.summary`, `lm1b.plan` and the benchmark report)."""

from __future__ import annotations

from torch import nn


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of the LSTM stack (gate weights, gate biases, projections), the embedding,
    the softmax (weight and bias) and the whole model."""
    return {
        "rnn": _numel(model.rnn),
        "embedding": _numel(model.embedding),
        "softmax": _numel(model.softmax),
        "total": _numel(model),
    }


def train_flops_per_word(model: nn.Module, num_sampled: int) -> float:
    """Forward + backward FLOPs per token of a training step (6 FLOPs per weight
    and token: 2 forward, 4 backward, over the LSTM's matrices and the softmax rows scored);
    num_sampled 0 is the full softmax, every vocabulary row."""
    matrices = sum(p.numel() for p in model.rnn.parameters() if p.dim() >= 2)
    vocab_size, width = model.softmax.weight.shape
    rows = num_sampled + 1 if num_sampled else vocab_size
    return 6.0 * (matrices + rows * width)
