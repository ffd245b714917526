"""A dispatch mode that records the operations which would make the host wait for a CUDA
device (tests/training/test_host_syncs.py says why and what counts)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

WAITING_OPS = {
    "_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "nonzero",
    "masked_select",
    "_coalesce",
    "is_nonzero",
    "equal",
    "lift_fresh",  # torch.tensor(data), t.new_tensor(data): a host-to-device copy on a GPU
    "lift_fresh_copy",
    "_unique",
    "repeat_interleave",  # its Tensor-repeats form reads the total back
    "bincount",
    "histc",
    "masked_scatter",
}
INDEXING_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}


class WaitAudit(TorchDispatchMode):
    """Records the dispatched operations that would make the host wait for a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if not self.paused and (name in WAITING_OPS or self._boolean_index(name, args)):
            self.found.append(func.__name__)
        return func(*args, **(kwargs or {}))

    @staticmethod
    def _boolean_index(name: str, args) -> bool:
        if name not in INDEXING_OPS or len(args) < 2:
            return False
        indices = args[1]  # a list of optional index tensors
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def paused(audit: WaitAudit, function):
    """`function`, with `audit` recording nothing while it runs."""

    def call(*args, **kwargs):
        audit.paused = True
        try:
            return function(*args, **kwargs)
        finally:
            audit.paused = False

    return call
