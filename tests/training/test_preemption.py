"""Signal-driven stop agreed across ranks and the SLURM requeue hook (RELIABILITY #10, #11)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest

from lm1b.training import preemption
from lm1b.training.preemption import (
    PREEMPTED_EXIT_CODE,
    PreemptionHandler,
    requeue_before_any_rank_exits,
    requeue_slurm_job,
)

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch):
    """Tests must not depend on running inside a SLURM job (CI can be one)."""
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _send_to_self(handler: PreemptionHandler, signum: signal.Signals) -> None:
    """Send a real signal to this process and wait until Python has run the handler."""
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + 1.0
    while not handler.requested() and time.monotonic() < deadline:
        time.sleep(0.001)


def _agree(*handlers: PreemptionHandler) -> list[bool]:
    """One `should_stop` step over simulated ranks, one thread per rank, with a fake MAX
    all-reduce that, like the real collective, returns only once every rank has contributed."""
    values = [0] * len(handlers)
    barrier = threading.Barrier(len(handlers))

    def all_reduce_max_for(rank: int):
        def all_reduce_max(local: int) -> float:
            values[rank] = local
            barrier.wait(timeout=5)
            return float(max(values))  # DistContext.all_reduce_max returns a float

        return all_reduce_max

    with ThreadPoolExecutor(len(handlers)) as pool:
        futures = [
            pool.submit(h.should_stop, all_reduce_max_for(r)) for r, h in enumerate(handlers)
        ]
        return [f.result(timeout=5) for f in futures]


def test_exit_code_is_128_plus_sigterm():
    assert PREEMPTED_EXIT_CODE == 143


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_real_signal_sets_the_flag_and_handlers_are_restored(signum):
    previous = signal.getsignal(signum)
    with PreemptionHandler() as handler:
        assert not handler.requested() and handler.signal_name is None
        assert not handler.should_stop()
        _send_to_self(handler, signum)
        assert handler.requested()
        assert handler.signal_name == signum.name
        assert handler.requeue_requested == (signum == signal.SIGUSR1)
        assert handler.should_stop()
    assert signal.getsignal(signum) is previous


def test_all_ranks_stop_when_only_one_was_signalled():
    """#10 (DDP variant, in-process): only rank 1 gets SIGUSR1, yet both ranks stop and agree
    on the signal, so rank 0 knows to requeue."""
    with PreemptionHandler() as rank0, PreemptionHandler() as rank1:
        # rank1's handlers were installed last, so the process signal reaches rank1 only.
        assert _agree(rank0, rank1) == [False, False]
        _send_to_self(rank1, signal.SIGUSR1)
        assert rank1.requested() and not rank0.requested()
        assert not rank0.should_stop()  # the local flag alone would leave rank 0 running
        assert _agree(rank0, rank1) == [True, True]
        assert rank0.signal_name == "SIGUSR1" and rank0.requeue_requested


def test_later_listed_signal_wins_when_both_arrive():
    with PreemptionHandler() as handler:
        _send_to_self(handler, signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert handler.signal_name == "SIGUSR1"


@pytest.mark.parametrize(
    ("env", "job_id"),
    [
        ({"SLURM_JOB_ID": "12345"}, "12345"),
        (
            {"SLURM_JOB_ID": "12346", "SLURM_ARRAY_JOB_ID": "12345", "SLURM_ARRAY_TASK_ID": "7"},
            "12345_7",
        ),
    ],
    ids=["job", "array-job"],
)
def test_rank0_requeues_exactly_once(monkeypatch, env, job_id):
    """#11: the Lightning test_auto_requeue_job contract."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with mock.patch.object(preemption.subprocess, "call", return_value=0) as call:
        assert requeue_slurm_job(rank=0)
    call.assert_called_once_with(["scontrol", "requeue", job_id])


def test_other_ranks_and_non_slurm_runs_do_not_requeue(monkeypatch):
    with mock.patch.object(preemption.subprocess, "call", return_value=0) as call:
        assert not requeue_slurm_job(rank=0)  # no SLURM_JOB_ID
        monkeypatch.setenv("SLURM_JOB_ID", "12345")
        assert not requeue_slurm_job(rank=1)
    call.assert_not_called()


@pytest.mark.parametrize(
    "outcome",
    [{"return_value": 1}, {"side_effect": FileNotFoundError("scontrol")}],
    ids=["non-zero", "missing"],
)
def test_failing_scontrol_logs_an_error_and_returns_false(monkeypatch, caplog, outcome):
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    with (
        mock.patch.object(preemption.subprocess, "call", **outcome) as call,
        caplog.at_level(logging.ERROR, logger=preemption.__name__),
    ):
        assert not requeue_slurm_job(rank=0)
    call.assert_called_once()
    assert "scontrol requeue 12345" in caplog.text


@pytest.mark.parametrize(
    ("rank", "requeue", "expected"),
    [
        (0, True, [["scontrol", "requeue", "12345"], "barrier"]),
        (1, True, ["barrier"]),
        (0, False, ["barrier"]),
    ],
    ids=["rank0", "rank1", "no-requeue"],
)
def test_every_rank_waits_at_a_barrier_after_rank0s_requeue(monkeypatch, rank, requeue, expected):
    """No rank may exit (and get srun --kill-on-bad-exit to end rank 0) before the requeue ran;
    the end to end check with srun and torchrun: test_slurm_preemption.py."""
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    calls = []
    with mock.patch.object(
        preemption.subprocess, "call", side_effect=lambda c: calls.append(c) or 0
    ):
        requeue_before_any_rank_exits(requeue, rank, barrier=lambda: calls.append("barrier"))
    assert calls == expected
