"""Timing discipline (docs/performance.md, "How to measure"), the step-time breakdown, the
device's matmul and copy ceilings and its name.

Variants are timed in ONE process, interleaved (A B C ... A B C ...) over several passes after
two warm-up steps each, so slow drifts of a shared machine hit every variant alike; each timed
block is several whole training steps with the device synchronised only at its two ends. (The
step itself reads its loss and gradient norm back to the host, as the trainer's does.) The
breakdown into forward, backward and optimizer is timed in separate steps afterwards, because
it synchronises the device between the phases.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from lm1b.benchmark.candidates import Candidate
from lm1b.training.hooks import StepHooks

CEILING_SIZE = {"cuda": 8192, "cpu": 1024}  # square matmul side: large enough to be compute-bound
# Bytes of each of the copy's two buffers: far beyond any cache, so the copy streams memory.
COPY_BYTES = {"cuda": 2**30, "cpu": 64 * 2**20}
# The first step allocates and compiles; the second captures the CUDA graphs (the carried LSTM
# state only takes its steady dtype after the first step: lm1b.models.graphs).
WARMUP_STEPS = 2
PHASES = ("forward", "backward", "optimizer")  # StepHooks.on_phase's names, in step order
BREAKDOWN_STEPS = 3  # steps of each variant's breakdown (median per phase)


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


def time_block(step: Callable[[], object], num_steps: int, device: torch.device) -> float:
    """Mean seconds per call of `step` over `num_steps` calls, synchronising only at the ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(num_steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / num_steps


def warm_up(candidate: Candidate, device: torch.device) -> None:
    """The candidate's untimed first steps (allocations, lazy optimizer state, autotuning,
    compilation, CUDA-graph capture); their seconds are kept to show where the time went."""
    candidate.warmup_seconds = WARMUP_STEPS * time_block(candidate.train_step, WARMUP_STEPS, device)


def time_candidate(candidate: Candidate, num_steps: int, device: torch.device) -> None:
    """Time one block of the candidate's steps; on CUDA also record its peak memory above what
    was allocated when the block started (activations, gradients, workspaces)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    candidate.seconds.append(time_block(candidate.train_step, num_steps, device))
    if device.type == "cuda":
        candidate.transient_bytes.append(torch.cuda.max_memory_allocated(device) - resident)


class PhaseClock(StepHooks):
    """Step hooks for the breakdown: synchronise the device as each phase ends, so a phase's
    time is its own work, not just the time to queue it. The loss still passes through the
    candidate's own hooks (a benchmark may inject faults)."""

    def __init__(self, device: torch.device, inner: StepHooks) -> None:
        self.device = device
        self.inner = inner
        self.seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
        self.mark = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self.mark = time.perf_counter()

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return self.inner.loss(loss, step)

    def on_phase(self, phase: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.seconds[phase].append(now - self.mark)
        self.mark = now


def time_phases(candidate: Candidate, num_steps: int, device: torch.device) -> None:
    """Seconds of each phase in `num_steps` further steps, into candidate.phase_seconds. The
    hook is removed afterwards: the timed passes must run without its synchronisations."""
    hooks = candidate.runner.hooks
    clock = candidate.runner.hooks = PhaseClock(device, hooks)
    try:
        for _ in range(num_steps):
            clock.start()
            candidate.train_step()
    finally:
        candidate.runner.hooks = hooks
    candidate.phase_seconds = clock.seconds


def count_host_syncs(candidate: Candidate, device: torch.device) -> None:
    """How often the host waits for the device in one more training step, into
    candidate.host_syncs: CUDA's sync debug mode warns at every synchronising call (an item(), a
    blocking copy, a data-dependent size). The trainer's step is built to wait once (step.py).
    Off CUDA nothing is counted and host_syncs stays None."""
    if device.type != "cuda":
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            candidate.train_step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    candidate.host_syncs = sum("synchronizing" in str(w.message) for w in caught)


def _seconds_per_call(call: Callable[[], object], seconds: float, device: torch.device) -> float:
    """Mean seconds of `call` repeated for about `seconds`, after two warm-up calls."""
    single = time_block(call, 2, device)
    return time_block(call, max(1, int(seconds / max(single, 1e-9))), device)


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """Achieved TFLOP/s of a large square matmul in `dtype` on `device`, repeated for about
    `seconds`: the practical arithmetic ceiling the variants are compared to (measured rather
    than looked up, so it holds for any device and for a shared machine)."""
    size = CEILING_SIZE[device.type]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2.0 * size**3 / _seconds_per_call(lambda: torch.mm(a, b), seconds, device) / 1e12


def measure_copy_bandwidth(device: torch.device, seconds: float) -> float:
    """Achieved GB/s of `dst.copy_(src)` between two large buffers, counting the bytes read and
    the bytes written, repeated for about `seconds`: the memory ceiling of the step's
    memory-bound parts (the recurrent weights re-read every time step, the table updates)."""
    src = torch.ones(COPY_BYTES[device.type] // 4, device=device)  # float32
    dst = torch.empty_like(src)
    per_call = _seconds_per_call(lambda: dst.copy_(src), seconds, device)
    return 2 * src.numel() * src.element_size() / per_call / 1e9
