"""The endless sentence stream of one consumer: its share of every epoch, epochs rolling over.

Only the share being read is in memory (its lines, then its ids). The position is three
integers (epoch, share index, sentence index within the share); the shuffles are re-derived
from (seed, epoch, shard) by `lm1b.data.partition`, so the state stays tiny.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lm1b.data.encode import SentenceBuffer, encode_lines
from lm1b.data.partition import Share, consumer_shares, line_order, shares_per_epoch
from lm1b.data.text import read_shard
from lm1b.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def files_digest(files: Sequence[Path]) -> str:
    """A short fingerprint of the file names (not their directory, so a corpus may move),
    stored in the state to refuse a resume over a different file list."""
    return hashlib.sha1("\n".join(f.name for f in files).encode()).hexdigest()[:16]


class SentenceSource:
    """Sentences (`<S> ids </S>` arrays) of consumer `consumer` of `num_consumers`, forever."""

    def __init__(
        self,
        files: Sequence[Path],
        tokenizer: Tokenizer,
        *,
        seed: int,
        consumer: int,
        num_consumers: int,
        max_line_tokens: int | None = None,
    ) -> None:
        if not files:
            raise ValueError("SentenceSource needs at least one file")
        self.files = [Path(f) for f in files]
        self.tokenizer = tokenizer
        self.seed = seed
        self.consumer = consumer
        self.num_consumers = num_consumers
        self.max_line_tokens = max_line_tokens
        self.epoch = 0
        self.share = 0  # index into this epoch's shares
        self.sentence = 0  # next sentence of the loaded share
        self._buffer: SentenceBuffer | None = None
        self._empty_shares = 0  # consecutive shares that held no sentence (endless-loop guard)
        self._shares_per_epoch = shares_per_epoch(len(self.files), consumer, num_consumers)

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `count` sentences (`<S> ids </S>`, length >= 2 each), concatenated:
        ids (total,) int32 and lengths (count,) int64. A copy: the shard can be freed."""
        ids: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        while count > 0:
            if self._buffer is None:
                self._buffer = self._load(self.epoch, self.share)
            available = len(self._buffer) - self.sentence
            if available == 0:
                self._advance()
                continue
            first, last = self.sentence, self.sentence + min(count, available)
            offsets = self._buffer.offsets[first : last + 1]
            ids.append(self._buffer.ids[offsets[0] : offsets[-1]])
            lengths.append(np.diff(offsets))
            self.sentence = last
            count -= last - first
        return np.concatenate(ids), np.concatenate(lengths)

    def _advance(self) -> None:
        """Move to the next share (next epoch after the last), failing if a whole epoch's worth
        of shares was empty: an endless stream must never spin on nothing."""
        self._empty_shares = self._empty_shares + 1 if self.sentence == 0 else 0
        if self._empty_shares >= self._shares_per_epoch:
            raise ValueError(
                f"consumer {self.consumer} of {self.num_consumers} found no sentence in a whole "
                f"epoch of {len(self.files)} file(s) ({self.files[0]}, ...): the files are empty "
                "or hold fewer lines than (ranks x loader workers)"
            )
        self.share += 1
        if self.share == self._shares_per_epoch:
            self.epoch += 1
            self.share = 0
            logger.debug("consumer %d starts epoch %d", self.consumer, self.epoch)
        self.sentence = 0
        self._buffer = None

    def _load(self, epoch: int, share_index: int) -> SentenceBuffer:
        """Read, shuffle and tokenize the consumer's part of one shard."""
        shares = consumer_shares(
            len(self.files), self.consumer, self.num_consumers, self.seed, epoch
        )
        share: Share = shares[share_index]
        path = self.files[share.shard]
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} was listed at start-up but no longer exists")
        lines = read_shard(path, max_line_tokens=self.max_line_tokens)
        order = line_order(len(lines), self.seed, epoch, share.shard)[share.phase :: share.stride]
        buffer = encode_lines([lines[i] for i in order], self.tokenizer)
        logger.debug(
            "consumer %d epoch %d: %d sentences of %s", self.consumer, epoch, len(buffer), path
        )
        return buffer

    def state_dict(self) -> dict:
        """The position: plain ints and strings (loads with torch.load(weights_only=True))."""
        return {
            "epoch": self.epoch,
            "share": self.share,
            "sentence": self.sentence,
            "seed": self.seed,
            "consumer": self.consumer,
            "num_consumers": self.num_consumers,
            "files": files_digest(self.files),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state`; the shard is re-read and re-shuffled on the next `next()`."""
        expected = self.state_dict()
        for key in ("seed", "consumer", "num_consumers", "files"):
            if state[key] != expected[key]:
                raise ValueError(
                    f"data state was saved with {key}={state[key]!r} but this loader has "
                    f"{expected[key]!r}: resume needs the same seed, files, ranks and workers"
                )
        self.epoch, self.share, self.sentence = state["epoch"], state["share"], state["sentence"]
        self._buffer = None
        self._empty_shares = 0
