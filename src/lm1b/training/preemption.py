"""Graceful stop on SIGTERM / SIGUSR1, agreed by all ranks, and SLURM self-requeue.

Protocol (the training loop's side):
1. A `PreemptionHandler` is installed on every rank before training; its handlers only set a
   flag, so a signal never interrupts a collective or a checkpoint write half-way.
2. Every rank calls `should_stop(all_reduce_max)` at the same step. With the reducer, all ranks
   stop at that step if any rank was signalled (Megatron's DistributedSignalHandler), so a
   signal that reached only one rank cannot leave the others hanging in the next collective.
3. Rank 0 saves a checkpoint for the current step. Only then, if the agreed signal is SIGUSR1
   (`requeue_requested`) and the run is a SLURM job, it calls `requeue_slurm_job` once: the
   requeue makes SLURM kill the job, so it must come after the save.
4. Every rank waits for that requeue (`requeue_before_any_rank_exits`), then exits with
   `PREEMPTED_EXIT_CODE`: the first rank to exit ends the others (srun --kill-on-bad-exit=1,
   torchrun stopping its workers when one fails), so none may exit before rank 0 has requeued.

Exit-code rule: a preempted run exits with PREEMPTED_EXIT_CODE = 143 (128 + SIGTERM, what a
shell reports for a process terminated by SIGTERM), whichever signal stopped it and whether or
not it was requeued. Exit code 0 is reserved for a run that reached its max_steps / max_time:
* it is non-zero, so neither SLURM (job state FAILED, not COMPLETED, when no requeue happened),
  torchrun, nor a Kubernetes-style restart policy mistakes an unfinished run for a finished one;
* SLURM requeues through `scontrol requeue` whatever the exit code is, so 143 costs nothing there;
* torchrun forwards its own SIGTERM to the workers, waits about 30 s, then kills them; it does
  not restart after its own shutdown. When only the workers were signalled, the non-zero exit
  lets `torchrun --max-restarts=N` restart them, and they resume from the checkpoint just saved.

When ranks receive different signals, the one listed later in `signals` wins the agreement (with
the defaults, SIGUSR1 anywhere means save-and-requeue). Every rank must use the same `signals`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143
REQUEUE_SIGNAL = signal.SIGUSR1  # SLURM's `--signal=USR1@<seconds>` warning before the time limit


class PreemptionHandler:
    """Turns the given signals into a stop request that ranks can agree on.

    Use as a context manager (or call `close()`) so the previous handlers come back.
    Signals can only be handled in the main thread; elsewhere the handler warns and stays idle.
    """

    def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGUSR1)):
        self._signals = tuple(signal.Signals(s) for s in signals)
        # 0: no request; k: self._signals[k - 1] received (the highest k wins).
        self._local_code = 0
        self._agreed_code = 0
        self._previous: dict[signal.Signals, object] = {}
        for signum in self._signals:
            try:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError as exc:  # not the main thread
                logger.warning("cannot handle %s here: %s", signum.name, exc)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Python runs this between bytecodes of the main thread: only record, never do work here.
        self._local_code = max(self._local_code, self._signals.index(signum) + 1)

    def requested(self) -> bool:
        """Whether this process received one of the signals."""
        return self._local_code > 0

    @property
    def signal_name(self) -> str | None:
        """The signal this rank stops for: its own, or the one ranks agreed on in `should_stop`."""
        code = max(self._local_code, self._agreed_code)
        return self._signals[code - 1].name if code else None

    @property
    def requeue_requested(self) -> bool:
        """Whether the stop should be followed by a SLURM requeue (the stop signal is SIGUSR1)."""
        return self.signal_name == REQUEUE_SIGNAL.name

    def should_stop(self, all_reduce_max: Callable[[int], int | float] | None = None) -> bool:
        """Whether to stop now; every rank must call this at the same step.

        `all_reduce_max` returns the maximum of its argument over all ranks (e.g. a MAX
        all-reduce); without it only this process's flag counts.
        """
        code = self._local_code
        if all_reduce_max is not None:
            code = int(all_reduce_max(code))  # a float reducer returns small ints exactly
        self._agreed_code = max(self._agreed_code, code)
        return code > 0

    def close(self) -> None:
        """Restore the handlers that were installed before this one."""
        for signum, previous in self._previous.items():
            # None means a handler installed outside Python; the default is the closest we can do.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def slurm_job_id() -> str | None:
    """The id `scontrol` knows this job by (`<array job>_<task>` for array jobs), or None."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    array_task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_before_any_rank_exits(requeue: bool, rank: int, barrier: Callable[[], None]) -> None:
    """Step 4 of the protocol, on every rank after the stop's checkpoint is on disk: rank 0
    requeues the job when `requeue` (see `requeue_slurm_job`), and `barrier` (every rank's)
    returns only once rank 0 is past it. The ranks that would exit first wait at the barrier, so
    `srun --kill-on-bad-exit=1` or torchrun cannot end rank 0 between its save and the requeue.
    """
    if requeue:
        requeue_slurm_job(rank)
    barrier()


def requeue_slurm_job(rank: int) -> bool:
    """On rank 0 of a SLURM job, run `scontrol requeue <job>` once; True when it succeeded.

    Other ranks and non-SLURM runs do nothing and return False. A failing or missing `scontrol`
    is logged as an error and returns False: the checkpoint is saved, so the run can be resubmitted
    by hand.
    """
    job_id = slurm_job_id()
    if rank != 0 or job_id is None:
        return False
    command = ["scontrol", "requeue", job_id]
    try:
        returncode = subprocess.call(command)
    except OSError as exc:
        logger.error("could not run %s: %s", " ".join(command), exc)
        return False
    if returncode != 0:
        logger.error("%s failed with exit code %d", " ".join(command), returncode)
        return False
    logger.info("requeued SLURM job %s", job_id)
    return True
