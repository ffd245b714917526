"""Kill it at any moment and resume to the same numbers: whole runs in subprocesses, in one
process and under torchrun with 2 gloo ranks (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lm1b.training.preemption import PREEMPTED_EXIT_CODE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAIN = [sys.executable, "-m", "lm1b.train"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(command: list[str], cwd: Path, check_code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == check_code, result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss, from metrics.jsonl (one record per step: log_every=1)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "sampled_loss" in r]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["sampled_loss"] for r in records if "sampled_loss" in r}


def final_state(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{step:09d}.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(a["ema"], b["ema"], rtol=0, atol=0)
    torch.testing.assert_close(a["optimizers"], b["optimizers"], rtol=0, atol=0)
    assert a["ranks"][0]["data"] == b["ranks"][0]["data"]  # the next batch is the same


def test_resume_in_a_new_process_is_bit_identical(tmp_path, tiny_overrides):
    args = [*TRAIN, *tiny_overrides, "optim=adagrad", "trainer.checkpoint_every=0"]
    run([*args, "trainer.max_steps=16", f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    run([*args, "trainer.max_steps=8", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    run([*args, "trainer.max_steps=16", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert "resuming from" in (tmp_path / "b" / "train.log").read_text()
    # .hydra/ keeps the first start's config; the resume's goes to a dated folder inside it.
    assert "max_steps: 8\n" in (tmp_path / "b" / ".hydra" / "config.yaml").read_text()
    (later,) = (tmp_path / "b" / ".hydra").glob("*/config.yaml")
    assert "max_steps: 16\n" in later.read_text()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert_same_state(final_state(tmp_path / "a", 16), final_state(tmp_path / "b", 16))


def test_checkpoints_written_in_the_background_equal_synchronous_ones(tmp_path, tiny_overrides):
    """trainer.async_checkpoint: the host copy taken at the step is what lands on disk, and a
    resume from it reproduces the synchronous run."""
    args = [*TRAIN, *tiny_overrides, "optim=adagrad", "trainer.checkpoint_every=4"]
    run([*args, "trainer.max_steps=16", f"hydra.run.dir={tmp_path / 'sync'}"], tmp_path)
    background = [*args, "trainer.async_checkpoint=true", f"hydra.run.dir={tmp_path / 'bg'}"]
    run([*background, "trainer.max_steps=10"], tmp_path)
    assert_same_state(final_state(tmp_path / "sync", 8), final_state(tmp_path / "bg", 8))
    run([*background, "trainer.max_steps=16"], tmp_path)
    assert losses(tmp_path / "sync") == losses(tmp_path / "bg")
    assert_same_state(final_state(tmp_path / "sync", 16), final_state(tmp_path / "bg", 16))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_the_current_step_and_resume_matches(tmp_path, tiny_overrides, signum):
    args = [*TRAIN, *tiny_overrides, "trainer.checkpoint_every=0", "trainer.max_steps=30"]
    run([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    interrupted = tmp_path / "b"
    slow = [*args, "testing.sleep_per_step=0.2", f"hydra.run.dir={interrupted}"]
    proc = subprocess.Popen(slow, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_lines(interrupted / "metrics.jsonl")) < 7:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    saved = sorted((interrupted / "checkpoints").glob("step-*.pt"))
    stopped_at = max(losses(interrupted))
    assert 7 <= stopped_at < 30 and saved[-1].name == f"step-{stopped_at:09d}.pt"
    run([*args, f"hydra.run.dir={interrupted}"], tmp_path)
    assert losses(interrupted) == losses(tmp_path / "a")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.distributed
def test_two_rank_runs_resume_restart_and_agree(tmp_path, tiny_overrides):
    """Under torchrun with 2 gloo ranks, with a NaN on rank 1 only at step 3 and a check that
    both ranks hold equal weights after every step: the NaN step is skipped on both ranks; a
    stop-and-resume and an elastic restart after an injected crash both reproduce the
    uninterrupted run; each run has one run directory, one composed config and per-rank logs."""
    args = [
        *TORCHRUN,
        "-m",
        "lm1b.train",
        *tiny_overrides,
        "trainer.checkpoint_every=5",
        "testing.nan_at_step=3",
        "testing.nan_on_rank=1",
        "testing.check_replicas=true",
    ]
    reference = tmp_path / "reference"
    run([*args, "trainer.max_steps=12", f"hydra.run.dir={reference}"], tmp_path)
    records = [json.loads(line) for line in _lines(reference / "metrics.jsonl")]
    assert [r["optim_skipped_steps"] for r in records if r["step"] in (2, 3)] == [0, 1]
    assert (reference / ".hydra" / "config.yaml").is_file()
    assert {p.name for p in reference.glob("*.log")} == {"train.log", "train_rank1.log"}
    assert len(list((reference / "tensorboard").glob("events.*"))) == 1

    resumed = tmp_path / "resumed"
    run([*args, "trainer.max_steps=6", f"hydra.run.dir={resumed}"], tmp_path)
    run([*args, "trainer.max_steps=12", f"hydra.run.dir={resumed}"], tmp_path)
    assert losses(resumed) == losses(reference)
    assert_same_state(final_state(reference, 12), final_state(resumed, 12))

    elastic = [*args[:5], "--max-restarts=1", *args[5:], "testing.crash_at_step=8"]
    run([*elastic, "trainer.max_steps=12"], tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "train" / "tiny").iterdir()  # one run dir
    assert "resuming from" in (run_dir / "train.log").read_text()
    assert losses(run_dir) == losses(reference)
    assert_same_state(final_state(reference, 12), final_state(run_dir, 12))
