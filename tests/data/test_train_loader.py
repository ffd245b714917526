"""The training stream: persistent rows, bit-exact resume, loader workers, failures."""

from __future__ import annotations

import io

import pytest
import torch
from shard_files import write_shards

from lm1b.data.train_loader import TrainLoader
from lm1b.vocab import build_vocabulary

STEPS = 7


def _loader(paths, vocab, **kwargs):
    options = {"batch_size": 4, "num_steps": STEPS, "seed": 5, **kwargs}
    return TrainLoader(paths, vocab, **options)


def _take(loader, count):
    batches = iter(loader)
    return [next(batches) for _ in range(count)]


def _row_sentences(batches, row, vocab):
    """Rebuild row `row`'s sentences from its pairs, checking that each window continues the
    previous one: every pair's input is the previous pair's target inside a sentence."""
    sentences, current = [], None
    inputs = torch.cat([b.inputs[row] for b in batches]).tolist()
    targets = torch.cat([b.targets[row] for b in batches]).tolist()
    for x, y in zip(inputs, targets, strict=True):
        if x == vocab.bos_id:
            assert current is None, "a sentence started before the previous one ended"
            current = [x]
        assert current is not None and current[-1] == x, "row does not continue"
        current.append(y)
        if y == vocab.eos_id:
            sentences.append(" ".join(vocab.decode(current[1:-1])))
            current = None
    return sentences


def test_rows_continue_across_batches_and_hold_whole_sentences(corpus):
    paths, vocab = corpus
    lines = {line for p in paths for line in p.read_text().splitlines()}
    batches = _take(_loader(paths, vocab), 60)
    assert batches[0].inputs.shape == (4, STEPS) and batches[0].inputs.dtype == torch.int64
    assert all(b.mask is None and b.num_tokens == 4 * STEPS for b in batches)
    for row in range(4):
        sentences = _row_sentences(batches, row, vocab)
        assert sentences and set(sentences) <= lines


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("rank", [0, 1])
def test_resume_is_bit_exact_across_shard_and_epoch_boundaries(corpus, rank):
    paths, vocab = corpus
    options = {"rank": rank, "world_size": 2, "batch_size": 3}
    reference = _take(_loader(paths, vocab, **options), 80)
    loader = _loader(paths, vocab, **options)
    batches, states = iter(loader), []
    for _ in range(75):
        states.append(_roundtrip(loader.state_dict()))
        next(batches)
    positions = [
        (s["consumers"][0]["source"]["epoch"], s["consumers"][0]["source"]["share"]) for s in states
    ]
    assert len({e for e, _ in positions}) >= 3 and len(set(positions)) >= 5  # crossed both
    for k, state in enumerate(states):
        resumed = _loader(paths, vocab, **options)
        resumed.load_state_dict(state)
        for expected, got in zip(reference[k : k + 5], _take(resumed, 5), strict=True):
            assert torch.equal(expected.inputs, got.inputs)
            assert torch.equal(expected.targets, got.targets)


def test_loader_workers_keep_rows_and_resume_exactly(corpus):
    paths, vocab = corpus
    reference = _take(_loader(paths, vocab, consumers_per_rank=2), 12)
    workers = _loader(paths, vocab, num_workers=2)
    batches = iter(workers)
    for expected in reference[:6]:
        assert torch.equal(next(batches).inputs, expected.inputs)
    state = _roundtrip(workers.state_dict())
    del batches
    in_process = _loader(paths, vocab, consumers_per_rank=2)
    in_process.load_state_dict(state)
    resumed_workers = _loader(paths, vocab, num_workers=2)
    resumed_workers.load_state_dict(state)
    for expected, a, b in zip(
        reference[6:], _take(in_process, 6), _take(resumed_workers, 6), strict=True
    ):
        assert torch.equal(a.targets, expected.targets) and torch.equal(b.targets, expected.targets)


def test_state_from_another_layout_is_refused(corpus):
    paths, vocab = corpus
    state = _loader(paths, vocab, consumers_per_rank=2).state_dict()
    with pytest.raises(ValueError, match="consumers per rank"):
        _loader(paths, vocab).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        _loader(paths, vocab, seed=6).load_state_dict(_loader(paths, vocab).state_dict())


def test_unequal_parts_never_run_dry(tmp_path):
    paths = write_shards(tmp_path, 3, 10)  # rank 0 reads 2 shards per epoch, rank 1 one
    vocab = build_vocabulary(paths, num_workers=1)
    ranks = [_loader(paths, vocab, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        assert len(_take(loader, 40)) == 40
    assert ranks[1].epoch > ranks[0].epoch


def test_shard_vanishing_mid_run_names_the_file(corpus):
    paths, vocab = corpus
    batches = iter(_loader(paths, vocab))
    next(batches)
    for path in paths:
        path.unlink()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        for _ in range(100):
            next(batches)


def test_empty_files_raise_instead_of_looping(tmp_path, corpus):
    _, vocab = corpus
    empty = tmp_path / "empty"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no sentence in a whole epoch"):
        _take(_loader([empty], vocab), 1)


def test_more_workers_than_rows_is_refused(corpus):
    paths, vocab = corpus
    with pytest.raises(ValueError, match="num_workers"):
        _loader(paths, vocab, batch_size=1, num_workers=2)
