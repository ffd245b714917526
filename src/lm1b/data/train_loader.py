"""The training stream of one rank: B persistent rows, optionally fed by loader workers.

Rows are owned by consumers. A rank has `consumers_per_rank` consumers (by default one per
loader worker, or one when `num_workers=0`); consumer k owns a fixed contiguous block of the
rank's B rows and reads its own part of the corpus (`lm1b.data.partition`). Each batch is
the concatenation, in consumer order, of every consumer's next window. With workers, worker k
runs consumer k and the DataLoader returns the workers' windows strictly round-robin (every
worker is endless), so item i comes from worker i mod K: the main process takes K items at a
time and checks their worker ids, and row r of batch i + 1 continues row r of batch i.

Exact resume: every worker attaches its consumer's state to each window it sends; the loader
keeps the states of the windows it has handed to the trainer (not of prefetched ones), so
`state_dict()` after n batches is the position after exactly those n batches. The state holds
per consumer the epoch, share and sentence index, the seed, a file-list digest and each row's
unfinished sentence: a few ints per row, loadable with torch.load(weights_only=True). It can be
resumed with any `num_workers` as long as world_size x consumers_per_rank, batch_size,
num_steps, seed and files are unchanged (`num_workers=0, consumers_per_rank=K` replays a
K-worker run in one process).

The stream is endless, so unequal parts cannot make distributed training hang: every rank
always has a next batch. `epoch` is the smallest epoch any of the rank's consumers is in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lm1b.data.batch import Batch
from lm1b.data.rows import RowStream
from lm1b.data.source import SentenceSource
from lm1b.tokenizer import Tokenizer


class TrainLoader:
    """Endless training batches (`Batch`, inputs and targets (B, T) int64) for one rank."""

    def __init__(
        self,
        files: Sequence[Path],
        tokenizer: Tokenizer,
        *,
        batch_size: int,
        num_steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        consumers_per_rank: int | None = None,
        max_line_tokens: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        per_rank = consumers_per_rank or max(1, num_workers)
        if num_workers and per_rank != num_workers:
            raise ValueError(f"consumers_per_rank={per_rank} must equal num_workers={num_workers}")
        if batch_size < per_rank:
            raise ValueError(
                f"batch_size={batch_size} rows per rank cannot be shared by {per_rank} loader "
                "workers: use fewer data.num_workers or a larger data.batch_size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.files = [Path(f) for f in files]
        self.tokenizer = tokenizer
        self.num_steps = num_steps
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.consumers_per_rank = per_rank
        self.max_line_tokens = max_line_tokens
        self.pin_memory = pin_memory
        self.rows_per_consumer = [
            len(block) for block in np.array_split(range(batch_size), per_rank)
        ]
        self._live: list[RowStream] | None = None  # the in-process iterator's streams
        self._states = [self._make_stream(k).state_dict() for k in range(per_rank)]

    def _make_stream(self, k: int, state: dict | None = None) -> RowStream:
        """Consumer k's row stream, at `state` if given."""
        source = SentenceSource(
            self.files,
            self.tokenizer,
            seed=self.seed,
            consumer=self.rank * self.consumers_per_rank + k,
            num_consumers=self.world_size * self.consumers_per_rank,
            max_line_tokens=self.max_line_tokens,
        )
        stream = RowStream(source, self.rows_per_consumer[k], self.num_steps)
        if state is not None:
            stream.load_state_dict(state)
        return stream

    def __iter__(self) -> Iterator[Batch]:
        """Endless batches from the current position: the start, the last `load_state_dict`, or
        after the last batch an earlier iterator handed out. Use one iterator at a time."""
        self._states = self.state_dict()["consumers"]
        batches = self._iterate_workers() if self.num_workers else self._iterate_in_process()
        for batch in batches:
            yield batch.pin_memory() if self.pin_memory else batch

    def _iterate_in_process(self) -> Iterator[Batch]:
        streams = [self._make_stream(k, state) for k, state in enumerate(self._states)]
        self._live = streams
        while True:
            windows = [stream.next_window() for stream in streams]
            yield Batch(
                torch.from_numpy(np.concatenate([w[0] for w in windows])),
                torch.from_numpy(np.concatenate([w[1] for w in windows])),
            )

    def _iterate_workers(self) -> Iterator[Batch]:
        self._live = None
        loader = DataLoader(_WorkerWindows(self), batch_size=None, num_workers=self.num_workers)
        items = iter(loader)
        while True:
            parts = [next(items) for _ in range(self.num_workers)]
            for k, part in enumerate(parts):
                if part["worker"] != k:  # would break row identity: never expected
                    raise RuntimeError(f"loader returned worker {part['worker']}'s window as {k}'s")
            self._states = [part["state"] for part in parts]
            yield Batch(
                torch.cat([part["inputs"] for part in parts]),
                torch.cat([part["targets"] for part in parts]),
            )

    def state_dict(self) -> dict:
        """The position after the last batch handed out (see module doc)."""
        live = self._live
        consumers = [s.state_dict() for s in live] if live is not None else list(self._states)
        return {"consumers": consumers}

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state`; takes effect at the next `iter()`. Raises ValueError on a state
        from a different layout (seed, files, ranks x consumers, rows, steps)."""
        consumers = state["consumers"]
        if len(consumers) != self.consumers_per_rank:
            raise ValueError(
                f"data state has {len(consumers)} consumers per rank, this loader "
                f"{self.consumers_per_rank}: resume with the same data.num_workers "
                "(or consumers_per_rank)"
            )
        for k, consumer in enumerate(consumers):
            self._make_stream(k, consumer)  # validates before anything changes
        self._states = list(consumers)
        self._live = None

    @property
    def epoch(self) -> int:
        """The smallest epoch any of this rank's consumers is in."""
        return min(c["source"]["epoch"] for c in self.state_dict()["consumers"])


class _WorkerWindows(IterableDataset):
    """What one DataLoader worker runs: consumer `worker id`'s windows, each with its state."""

    def __init__(self, loader: TrainLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is None:
            raise RuntimeError("_WorkerWindows runs only inside DataLoader workers")
        stream = self.loader._make_stream(info.id, self.loader._states[info.id])
        while True:
            inputs, targets = stream.next_window()
            yield {
                "worker": info.id,
                "inputs": torch.from_numpy(inputs),
                "targets": torch.from_numpy(targets),
                "state": stream.state_dict(),
            }
