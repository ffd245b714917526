"""Named ranges of a training step, for the benchmark's accounting (lm1b.benchmark.breakdown)
and for anyone profiling a run.

`scope(name)` marks a range. While `timed_ranges` runs it adds the range's time to a clock (wall
time on a CPU; on CUDA the time between two events recorded on the stream, read at the end, so
nothing waits inside the step); while torch.profiler runs it is a `record_function` range, so
the names show in a trace; otherwise it costs one check: the time loop enters a few ranges per
time step, so they must be free in training. The names, and how the benchmark turns them into
the step's accounting, are the constants below; code marks its ranges with them and nothing
else.

Why a clock of its own rather than torch.profiler for the accounting: the profiler records
every operator, a few microseconds each, and on a CPU that inflated the op-dense ranges (the
cell math, the time loop) 1.5x to 3x, differently from one profiled step to the next.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch.autograd.profiler import record_function

LSTM_FORWARD = "lstm.forward"  # a layer's whole forward (inside its autograd Function)
LSTM_BACKWARD = "lstm.backward"  # a layer's whole backward
TIME_LOOP = "lstm.time_loop"  # the per-time-step loop, forward or backward
STEP_PRODUCTS = "lstm.step_products"  # the recurrent side: per-step products (h, m, d_h, d_m)
WINDOW_PRODUCTS = "lstm.window_products"  # over all T*B rows: input side, weight gradients
CELL = "lstm.cell"  # the pointwise cell math of one step
SAMPLER = "step.sampler"
SOFTMAX = "step.softmax_forward"  # the sampled (or full) softmax loss's forward
BACKWARD = "step.backward"  # the whole backward pass
TABLES = "step.tables"  # the tables' gradients: exchange, scaling, checks, their optimizer
CLIP = "step.clip"
OPTIMIZER = "step.optimizer"  # the dense optimizer of the LSTM weights
EMA = "step.ema"
STEP = "step"  # the whole training step

_NO_SCOPE = nullcontext()


class RangeClock:
    """Inclusive time per range name, summed over every entry while it is active."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def range(self, name: str) -> Iterator[None]:
        if self.cuda and torch.cuda.is_current_stream_capturing():
            # A timing event recorded into a CUDA-graph capture would make the capture fail
            # (and the layer give up its graph for good): a range captured is not timed.
            yield
            return
        if self.cuda:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
            return
        start_time = time.perf_counter()
        yield
        self._seconds[name] += time.perf_counter() - start_time

    def seconds(self) -> dict[str, float]:
        """Each range's total seconds (on CUDA this waits for the recorded events)."""
        if self._events:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self._seconds[name] += start.elapsed_time(end) / 1e3
            self._events.clear()
        return dict(self._seconds)


_clock: RangeClock | None = None


@contextmanager
def timed_ranges(device: torch.device) -> Iterator[RangeClock]:
    """Time every `scope` entered inside the block on `device`'s clock."""
    global _clock
    previous, _clock = _clock, RangeClock(device)
    try:
        yield _clock
    finally:
        _clock = previous


def scope(name: str) -> AbstractContextManager:
    """A range named `name`: timed inside `timed_ranges`, a profiler range while torch's
    profiler runs, else a no-op."""
    if _clock is not None:
        return _clock.range(name)
    return record_function(name) if torch.autograd._profiler_enabled() else _NO_SCOPE
