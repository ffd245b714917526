"""One benchmark run as it goes: its candidates, ceilings and failures, and bench.json rewritten
(atomically) after every stage, with `complete` false until the end, so a run stopped by a
timeout leaves everything it measured.

A variant that fails to build or to step (out of memory, a CUDA or compilation error) does not
stop the run: its error goes to the log with the traceback and to `failed`, it is dropped with
the passes it had timed (every remaining variant keeps one time per pass, which the per-pass
ratios need) and its memory is freed before the next variant runs.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from lm1b.atomic_files import write_json_atomically
from lm1b.benchmark.candidates import Candidate
from lm1b.benchmark.report import variant_records

logger = logging.getLogger("lm1b.bench")


class BenchSession:
    """The state bench.json is made of; `path` None writes nothing (the report is returned)."""

    def __init__(self, header: dict, device: torch.device, path: Path | None) -> None:
        self.header = header
        self.device = device
        self.path = path
        self.started = time.perf_counter()
        self.candidates: list[Candidate] = []
        self.failed: dict[str, str] = {}  # variant -> "ErrorType: message"
        # Ceilings measured before the variants are built, then after every pass.
        self.matmul_tflops: list[float] = []
        self.copy_gbps: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def add(self, name: str, build: Callable[[], Candidate]) -> None:
        """Build (and warm up) variant `name` with `build`; on failure record it instead."""
        self._attempt(name, lambda: self.candidates.append(build()))

    def for_each(self, action: Callable[[Candidate], None]) -> None:
        """`action` on every candidate in order; a candidate it raises on is dropped."""
        for name in [c.name for c in self.candidates]:
            self._attempt(name, lambda: action(self._candidate(name)))  # noqa: B023 (called now)

    def _candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def _attempt(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
            return
        except Exception as error:  # any: a one-shot GPU check measures what it can
            # The traceback as text: a log record holding it would keep the variant's frames.
            trace = traceback.format_exc()
            logger.error(
                "%s failed after %.1f s, going on without it:\n%s", name, self.elapsed(), trace
            )
            self.failed[name] = f"{type(error).__name__}: {error}"
        # Out of the except block, the traceback no longer holds the failed variant's frames.
        self.candidates = [c for c in self.candidates if c.name != name]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def save(self, stage: str, complete: bool = False) -> dict:
        """Log `stage` with the time since the start, rewrite bench.json, return its content."""
        elapsed = self.elapsed()
        logger.info("[%7.1f s] %s", elapsed, stage)
        matmul = statistics.median(self.matmul_tflops)
        report = {
            **self.header,
            "complete": complete,
            "stage": stage,
            "elapsed_seconds": elapsed,
            "ceiling_tflops": matmul,
            "pass_ceiling_tflops": self.matmul_tflops,
            "copy_ceiling_gbps": statistics.median(self.copy_gbps),
            "pass_copy_ceiling_gbps": self.copy_gbps,
            # Timed variants only: a built one has no step time before the first pass.
            "variants": variant_records([c for c in self.candidates if c.seconds], matmul),
            "failed": self.failed,
        }
        if self.path is not None:
            write_json_atomically(report, self.path)
        return report
