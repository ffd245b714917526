"""Switching on the fast paths of our LSTMP stack (`trainer.cuda_graphs`, `trainer.fused_cell`).

Both act only on our own stack (the cuDNN BIGLSTM is left as cuDNN runs it). CUDA graphs exist
on a GPU only. The fused cell compiles the pointwise cell math with torch.compile: on a GPU its
forward and backward, on a CPU its backward only, the half that pays there (cell.CellMath).
torch.compile needs a compiler at run time (a C++ compiler for inductor's CPU kernels, a C
compiler for Triton's launchers on a GPU); without one the cell runs eagerly and this says so
once, at start-up. Each fast path also falls back to the eager one, with a warning, where it
fails later (see cell.CellMath and graphs.LayerGraphs). Call this after the model is on its
device and before DDP wraps the stack.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import torch
from torch import nn

from lm1b.config.trainer import TrainerConfig
from lm1b.models.cell import CellMath
from lm1b.models.graphs import LayerGraphs
from lm1b.models.lstm_stack import LSTMPStack

logger = logging.getLogger(__name__)


def compiler_for(device: torch.device) -> str | None:
    """The compiler torch.compile would call for `device`, or None when there is none: inductor
    runs $CXX (else g++, clang++ on macOS) for CPU kernels; Triton runs $CC (else a cc, gcc or
    clang on the PATH) to build its GPU kernels' launchers. A variable that is set is used
    whether or not its compiler exists, so then it alone is looked for."""
    if device.type == "cuda":
        variable, defaults = "CC", ["cc", "gcc", "clang"]
    else:
        variable, defaults = "CXX", ["clang++" if sys.platform == "darwin" else "g++"]
    names = [os.environ[variable]] if os.environ.get(variable) else defaults
    return next((path for name in names if (path := shutil.which(name))), None)


def enable_fast_paths(model: nn.Module, cfg: TrainerConfig, device: torch.device) -> dict:
    """Switch on what `cfg` asks for and `device` allows; returns which paths are on."""
    stack = model.rnn
    ours = isinstance(stack, LSTMPStack)
    cuda = device.type == "cuda"
    fused = ours and cfg.fused_cell
    if fused and compiler_for(device) is None:
        logger.warning(
            "trainer.fused_cell: torch.compile finds no %s compiler on this machine, so the "
            "LSTM cell runs unfused (install one, or set trainer.fused_cell=false)",
            "C (for Triton)" if cuda else "C++ ($CXX or g++)",
        )
        fused = False
    enabled = {"cuda_graphs": ours and cuda and cfg.cuda_graphs, "fused_cell": fused}
    if fused:
        cell = CellMath(fuse_forward=cuda, fuse_backward=True)  # one for every layer
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
