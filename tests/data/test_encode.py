"""The word-level fast path encodes exactly like one `encode` call per sentence."""

from __future__ import annotations

import numpy as np

from lm1b.data import encode
from lm1b.data.text import read_shard


class _PerSentence:
    """The vocabulary behind an interface that forces the general, per-sentence path."""

    def __init__(self, vocab):
        self.bos_id, self.eos_id, self.unk_id = vocab.bos_id, vocab.eos_id, vocab.unk_id
        self.encode = vocab.encode


def test_fast_path_matches_the_general_path(corpus, monkeypatch):
    paths, vocab = corpus
    lines = [line for path in paths for line in read_shard(path)] + ["never seen words"]
    monkeypatch.setattr(encode, "_CHUNK_LINES", 7)  # several chunks, the last one partial
    fast = encode.encode_lines(lines, vocab)
    general = encode.encode_lines(lines, _PerSentence(vocab))
    for name in ("ids", "offsets", "words"):
        assert np.array_equal(getattr(fast, name), getattr(general, name))
    last = fast.ids[fast.offsets[-2] : fast.offsets[-1]].tolist()
    assert last == [vocab.bos_id] + [vocab.unk_id] * 3 + [vocab.eos_id]
