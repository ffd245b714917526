"""Averaging the vocabulary tables' row-sparse gradients over ranks.

NCCL cannot all-reduce sparse tensors, and a dense all-reduce of the 1.6B-parameter tables
costs tens of ms per step, so each rank all-gathers the (ids, rows) it touched and every rank
sums all of them: every rank then applies the same sparse update and the tables stay
identical without ever moving a dense table.

The softmax tables' sampled rows are the same on every rank (one sample set, drawn from a
shared seed), so their gradient is a fixed-size (S, ...) block in the same order everywhere:
it is all-reduced, which moves 2 (k-1)/k blocks per rank instead of the k-1 an all-gather
would; only the rank's own target rows are all-gathered.
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


def _split_shared_rows(
    ids: torch.Tensor, rows: torch.Tensor, shared_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted shared ids (S,), their rows (S, ...) - zero where this rank has none, the other
    ids (n,), their rows (n, ...)) from coalesced ids (m,) and rows (m, ...)."""
    shared = torch.unique(shared_ids)  # sorted, identical on every rank
    is_shared = torch.isin(ids, shared)
    block = rows.new_zeros((shared.numel(), *rows.shape[1:]))
    block.index_add_(0, torch.searchsorted(shared, ids[is_shared]), rows[is_shared])
    return shared, block, ids[~is_shared], rows[~is_shared]


@torch.no_grad()
def average_sparse_gradient(
    param: torch.nn.Parameter, world_size: int, shared_ids: torch.Tensor | None = None
) -> None:
    """Replace `param.grad` (sparse COO, rows = first dimension) by its mean over ranks.

    Sizes: ids (n_r,) and rows (n_r, *param.shape[1:]) on rank r; the result is coalesced.
    A rank that touched no row still takes part (n_r = 0), so no rank waits forever.
    `shared_ids`: rows every rank holds in the same order (the sampled ids; identical on
    all ranks), all-reduced as one dense block instead of gathered.
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
    if shared_ids is not None:
        shared, block, ids, rows = _split_shared_rows(ids, rows, shared_ids)
        dist.all_reduce(block)
    count = torch.tensor([ids.numel()], device=param.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    all_ids = torch.cat(_all_gather_padded(ids, sizes))
    all_rows = torch.cat(_all_gather_padded(rows, sizes))
    if shared_ids is not None:
        all_ids, all_rows = torch.cat([shared, all_ids]), torch.cat([block, all_rows])
    all_rows = all_rows / world_size
    param.grad = torch.sparse_coo_tensor(
        all_ids.unsqueeze(0), all_rows, param.shape, check_invariants=False
    ).coalesce()
