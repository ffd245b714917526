"""Switching on the GPU fast paths of our LSTMP stack (`trainer.cuda_graphs`, `trainer.fused_cell`).

Both act only on CUDA and only on our own stack (the cuDNN BIGLSTM is left as cuDNN runs
it): on a CPU there is no launch overhead to remove, and torch.compile would spend minutes
compiling for little gain. Each fast path falls back to the eager one, with a warning, where
it cannot be used (see cell.CellMath and graphs.LayerGraphs). Call this after the model is on
its device and before DDP wraps the stack.
"""

from __future__ import annotations

import torch
from torch import nn

from lm1b.config.trainer import TrainerConfig
from lm1b.models.cell import CellMath
from lm1b.models.graphs import LayerGraphs
from lm1b.models.lstm_stack import LSTMPStack


def enable_fast_paths(model: nn.Module, cfg: TrainerConfig, device: torch.device) -> dict:
    """Switch on what `cfg` asks for and `device` allows; returns which paths are on."""
    stack = model.rnn
    ours = isinstance(stack, LSTMPStack) and device.type == "cuda"
    enabled = {"cuda_graphs": ours and cfg.cuda_graphs, "fused_cell": ours and cfg.fused_cell}
    if enabled["fused_cell"]:
        cell = CellMath(fused=True)  # one compiled pair for every layer
        for layer in stack.layers:
            layer.cell = cell
    if enabled["cuda_graphs"]:
        stack.graphs = LayerGraphs(stack.layers)
    return enabled


def fast_path_status(model: nn.Module) -> dict:
    """Which fast paths are engaged now: graphs captured, the cell still compiled (either may
    have fallen back to eager, with a warning, after `enable_fast_paths` switched it on)."""
    stack = model.rnn
    if not isinstance(stack, LSTMPStack):
        return {"cuda_graphs": False, "fused_cell": False}
    return {
        "cuda_graphs": stack.graphs is not None and stack.graphs.captured,
        "fused_cell": all(layer.cell.fused for layer in stack.layers),
    }
