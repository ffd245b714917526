"""Averaging the vocabulary tables' row-sparse gradients over ranks.

NCCL cannot all-reduce sparse tensors, and a dense all-reduce of the 1.6B-parameter tables
costs tens of ms per step, so each rank all-gathers the (ids, rows) it touched and every rank
sums all of them: every rank then applies the same sparse update and the tables stay
identical without ever moving a dense table.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """all_gather for first dimensions that differ per rank: pad to the largest, then trim."""
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [g[:n] for g, n in zip(gathered, sizes, strict=True)]


@torch.no_grad()
def average_sparse_gradient(param: torch.nn.Parameter, world_size: int) -> None:
    """Replace `param.grad` (sparse COO, rows = first dimension) by its mean over ranks.

    Sizes: ids (n_r,) and rows (n_r, *param.shape[1:]) on rank r; the result is coalesced.
    A rank that touched no row still takes part (n_r = 0), so no rank waits forever.
    """
    if world_size == 1:
        return
    grad = param.grad
    if grad is None:
        grad = torch.sparse_coo_tensor(
            torch.empty((1, 0), dtype=torch.long, device=param.device),
            param.new_empty((0, *param.shape[1:])),
            param.shape,
            check_invariants=False,
        )
    grad = grad.coalesce()
    ids, rows = grad.indices()[0], grad.values()
    count = torch.tensor([ids.numel()], device=param.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    all_ids = torch.cat(_all_gather_padded(ids, sizes))
    all_rows = torch.cat(_all_gather_padded(rows, sizes)) / world_size
    param.grad = torch.sparse_coo_tensor(
        all_ids.unsqueeze(0), all_rows, param.shape, check_invariants=False
    ).coalesce()
