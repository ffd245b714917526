"""The evaluation stream: every token of every sentence scored exactly once, deterministically.

The files are read in order, without shuffling, into one flat buffer (an evaluation set is
small: the standard test shard is about 160K tokens, 4 bytes each). Each sentence contributes
its pairs (s[j], s[j + 1]) as in training, so the predicted tokens are the subword ids plus one
sentence end per sentence. The sentences are cut into `world_size * batch_size` contiguous
shares holding about equal numbers of pairs (cuts fall between sentences); rank r's row b walks
share `r * batch_size + b` window by window, so the trainer carries the LSTM state across
windows within a row, as in training. The tail of every row is padded (input and target
`pad_id`) and masked out. Every rank yields the same number of batches, so collectives in a
distributed evaluation cannot hang.

`counts` gives the totals over all ranks: sentences, predicted tokens, words (corpus tokens plus
sentence ends: the denominator of per-word perplexity, whatever the tokenizer) and `<UNK>`
targets; `rank_counts` gives this rank's share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lm1b.data.batch import Batch
from lm1b.data.encode import SentenceBuffer, encode_lines
from lm1b.data.text import read_shard
from lm1b.tokenizer import Tokenizer


@dataclass(frozen=True)
class EvalCounts:
    num_sentences: int
    num_tokens: int  # predicted ids: (subword) tokens + sentence ends
    num_words: int  # corpus tokens + sentence ends: per-word perplexity's denominator
    num_unk: int  # predicted ids equal to the tokenizer's unk_id


def _read_all(files: Sequence[Path], tokenizer: Tokenizer, max_line_tokens: int | None):
    """All sentences of `files`, in file order, as one `SentenceBuffer`."""
    lines = [line for path in files for line in read_shard(path, max_line_tokens=max_line_tokens)]
    return encode_lines(lines, tokenizer)


def _pairs(buffer: SentenceBuffer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs and targets of every sentence's pairs, flat, and each sentence's first pair:
    (P,), (P,), (num sentences + 1,) with P = total ids - num sentences."""
    inputs = np.delete(buffer.ids, buffer.offsets[1:] - 1)  # drop each sentence's </S>
    targets = np.delete(buffer.ids, buffer.offsets[:-1])  # drop each sentence's <S>
    pair_offsets = buffer.offsets - np.arange(len(buffer.offsets))
    return inputs, targets, pair_offsets


def _share_bounds(pair_offsets: np.ndarray, num_shares: int) -> np.ndarray:
    """Sentence indices cutting the sentences into `num_shares` runs of about equal pairs:
    (num_shares + 1,), from 0 to the number of sentences."""
    total = pair_offsets[-1]
    goals = np.arange(num_shares + 1) * total / num_shares
    bounds = np.searchsorted(pair_offsets, goals, side="left")
    bounds[-1] = len(pair_offsets) - 1
    return np.maximum.accumulate(bounds)


class EvalStream:
    """Masked evaluation batches for rank `rank` of `world_size`, `batch_size` rows each."""

    def __init__(
        self,
        files: Sequence[Path],
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        num_steps: int,
        rank: int = 0,
        world_size: int = 1,
        max_line_tokens: int | None = None,
        pad_id: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        buffer = _read_all(files, tokenizer, max_line_tokens)
        if not len(buffer):
            raise ValueError(f"no sentences to evaluate in {[str(f) for f in files]}")
        inputs, targets, pair_offsets = _pairs(buffer)
        bounds = _share_bounds(pair_offsets, world_size * batch_size)
        starts, ends = pair_offsets[bounds[:-1]], pair_offsets[bounds[1:]]  # per share, pairs
        self.num_steps = num_steps
        self.num_batches = -(-int((ends - starts).max(initial=0)) // num_steps)
        width = self.num_batches * num_steps
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        # (batch_size, width) matrices of this rank's rows, padded at the end of each row.
        self._inputs = np.full((batch_size, width), pad_id, dtype=np.int64)
        self._targets = np.full((batch_size, width), pad_id, dtype=np.int64)
        self._mask = np.zeros((batch_size, width), dtype=bool)
        for row, (start, end) in enumerate(zip(starts[mine], ends[mine], strict=True)):
            self._inputs[row, : end - start] = inputs[start:end]
            self._targets[row, : end - start] = targets[start:end]
            self._mask[row, : end - start] = True
        self._matrices = (self._inputs, self._targets, self._mask)
        self.counts = self._count(buffer, targets, 0, len(buffer), tokenizer.unk_id)
        rank_bounds = bounds[mine.start], bounds[mine.stop]
        self.rank_counts = self._count(buffer, targets, *rank_bounds, tokenizer.unk_id)

    @staticmethod
    def _count(buffer: SentenceBuffer, targets: np.ndarray, first: int, last: int, unk: int):
        """Counts over sentences first..last-1."""
        pair_offsets = buffer.offsets - np.arange(len(buffer.offsets))
        lo, hi = pair_offsets[first], pair_offsets[last]
        return EvalCounts(
            num_sentences=int(last - first),
            num_tokens=int(hi - lo),
            num_words=int(buffer.words[first:last].sum() + (last - first)),
            num_unk=int(np.count_nonzero(targets[lo:hi] == unk)),
        )

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        """The batches in order; the first of every row starts a fresh state."""
        for index in range(self.num_batches):
            window = slice(index * self.num_steps, (index + 1) * self.num_steps)
            yield Batch(
                *(torch.from_numpy(np.ascontiguousarray(m[:, window])) for m in self._matrices)
            )
