"""Row-sparse Adagrad for the vocabulary tables that never waits for the device.

torch.optim.Adagrad's sparse path starts with `grad.coalesce()`, and on a GPU coalescing reads
back how many distinct rows there are: the host waits for the device three times per step
(embedding, softmax weight, softmax bias), and the launch queue runs dry each time. Here the
rows of a gradient are summed per id into a buffer with one slot per stored row, so every size
is known on the host (`sum_rows_by_id`). The update is torch's Adagrad with lr_decay and
weight_decay 0, on the rows the step touched:

    sum[r] += g_r ** 2,    table[r] -= lr * g_r / (sqrt(sum[r]) + eps)

where g_r is the summed gradient of row r. The state is torch's ("sum" (V, ...), "step"), so
either optimizer loads the other's checkpoints.

`step(apply)` takes the go-ahead as a device flag: where it is False the rows are zeroed
before the update, which then changes nothing (and a non-finite gradient cannot leak in). The
trainer queues this step before the host has read whether the step is valid, so its launches
overlap the device's backward instead of following the host's wait. "step" then counts the
calls, skipped ones included (it enters no update: lr_decay is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sum_rows_by_id(ids: Tensor, rows: Tensor, num_ids: int) -> tuple[Tensor, Tensor]:
    """Sum the rows that share an id, in fixed-size buffers.

    ids (m,) int64 in [0, num_ids) with repeats, rows (m, ...) -> ids (m,), rows (m, ...):
    slot j < U (U = the number of distinct ids) holds the j-th smallest distinct id and the sum
    of its rows; a slot j from U on holds id j mod num_ids and a zero row, so scattering it adds
    exactly nothing (and the padding's scatters spread over many rows, not onto one). The sums
    are deterministic on CPU and GPU (index_put_ with accumulate sorts its indices stably, then
    sums each id's rows in a fixed order), and nothing waits for the device.
    """
    sorted_ids, order = torch.sort(ids, stable=True)
    opens_run = torch.ones_like(sorted_ids, dtype=torch.bool)
    opens_run[1:] = sorted_ids[1:] != sorted_ids[:-1]
    slot_of_sorted = torch.cumsum(opens_run, 0) - 1  # (m,) the slot of each sorted row
    slot = torch.empty_like(slot_of_sorted).scatter_(0, order, slot_of_sorted)  # given order
    padding_ids = torch.arange(ids.numel(), device=ids.device) % num_ids
    slot_ids = padding_ids.index_put_((slot,), ids)  # a slot's writers agree
    return slot_ids, torch.zeros_like(rows).index_put_((slot,), rows, accumulate=True)


class RowSparseAdagrad(torch.optim.Optimizer):
    """Adagrad for parameters with row-sparse (COO, rows = first dimension) gradients; see the
    module docstring. Dense gradients are refused: give those parameters torch's Adagrad."""

    def __init__(
        self, params, lr: float, initial_accumulator_value: float = 0.0, eps: float = 1e-10
    ) -> None:
        if lr <= 0 or initial_accumulator_value < 0 or eps <= 0:
            raise ValueError(
                f"RowSparseAdagrad needs lr > 0, initial_accumulator_value >= 0 and eps > 0 "
                f"(got {lr}, {initial_accumulator_value}, {eps})"
            )
        defaults = {
            "lr": lr,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            # torch's Adagrad reads these from a loaded state: at their values here (no decay,
            # no weight decay) it computes this update, so checkpoints load either way.
            "lr_decay": 0.0,
            "weight_decay": 0.0,
            "foreach": None,
            "maximize": False,
            "differentiable": False,
            "fused": None,
        }
        super().__init__(params, defaults)
        # Allocated now, as torch's Adagrad does: the state is complete before the first step
        # (checkpoints made at step 0 load into it, memory is accounted from the start).
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param]["step"] = torch.tensor(0.0)  # on the host, as torch's
                self.state[param]["sum"] = torch.full_like(
                    param, group["initial_accumulator_value"], memory_format=torch.preserve_format
                )

    @torch.no_grad()
    def step(self, apply: Tensor | None = None):
        """Update every parameter that has a gradient; `apply` (0-dim bool, on the
        parameters' device) False makes the update change nothing."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise TypeError(
                        f"RowSparseAdagrad got a dense gradient for a {tuple(param.shape)} "
                        "parameter: it updates row-sparse gradients only"
                    )
                self._update(param, group, apply)

    def _update(self, param: Tensor, group: dict, apply: Tensor | None) -> None:
        grad = param.grad
        state = self.state[param]
        state["step"] += 1
        # ids (m,), rows (m, ...): each id now appears once, the padding's zero rows aside.
        ids, rows = sum_rows_by_id(grad._indices()[0], grad._values(), param.shape[0])
        if apply is not None:
            rows = torch.where(apply, rows, 0.0)
        # So these scatters are deterministic, with the arithmetic of torch's dense += sparse.
        accumulator = state["sum"]
        accumulator.index_add_(0, ids, rows.pow(2))
        std = accumulator[ids].sqrt_().add_(group["eps"])  # (m, ...)
        param.index_add_(0, ids, rows.div_(std), alpha=-group["lr"])
