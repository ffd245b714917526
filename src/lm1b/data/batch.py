"""The batch the trainer and the evaluator receive."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One window of every row. Row r of the next batch continues row r of this one, so the
    LSTM state is carried across batches (training and evaluation alike)."""

    inputs: torch.Tensor  # (B, T) int64 ids
    targets: torch.Tensor  # (B, T) int64: the id following each input
    mask: torch.Tensor | None = None  # (B, T) bool, True where real; None: all real (training)

    @property
    def num_tokens(self) -> int:
        """The number of predicted (real) positions."""
        return self.inputs.numel() if self.mask is None else int(self.mask.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on `device`."""
        return Batch(
            self.inputs.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            None if self.mask is None else self.mask.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """The batch in pinned host memory (for asynchronous copies to a GPU)."""
        return Batch(
            self.inputs.pin_memory(),
            self.targets.pin_memory(),
            None if self.mask is None else self.mask.pin_memory(),
        )
