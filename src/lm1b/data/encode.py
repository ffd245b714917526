"""Turning lines into one flat id buffer: `<S> ids </S>` per sentence, no per-token Python
work after the tokenizer's own lookup (the loader's hot path, see docs/performance.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lm1b.tokenizer import Tokenizer
from lm1b.vocab import Vocabulary

_FLUSH_IDS = 1 << 20  # convert the Python id list to numpy every ~1M ids (bounded memory)
_CHUNK_LINES = 1 << 14  # lines encoded per call on the word-level path


@dataclass
class SentenceBuffer:
    """Sentences as one flat array: sentence k is `ids[offsets[k]:offsets[k + 1]]`, i.e.
    `<S> t1 ... tm </S>`, and had `words[k]` corpus tokens (before subword splitting)."""

    ids: np.ndarray  # (total ids,) int32
    offsets: np.ndarray  # (num sentences + 1,) int64
    words: np.ndarray  # (num sentences,) int64

    def __len__(self) -> int:
        return len(self.words)


def encode_lines(lines: Sequence[str], tokenizer: Tokenizer) -> SentenceBuffer:
    """Tokenize normalized lines (`lm1b.data.text.read_lines`) into a `SentenceBuffer`."""
    if _is_word_level(tokenizer):
        return _encode_words(lines, tokenizer)
    return _encode_sentences(lines, tokenizer)


def _is_word_level(tokenizer: Tokenizer) -> bool:
    """True for word tokenizers, whose ids of a sentence are the ids of its words one by one,
    so a whole shard can be encoded in one call."""
    return isinstance(getattr(tokenizer, "vocabulary", tokenizer), Vocabulary)


def _encode_words(lines: Sequence[str], tokenizer: Tokenizer) -> SentenceBuffer:
    """The word-level fast path: one `encode` per chunk of lines, markers inserted by numpy.
    Chunks bound the transient Python strings to about `_CHUNK_LINES` lines' worth."""
    words = np.array([line.count(" ") + 1 for line in lines], dtype=np.int64)  # (n,)
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(words + 2, out=offsets[1:])
    ids = np.empty(offsets[-1], dtype=np.int32)
    ids[offsets[:-1]] = tokenizer.bos_id
    ids[offsets[1:] - 1] = tokenizer.eos_id
    is_word = np.ones(len(ids), dtype=bool)
    is_word[offsets[:-1]] = False
    is_word[offsets[1:] - 1] = False
    for first in range(0, len(lines), _CHUNK_LINES):
        last = min(first + _CHUNK_LINES, len(lines))
        span = slice(offsets[first], offsets[last])
        ids[span][is_word[span]] = tokenizer.encode(" ".join(lines[first:last]).split(" "))
    return SentenceBuffer(ids, offsets, words)


def _encode_sentences(lines: Iterable[str], tokenizer: Tokenizer) -> SentenceBuffer:
    """The general path: one `encode` per sentence (subword tokenizers)."""
    encode, bos, eos = tokenizer.encode, tokenizer.bos_id, tokenizer.eos_id
    chunks: list[np.ndarray] = []
    pending: list[int] = []
    lengths: list[int] = []
    words: list[int] = []
    for line in lines:
        tokens = line.split(" ")
        ids = encode(tokens)
        pending.append(bos)
        pending.extend(ids)
        pending.append(eos)
        lengths.append(len(ids) + 2)
        words.append(len(tokens))
        if len(pending) >= _FLUSH_IDS:
            chunks.append(np.array(pending, dtype=np.int32))
            pending = []
    chunks.append(np.array(pending, dtype=np.int32))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SentenceBuffer(np.concatenate(chunks), offsets, np.array(words, dtype=np.int64))
