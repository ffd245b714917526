"""Who reads what, in which order: pure functions of (seed, epoch), shared by every consumer.

A consumer is one (rank, loader worker) pair; consumer ids run `rank * per_rank + worker`
over `num_consumers = world_size * per_rank`. Every epoch the shard order is shuffled and
the lines of each shard are shuffled (the original recipe), both derived from the seed alone,
so a resumed stream re-derives them instead of storing them.

Partition policy:
- at least as many shards as consumers: after the epoch's shuffle, consumer c reads the shards
  at positions c, c + C, c + 2C, ... whole (some consumers may get one shard more);
- fewer shards than consumers: every consumer reads every shard (in the epoch's order) and keeps
  the lines at positions c, c + C, ... of the shard's shuffled line order.
Either way the consumers' parts are disjoint and together hold every line once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Distinct streams for the two shuffles, so shard and line orders never share random numbers.
_SHARD_STREAM = 0
_LINE_STREAM = 1


@dataclass(frozen=True)
class Share:
    """The lines of shard `shard` (an index into the file list) that one consumer reads: the
    positions `phase, phase + stride, ...` of the shard's shuffled line order."""

    shard: int
    phase: int = 0
    stride: int = 1


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The epoch's shuffled order of shard indices 0..num_shards-1."""
    rng = np.random.default_rng([seed, epoch, _SHARD_STREAM])
    return rng.permutation(num_shards).tolist()


def line_order(num_lines: int, seed: int, epoch: int, shard: int) -> np.ndarray:
    """The epoch's shuffled order of the lines 0..num_lines-1 of shard `shard`: (num_lines,)."""
    rng = np.random.default_rng([seed, epoch, _LINE_STREAM, shard])
    return rng.permutation(num_lines)


def consumer_shares(
    num_shards: int, consumer: int, num_consumers: int, seed: int, epoch: int
) -> list[Share]:
    """The shares consumer `consumer` reads in `epoch`, in reading order (see module doc)."""
    if not 0 <= consumer < num_consumers:
        raise ValueError(f"consumer {consumer} is not in 0..{num_consumers - 1}")
    order = shard_order(num_shards, seed, epoch)
    if num_shards >= num_consumers:
        return [Share(shard) for shard in order[consumer::num_consumers]]
    return [Share(shard, consumer, num_consumers) for shard in order]


def shares_per_epoch(num_shards: int, consumer: int, num_consumers: int) -> int:
    """How many shares `consumer_shares` returns (the same every epoch)."""
    if num_shards >= num_consumers:
        return len(range(consumer, num_shards, num_consumers))
    return num_shards
