"""One trainer per run directory: a second one started there is refused in one line naming
the holder, and a trainer killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm1b.training.run_lock import RunDirectoryInUse, RunDirectoryLock

TRAIN = [sys.executable, "-m", "lm1b.train"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    holder = RunDirectoryLock(tmp_path).__enter__()
    with pytest.raises(RunDirectoryInUse, match=rf"in use by pid {os.getpid()} on "):
        RunDirectoryLock(tmp_path).__enter__()
    holder.__exit__(None, None, None)
    with RunDirectoryLock(tmp_path):  # released on exit
        pass


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_a_killed_one_frees_the_directory(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    args = [*TRAIN, *tiny_overrides, f"hydra.run.dir={run_dir}", "trainer.checkpoint_every=0"]
    first = subprocess.Popen(
        [*args, "trainer.max_steps=1000", "testing.sleep_per_step=0.1"],
        cwd=tmp_path,
        env=_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _lines(run_dir / "metrics.jsonl"):
            time.sleep(0.1)
        assert _lines(run_dir / "metrics.jsonl"), "the first trainer never started"
        second = subprocess.run(
            [*args, "trainer.max_steps=2"], cwd=tmp_path, env=_env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 1
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("lm1b.train: run directory") and f"pid {first.pid} " in last
        assert first.poll() is None  # the first one trains on, undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    steps = len(_lines(run_dir / "metrics.jsonl"))
    again = subprocess.run(
        [*args, f"trainer.max_steps={steps + 2}"], cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
