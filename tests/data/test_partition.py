"""Sharding is a partition: every (rank, worker) consumer reads a disjoint part, together the
whole corpus once per epoch; orders are pure functions of (seed, epoch)."""

from __future__ import annotations

from collections import Counter

import pytest
from shard_files import write_shards

from lm1b.data.partition import consumer_shares, line_order, shard_order
from lm1b.data.source import SentenceSource
from lm1b.vocab import build_vocabulary

RANKS, WORKERS = 2, 2


def _epoch_lines(paths, vocab, consumer, num_consumers, epoch, seed=3):
    """The lines (as text) consumer `consumer` reads in `epoch`."""
    source = SentenceSource(paths, vocab, seed=seed, consumer=consumer, num_consumers=num_consumers)
    source.load_state_dict({**source.state_dict(), "epoch": epoch})
    lines = []
    while True:
        ids, _ = source.take(1)
        if source.epoch != epoch:  # that sentence opened the next epoch
            return lines
        lines.append(" ".join(vocab.decode(ids[1:-1].tolist())))


@pytest.mark.parametrize("num_shards", [5, 1], ids=["shards>=consumers", "fewer-shards"])
def test_two_ranks_two_workers_partition_the_corpus(tmp_path, num_shards):
    paths = write_shards(tmp_path, num_shards, 11)
    vocab = build_vocabulary(paths, num_workers=1)
    corpus = Counter(line for p in paths for line in p.read_text().splitlines())
    for epoch in (0, 1):
        seen: Counter = Counter()
        for rank in range(RANKS):
            for worker in range(WORKERS):
                consumer = rank * WORKERS + worker
                seen.update(_epoch_lines(paths, vocab, consumer, RANKS * WORKERS, epoch))
        assert seen == corpus  # each line exactly once


def test_orders_are_pure_functions_of_seed_and_epoch():
    assert shard_order(10, 1, 0) == shard_order(10, 1, 0)
    assert shard_order(10, 1, 0) != shard_order(10, 1, 1)
    assert sorted(shard_order(10, 1, 5)) == list(range(10))
    assert (line_order(50, 1, 2, 3) == line_order(50, 1, 2, 3)).all()
    assert (line_order(50, 1, 2, 3) != line_order(50, 1, 2, 4)).any()


def test_shares_with_fewer_shards_split_lines():
    shares = consumer_shares(2, consumer=3, num_consumers=4, seed=0, epoch=0)
    assert [(s.phase, s.stride) for s in shares] == [(3, 4), (3, 4)]
    with pytest.raises(ValueError, match="consumer 4"):
        consumer_shares(2, consumer=4, num_consumers=4, seed=0, epoch=0)


def test_more_consumers_than_lines_raises_instead_of_looping(tmp_path):
    paths = write_shards(tmp_path, 1, 2)
    vocab = build_vocabulary(paths, num_workers=1)
    source = SentenceSource(paths, vocab, seed=0, consumer=3, num_consumers=4)
    with pytest.raises(ValueError, match="no sentence in a whole epoch"):
        source.take(1)
