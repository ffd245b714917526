"""Timing discipline (docs PERFORMANCE.md "How to measure"), the device's matmul ceiling and
its name.

Variants are timed in ONE process, interleaved (A B C ... A B C ...) over several passes after
a warm-up pass, so slow drifts of a shared machine hit every variant alike; each timed block is
several whole training steps with the device synchronised only at its two ends. (The step
itself reads its loss and gradient norm back to the host, as the trainer's does.)
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lm1b.benchmark.candidates import Candidate

logger = logging.getLogger(__name__)

CEILING_SIZE = {"cuda": 8192, "cpu": 1024}  # square matmul side: large enough to be compute-bound


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(step: Callable[[], None], num_steps: int, device: torch.device) -> float:
    """Mean seconds per call of `step` over `num_steps` calls, synchronising only at the ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(num_steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / num_steps


def time_candidate(candidate: Candidate, num_steps: int, device: torch.device) -> None:
    """Time one block of the candidate's steps; on CUDA also record its peak memory above what
    was allocated when the block started (activations, gradients, workspaces)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    candidate.seconds.append(time_block(candidate.train_step, num_steps, device))
    if device.type == "cuda":
        candidate.transient_bytes.append(torch.cuda.max_memory_allocated(device) - resident)


def run_passes(
    candidates: list[Candidate],
    passes: int,
    steps_per_pass: int,
    device: torch.device,
    ceiling: Callable[[], float],
) -> list[float]:
    """One untimed warm-up step per candidate (allocations, lazy optimizer state, autotuning),
    then `passes` interleaved timed passes of `steps_per_pass` steps each. The matmul ceiling
    is measured once per pass too, under the same conditions; returns its TFLOP/s per pass."""
    for candidate in candidates:
        candidate.train_step()
    ceilings = []
    for index in range(passes):
        for candidate in candidates:
            time_candidate(candidate, steps_per_pass, device)
        ceilings.append(ceiling())
        logger.info("pass %d/%d done", index + 1, passes)
    return ceilings


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """Achieved TFLOP/s of a large square matmul in `dtype` on `device`, repeated for about
    `seconds` after a warm-up: the practical ceiling the variants' arithmetic is compared to
    (measured rather than looked up, so it holds for any device and for a shared machine)."""
    size = CEILING_SIZE["cuda" if device.type == "cuda" else "cpu"]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    single = time_block(lambda: torch.mm(a, b), 2, device)  # also the warm-up
    repeats = max(1, int(seconds / max(single, 1e-9)))
    per_call = time_block(lambda: torch.mm(a, b), repeats, device)
    return 2.0 * size**3 / per_call / 1e12
