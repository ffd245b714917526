"""Averaging the vocabulary tables' row-sparse gradients over ranks, in sizes fixed by the batch.

NCCL cannot all-reduce sparse tensors, and a dense all-reduce of the 1.6B-parameter tables
costs tens of ms per step, so the rows a step touched are exchanged instead. Every rank's
gradient of a table stores the same number of rows: one per lookup, uncoalesced (B/k x T for
the embedding, B/k x T + S for the softmax tables). So the rows are all-gathered as they are,
with no coalescing and no exchange of counts, and nothing waits for the device. Every rank
then holds the same rows in the same order, and the table optimizer sums repeated ids
(RowSparseAdagrad: deterministically, so the tables stay bitwise identical on every rank).

The softmax tables' last S rows are the sampled ids, the same on every rank and in the same
order (one sample set from a shared seed; lm1b.models.softmax looks up [targets, sampled ids]).
Their gradient is one (S, ...) block, all-reduced: 2 (k-1)/k blocks move per rank instead of
the k-1 an all-gather would move. Only the rank's own target rows are gathered.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_gather_rows(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """(m, ...) on every rank, m the same everywhere -> (world_size * m, ...), rank order."""
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered)


@torch.no_grad()
def average_sparse_gradient(
    param: torch.nn.Parameter, world_size: int, num_shared: int = 0
) -> None:
    """Replace `param.grad` (sparse COO, rows = first dimension, as autograd left it) by its
    mean over ranks: an uncoalesced sparse gradient of every rank's rows.

    Every rank must store the same number m of rows (a rank whose shapes differ would leave the
    others waiting in the collective), the last `num_shared` of them with the same ids in the
    same order on every rank: those are summed by one all-reduce, the first m - num_shared
    gathered with their ids.
    """
    if world_size == 1:
        return
    grad = param.grad
    if grad is None or grad.is_coalesced():
        state = "no gradient" if grad is None else "a coalesced gradient"
        raise RuntimeError(
            f"the {tuple(param.shape)} table has {state}; its exchange needs the rows of every "
            "lookup, as autograd stores them, in the same number on every rank"
        )
    ids, rows = grad._indices()[0], grad._values()  # (m,), (m, ...)
    own = ids.numel() - num_shared
    all_ids = _all_gather_rows(ids[:own], world_size)  # (k (m - S),)
    all_rows = _all_gather_rows(rows[:own], world_size)
    if num_shared:
        shared_rows = rows[own:].clone()  # (S, ...)
        dist.all_reduce(shared_rows)
        all_ids, all_rows = torch.cat([all_ids, ids[own:]]), torch.cat([all_rows, shared_rows])
    param.grad = torch.sparse_coo_tensor(
        all_ids.unsqueeze(0), all_rows / world_size, param.shape, check_invariants=False
    )
