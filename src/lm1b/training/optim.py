"""Optimizers of the recipe: one for the dense LSTM weights, one for the vocabulary tables.

The tables get their own optimizer because PyTorch's foreach Adagrad falls back to its slow
path for a whole parameter group as soon as one gradient is sparse; with row-sparse
gradients, Adagrad (our RowSparseAdagrad, which never waits for the device) or SparseAdam
updates only the rows a step touched.
"""

from __future__ import annotations

import torch
from torch import nn

from lm1b.config.optim import OptimConfig
from lm1b.models.scopes import OPTIMIZER, TABLES, scope
from lm1b.training.sparse_adagrad import RowSparseAdagrad


def lstm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Gate weights, gate biases and projections: clipped, averaged (EMA) and DDP-reduced."""
    return list(model.rnn.parameters())


def table_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The embedding and softmax tables (weight (V, p), bias (V, 1))."""
    return list(model.embedding.parameters()) + list(model.softmax.parameters())


def _implementation(name: str, device: torch.device) -> dict:
    """The fastest of torch's implementations for `name` on `device`: the fused one (one
    kernel per parameter for the whole update) where torch has it, else foreach. Fused Adagrad
    exists on the CPU only; on a 2-core CPU it stepped BIGLSTM's LSTM weights 4x faster than
    foreach (docs/performance.md)."""
    fused = name == "adam" or device.type == "cpu"
    return {"fused": True, "foreach": None} if fused else {"fused": None, "foreach": True}


def _dense_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    implementation = _implementation(cfg.name, params[0].device)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(
            params, lr=cfg.lr, initial_accumulator_value=cfg.initial_accumulator, **implementation
        )
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), **implementation)


def _table_optimizers(
    params: list[nn.Parameter], sparse: bool, cfg: OptimConfig
) -> list[torch.optim.Optimizer]:
    if not params:
        return []
    if cfg.tables == "adagrad":
        adagrad = RowSparseAdagrad if sparse else torch.optim.Adagrad
        return [adagrad(params, lr=cfg.table_lr, initial_accumulator_value=cfg.initial_accumulator)]
    if sparse:
        return [torch.optim.SparseAdam(params, lr=cfg.table_lr, betas=tuple(cfg.betas))]
    return [torch.optim.Adam(params, lr=cfg.table_lr, betas=tuple(cfg.betas))]


class Optimizers:
    """The dense optimizer and the table optimizers, stepped and saved together.

    A step is taken in two calls: `step_device_flagged(apply)` queues the optimizers that take
    their go-ahead as a device flag (RowSparseAdagrad) before the host knows whether the step
    is valid; `step_host_checked()` steps the others once it does.
    """

    def __init__(self, model: nn.Module, cfg: OptimConfig) -> None:
        tables = table_parameters(model)
        sparse = [p for p in tables if _has_sparse_grad(model, p)]
        dense_tables = [p for p in tables if not _has_sparse_grad(model, p)]
        self.optimizers = [_dense_optimizer(lstm_parameters(model), cfg)]
        self.optimizers += _table_optimizers(sparse, True, cfg)
        self.optimizers += _table_optimizers(dense_tables, False, cfg)
        self._flagged = [o for o in self.optimizers if isinstance(o, RowSparseAdagrad)]
        self._checked = [o for o in self.optimizers if not isinstance(o, RowSparseAdagrad)]

    @property
    def lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def zero_grad(self) -> None:
        # set_to_none, never zeroing in place: with CUDA graphs a parameter's .grad can be the
        # graph's static gradient buffer itself, which the next replay overwrites.
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step_device_flagged(self, apply: torch.Tensor) -> None:
        """Queue the flagged optimizers' step; `apply` (0-dim bool) False: it changes nothing."""
        for optimizer in self._flagged:
            with scope(TABLES):
                optimizer.step(apply)

    def step_host_checked(self) -> None:
        """Step the other optimizers (call only for a valid step)."""
        for optimizer in self._checked:
            with scope(OPTIMIZER if optimizer is self.optimizers[0] else TABLES):
                optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"{len(states)} optimizer states for {len(self.optimizers)} optimizers"
            )
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(_with_this_runs_implementation(state, optimizer))


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def _with_this_runs_implementation(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """`state` with its groups' implementation flags replaced by `optimizer`'s own, before it
    is loaded. The saved groups' settings would otherwise replace this run's, the
    implementation too (a run saved on a CPU with fused Adagrad may resume on a GPU, which has
    none), and torch's loader places each `step` tensor by the saved flags: on the parameter's
    device for a fused or capturable group, else where it was saved, so a checkpoint of
    foreach Adam resumed into fused CUDA Adam would get CPU step counts it cannot use. Groups
    without the flags (SparseAdam) and a group count that differs (torch's loader says so)
    are left as saved."""
    saved_groups = state.get("param_groups")
    if not isinstance(saved_groups, list) or len(saved_groups) != len(optimizer.param_groups):
        return state
    groups = []
    for saved, mine in zip(saved_groups, optimizer.param_groups, strict=True):
        flags = {key: mine[key] for key in IMPLEMENTATION_FLAGS if key in mine}
        groups.append({**saved, **flags})
    return {**state, "param_groups": groups}


def _has_sparse_grad(model: nn.Module, param: nn.Parameter) -> bool:
    """Whether the module owning `param` produces row-sparse gradients."""
    if any(param is p for p in model.embedding.parameters()):
        return bool(model.embedding.sparse)
    return bool(model.softmax.sparse)
