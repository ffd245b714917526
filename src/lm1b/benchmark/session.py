"""One benchmark run as it goes: its candidates, ceilings and failures, and bench.json rewritten
(atomically) after every stage, with `complete` false until the end, so a run stopped by a
timeout leaves everything it measured.

Variants are timed in groups that fit the device's memory together (plan_groups): on a GPU
smaller than all of them, the full preset's seven do not stay resident at once. The reference
variants (both BIGLSTMs: the `vs BIG` and `vs cuDNN` baselines) are built once and timed in
every group's passes, so each ratio still compares variants timed in the same pass
(docs/performance.md, "How to measure"); each group's other variants are built, timed,
recorded and freed (`release`) before the next group is built. On a CPU no limit is known and
there is one group.

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
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from lm1b.atomic_files import write_json_atomically
from lm1b.benchmark.candidates import Candidate
from lm1b.benchmark.report import variant_records, with_peak_fractions
from lm1b.config.checks import require

logger = logging.getLogger("lm1b.bench")

GIB = 2**30


@dataclass(frozen=True)
class GroupPlan:
    """Which variants are timed together: every group holds the references."""

    groups: list[list[str]]  # each group's variants, in the order they were asked for
    references: list[str]  # in every group: built with the first, kept to the end
    estimated_bytes: dict[str, int]  # the memory model's, per variant
    free_bytes: int | None  # the device's free memory before anything was built; None: CPU
    margin_bytes: int  # kept free beyond the estimates

    def peak_bytes(self) -> int:
        """The estimated bytes of the largest group: the most resident at once."""
        return max(sum(self.estimated_bytes[name] for name in group) for group in self.groups)

    def describe(self) -> dict:
        """bench.json's `memory_plan`."""
        return {
            "free_bytes": self.free_bytes,
            "margin_bytes": self.margin_bytes,
            "estimated_bytes": self.estimated_bytes,
            "peak_estimated_bytes": self.peak_bytes(),
            "groups": self.groups,
        }


def free_memory_bytes(device: torch.device) -> int | None:
    """The device's free memory as the driver reports it (torch.cuda.mem_get_info, which
    counts what other processes hold); None on a CPU, where no limit is known."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]


def plan_groups(
    estimated_bytes: dict[str, int],
    references: list[str],
    free_bytes: int | None,
    margin_bytes: int,
) -> GroupPlan:
    """Groups of variants that fit `free_bytes` less `margin_bytes` together, the references in
    each: the other variants in the order given, a group closed when the next one would not
    fit (`free_bytes` None: no limit, one group). ConfigError, with the numbers, when the
    references and the largest other variant do not fit."""
    if free_bytes is None:
        return GroupPlan([list(estimated_bytes)], references, estimated_bytes, None, margin_bytes)
    others = [name for name in estimated_bytes if name not in references]
    room = free_bytes - margin_bytes - sum(estimated_bytes[name] for name in references)
    largest = sorted(others, key=estimated_bytes.__getitem__)[-1:]  # [] when no others
    crowd = references + largest  # the most that must fit at once
    need = sum(estimated_bytes[name] for name in crowd)
    require(
        need <= free_bytes - margin_bytes,
        "variants",
        list(estimated_bytes),
        f"by the memory model {' + '.join(crowd)} need {need / GIB:.1f} GiB together, more "
        f"than the {free_bytes / GIB:.1f} GiB free less memory_margin_gib={margin_bytes / GIB:g}"
        + ("; the BIGLSTMs are in every group, for the per-pass ratios" if references else "")
        + "; pass fewer variants= or a smaller batch_size=",
    )
    packs, used = [[]], 0
    for name in others:
        if packs[-1] and used + estimated_bytes[name] > room:
            packs.append([])
            used = 0
        packs[-1].append(name)
        used += estimated_bytes[name]
    groups = [[n for n in estimated_bytes if n in references or n in pack] for pack in packs]
    return GroupPlan(groups, references, estimated_bytes, free_bytes, margin_bytes)


class BenchSession:
    """The state bench.json is made of; `path` None writes nothing (the report is returned)."""

    def __init__(self, header: dict, device: torch.device, path: Path | None) -> None:
        self.header = header
        self.device = device
        self.path = path
        self.started = time.perf_counter()
        self.candidates: list[Candidate] = []  # built and not released
        self.released: list[dict] = []  # records of released variants, taken at release
        self.order: list[str] = []  # every variant added, in order: the records' order
        self.failed: dict[str, str] = {}  # variant -> "ErrorType: message"
        # Ceilings measured before the variants are built, then after every pass.
        self.matmul_tflops: list[float] = []
        self.copy_gbps: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def names(self) -> list[str]:
        """The variants built and not released (nor failed)."""
        return [c.name for c in self.candidates]

    def add(self, name: str, build: Callable[[], Candidate]) -> None:
        """Build (and warm up) variant `name` with `build`; on failure record it instead."""
        self.order.append(name)
        self._attempt(name, lambda: self.candidates.append(build()))

    def for_each(
        self, action: Callable[[Candidate], None], names: Collection[str] | None = None
    ) -> None:
        """`action` on every candidate (or those in `names`) in order; a candidate it raises on
        is dropped."""
        for name in self.names():
            if names is None or name in names:
                self._attempt(name, lambda: action(self._candidate(name)))  # noqa: B023

    def release(self, names: Collection[str]) -> None:
        """Keep the records of the candidates in `names` as they stand and free them: their
        group is done, and the next one needs the memory."""
        records = variant_records([c for c in self.candidates if c.seconds])
        self.released += [r for r in records if r["name"] in names]
        self.candidates = [c for c in self.candidates if c.name not in names]
        self._free_memory()

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
        self._free_memory()

    def _free_memory(self) -> None:
        """Return the memory of dropped candidates: gc for the reference cycles between a model
        and its CUDA graphs (whose private memory pools go with them) and optimizers, then the
        caching allocator's now unused blocks to the driver, so that mem_get_info sees them.
        No torch.compiler.reset(): it would make the BIGLSTMs kept built recompile, and the
        fused cell pins no memory (it compiles pure functions of their arguments, in the
        default mode, without CUDA graphs: what Dynamo keeps of it holds no tensor)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def records(self, ceiling_tflops: float) -> list[dict]:
        """bench.json's `variants`: every timed variant, released or not, in the order added
        (a built one has no step time before the first pass)."""
        live = variant_records([c for c in self.candidates if c.seconds])
        records = sorted(self.released + live, key=lambda r: self.order.index(r["name"]))
        return with_peak_fractions(records, ceiling_tflops)

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
            "variants": self.records(matmul),
            "failed": self.failed,
        }
        if self.path is not None:
            write_json_atomically(report, self.path)
        return report
