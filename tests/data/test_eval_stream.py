"""The evaluation stream: deterministic, every token scored once, counts checked independently."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from shard_files import write_shards

from lm1b.data.eval_stream import EvalStream
from lm1b.vocab import build_vocabulary


def _independent_counts(paths, vocab):
    """(sentences, words + sentence ends, <UNK> targets) counted straight from the bytes."""
    sentences = words = unk = 0
    for path in paths:
        for line in path.read_bytes().decode("utf-8").split("\n"):
            tokens = [t for t in line.rstrip("\r").split(" ") if t]
            if tokens:
                sentences += 1
                words += len(tokens) + 1
                unk += sum(t not in vocab for t in tokens)
    return sentences, words, unk


def _rows_sentences(stream, vocab):
    """Every row's masked pairs rebuilt into sentences, rows in rank-major order."""
    batches = list(stream)
    sentences = []
    for row in range(batches[0].inputs.shape[0]):
        mask = torch.cat([b.mask[row] for b in batches])
        inputs = torch.cat([b.inputs[row] for b in batches])[mask].tolist()
        targets = torch.cat([b.targets[row] for b in batches])[mask].tolist()
        current = []
        for x, y in zip(inputs, targets, strict=True):
            current = [x] if x == vocab.bos_id else current
            assert current[-1] == x
            current.append(y)
            if y == vocab.eos_id:
                sentences.append(" ".join(vocab.decode(current[1:-1])))
    return sentences


@pytest.mark.sample
def test_counts_match_an_independent_count_of_the_sample(sample_dir):
    heldout = sample_dir / "heldout-monolingual.tokenized.shuffled"
    vocab = build_vocabulary(
        [heldout / "news.en.heldout-00010-of-00050"], min_count=2, num_workers=1
    )
    valid = [heldout / "news.en.heldout-00011-of-00050"]
    stream = EvalStream(valid, vocab, batch_size=16, num_steps=20)
    sentences, words, unk = _independent_counts(valid, vocab)
    counts = stream.counts
    assert (counts.num_sentences, counts.num_words, counts.num_unk) == (sentences, words, unk)
    assert counts.num_tokens == words == 160_878  # docs/models.md's figure for this shard
    assert sum(b.num_tokens for b in stream) == counts.num_tokens


def test_every_token_is_scored_once_across_ranks(tmp_path):
    paths = write_shards(tmp_path, 2, 23)
    (tmp_path / "messy").write_bytes(b"\xef\xbb\xbfs9 l0 w\r\n\n  \ns9 l1\n")
    paths.append(tmp_path / "messy")
    vocab = build_vocabulary(paths[:1], num_workers=1)  # shard 1's words become <UNK>
    ranks = [
        EvalStream(paths, vocab, batch_size=3, num_steps=4, rank=r, world_size=2) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) > 0  # same number of batches: no collective hangs
    seen = [s for stream in ranks for s in _rows_sentences(stream, vocab)]
    expected = [
        " ".join(vocab.decode(vocab.encode(t.split())))
        for p in paths
        for t in p.read_text("utf-8-sig").split("\n")
        if t.strip()
    ]
    assert seen == expected  # in file order: rows walk contiguous shares
    sentences, words, unk = _independent_counts(paths, vocab)
    assert ranks[0].counts == ranks[1].counts
    assert (ranks[0].counts.num_sentences, ranks[0].counts.num_words, ranks[0].counts.num_unk) == (
        sentences,
        words,
        unk,
    )
    per_rank = [r.rank_counts for r in ranks]
    assert sum(c.num_tokens for c in per_rank) == ranks[0].counts.num_tokens == words
    assert all(
        sum(b.num_tokens for b in r) == c.num_tokens for r, c in zip(ranks, per_rank, strict=True)
    )
    assert sum(c.num_unk for c in per_rank) == unk


class _TwoPieces:
    """A subword-like tokenizer: every word becomes two ids."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.bos_id, self.eos_id, self.unk_id = vocab.bos_id, vocab.eos_id, vocab.unk_id

    def encode(self, words):
        return [i for w in words for i in (self.vocab.lookup(w), self.unk_id)]


def test_subword_tokenizer_counts_words_separately(corpus):
    paths, vocab = corpus
    counts = EvalStream(paths, _TwoPieces(vocab), batch_size=2, num_steps=5).counts
    sentences, words, _ = _independent_counts(paths, vocab)
    assert counts.num_words == words
    assert counts.num_tokens == 2 * (words - sentences) + sentences
    assert counts.num_unk == words - sentences


def test_padding_is_masked_and_batches_are_deterministic(corpus):
    paths, vocab = corpus
    first = list(EvalStream(paths, vocab, batch_size=5, num_steps=6))
    second = list(EvalStream(paths, vocab, batch_size=5, num_steps=6))
    assert all(
        torch.equal(a.inputs, b.inputs) and torch.equal(a.mask, b.mask)
        for a, b in zip(first, second, strict=True)
    )
    last = first[-1]
    assert not last.mask.all() and (last.targets[~last.mask] == 0).all()
    assert Counter(b.inputs.shape for b in first) == Counter({(5, 6): len(first)})


def test_no_sentences_is_an_error(tmp_path, corpus):
    empty = tmp_path / "empty"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="no sentences to evaluate"):
        EvalStream([empty], corpus[1], batch_size=2, num_steps=3)
