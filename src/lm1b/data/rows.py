"""Persistent rows: the original recipe's batching for one consumer.

Each of the consumer's R rows is an endless stream of whole sentences `<S> w1 ... wn </S>`.
Within a sentence the (input, target) pairs are (s[j], s[j + 1]); the pair (</S>, next <S>) is
not a training position, exactly as in f-lm, so the predicted tokens are the words plus one
sentence end per sentence (the same count perplexity uses). A window holds the next T pairs of
each row, so a window is T + 1 consecutive ids wherever no sentence starts inside it. Before
each window, the rows short of T pending pairs take the next sentences of the consumer's
stream in rounds (each round, every row still short takes one sentence, in row order) until
they have T; so row r of window i + 1 continues row r of window i
and the trainer can carry the LSTM state. There is no padding.

Speed: the pending pairs of all rows live in two (R, capacity) arrays sharing one read head
(every row consumes exactly T pairs per window), so a window is one slice, and the Python work
is a few integer operations per sentence; the ids are copied in one vectorized scatter. After a window each row's pending pairs
are the unread end of a single sentence, which is what the state stores.
"""

from __future__ import annotations

import numpy as np

from lm1b.data.source import SentenceSource

_INITIAL_WIDTH = 512  # pending pairs per row before the first growth


class RowStream:
    """`num_rows` persistent rows fed by one `SentenceSource`, cut into windows of `num_steps`."""

    def __init__(self, source: SentenceSource, num_rows: int, num_steps: int) -> None:
        if num_rows < 1 or num_steps < 1:
            raise ValueError(f"num_rows={num_rows} and num_steps={num_steps} must be at least 1")
        self.source = source
        self.num_rows = num_rows
        self.num_steps = num_steps
        width = max(_INITIAL_WIDTH, 4 * num_steps)
        # Row r's pending pairs are columns head .. ends[r] - 1 of inputs/targets: (R, width).
        self._inputs = np.zeros((num_rows, width), dtype=np.int64)
        self._targets = np.zeros((num_rows, width), dtype=np.int64)
        self._head = 0
        self._ends = np.zeros(num_rows, dtype=np.int64)

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of the next window, each (num_rows, num_steps) int64."""
        self._compact()
        need = self._head + self.num_steps
        short = np.flatnonzero(self._ends < need)  # rows that need sentences, in row order
        while len(short):  # one round: each short row takes the next sentence
            ids, lengths = self.source.take(len(short))
            self._scatter(ids, lengths, short, self._ends[short])
            self._ends[short] += lengths - 1
            short = short[self._ends[short] < need]
        window = slice(self._head, need)
        self._head = need
        return self._inputs[:, window].copy(), self._targets[:, window].copy()

    def _scatter(
        self, ids: np.ndarray, lengths: np.ndarray, rows: np.ndarray, columns: np.ndarray
    ) -> None:
        """Write the pairs of sentence k (ids[sum(lengths[:k]):][:lengths[k]]) into row rows[k]
        from column columns[k] on, for all k in one vectorized step (no Python work per token).
        ids: (total,), lengths, rows, columns: (sentences,)."""
        pairs = lengths - 1
        if int((columns + pairs).max()) > self._inputs.shape[1]:
            self._grow(int((columns + pairs).max()))
        first_id = np.cumsum(lengths) - lengths
        first_pair = np.cumsum(pairs) - pairs
        within = np.arange(int(pairs.sum())) - np.repeat(first_pair, pairs)  # (total pairs,)
        source = np.repeat(first_id, pairs) + within
        target_rows = np.repeat(rows, pairs)
        target_columns = np.repeat(columns, pairs) + within
        self._inputs[target_rows, target_columns] = ids[source]
        self._targets[target_rows, target_columns] = ids[source + 1]

    def _compact(self) -> None:
        """Move the pending pairs to column 0 once the head passed half the width (amortized)."""
        head = self._head
        if head <= self._inputs.shape[1] // 2:
            return
        used = int(self._ends.max(initial=head)) - head
        for array in (self._inputs, self._targets):
            array[:, :used] = array[:, head : head + used].copy()
        self._ends -= head
        self._head = 0

    def _grow(self, width: int) -> None:
        """Widen the pending arrays to at least `width` columns (a sentence longer than seen)."""
        new_width = max(width, 2 * self._inputs.shape[1])
        for name in ("_inputs", "_targets"):
            old = getattr(self, name)
            new = np.zeros((self.num_rows, new_width), dtype=np.int64)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)

    def state_dict(self) -> dict:
        """The source position plus each row's unfinished sentence as a list of ids."""
        rests = []
        for row, end in enumerate(self._ends.tolist()):
            pending = self._inputs[row, self._head : end].tolist()
            rests.append(pending + [int(self._targets[row, end - 1])] if pending else [])
        return {"source": self.source.state_dict(), "num_steps": self.num_steps, "rests": rests}

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state` (saved by a stream with the same rows, steps and source)."""
        if len(state["rests"]) != self.num_rows or state["num_steps"] != self.num_steps:
            raise ValueError(
                f"data state has {len(state['rests'])} rows of {state['num_steps']} steps; this "
                f"loader has {self.num_rows} rows of {self.num_steps}: keep batch_size, "
                "num_steps, ranks and workers when resuming"
            )
        self.source.load_state_dict(state["source"])
        self._head = 0
        lengths = np.array([len(rest) for rest in state["rests"]], dtype=np.int64)
        self._ends = np.maximum(lengths - 1, 0)
        rows = np.flatnonzero(lengths)
        if len(rows):
            ids = np.array([i for rest in state["rests"] for i in rest], dtype=np.int64)
            self._scatter(ids, lengths[rows], rows, np.zeros_like(rows))
