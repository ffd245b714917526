"""The README's multi-node command, two nodes on one machine: two torchrun agents joined by
c10d rendezvous (one worker each) agree on one run directory, write each file once, and train
bitwise the weights that the same two ranks train on one node; when one node's worker is
killed (`kill -9`), `--max-restarts=1` restarts both workers, which resume from the last
checkpoint and end with the uninterrupted run's losses and weights."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_two_nodes(
    tmp_path: Path, job: str, args: list[str], extra: list[str] = ()
) -> list[subprocess.Popen]:
    """Start both agents (as on two machines sharing tmp_path); stderr to node<i>.err."""
    rendezvous = [
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
        f"--rdzv-id={job}",
        *extra,
    ]
    command = [*TORCHRUN, *rendezvous, "-m", "lm1b.train", *args]
    nodes = []
    for i in range(2):
        with (tmp_path / f"{job}-node{i}.err").open("w") as stderr:
            nodes.append(subprocess.Popen(command, cwd=tmp_path, env=_env(), stderr=stderr))
    return nodes


def _wait_for_both(tmp_path: Path, job: str, nodes: list[subprocess.Popen]) -> Path:
    """Wait for both agents, which must succeed (stopped after 180 s); the run dir."""
    deadline = time.monotonic() + 180
    try:
        for i, node in enumerate(nodes):
            node.wait(timeout=max(deadline - time.monotonic(), 1))
            assert node.returncode == 0, (tmp_path / f"{job}-node{i}.err").read_text()[-3000:]
    finally:
        _stop(nodes)
    (run_dir,) = (tmp_path / "outputs" / "train" / "tiny").glob(f"torchrun-{job}")
    return run_dir


def _stop(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:  # a SIGTERM'd agent stops its worker (SIGKILL after 30 s)
        if node.poll() is None:
            node.terminate()
            node.wait(timeout=60)


def _two_nodes(tmp_path: Path, job: str, args: list[str]) -> Path:
    return _wait_for_both(tmp_path, job, _start_two_nodes(tmp_path, job, args))


def _worker_of_rank(agents: list[subprocess.Popen], rank: int) -> tuple[int, int]:
    """(index of the agent, pid) of the worker with global rank `rank` (Linux's /proc)."""
    for index, agent in enumerate(agents):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                env = (stat.parent / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if parent == agent.pid and f"RANK={rank}".encode() in env:
                return index, int(stat.parent.name)
    raise AssertionError(f"no worker of rank {rank} is running")


def _weights(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{step:09d}.pt", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
def test_two_nodes_share_one_run_directory_and_train_like_one_node(tmp_path, tiny_overrides):
    args = [*tiny_overrides, "optim=adagrad", "trainer.checkpoint_every=3"]
    # The reference: the same two ranks on one node (2 ranks equal one process on the same
    # global batch: tests/training/test_distributed_step.py).
    single = tmp_path / "single"
    one_node = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run(
        [*one_node, "-m", "lm1b.train", *args, "trainer.max_steps=9", f"hydra.run.dir={single}"],
        cwd=tmp_path, env=_env(), check=True, capture_output=True, timeout=240,
    )  # fmt: skip

    run_dir = _two_nodes(tmp_path, "two-nodes", [*args, "trainer.max_steps=9"])
    assert len(list((tmp_path / "outputs" / "train" / "tiny").iterdir())) == 1
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("tensorboard/")] == [
        ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".lock",
        "checkpoints/step-000000003.pt", "checkpoints/step-000000006.pt",
        "checkpoints/step-000000009.pt", "metrics.jsonl", "train.log", "train_rank1.log",
    ]  # fmt: skip
    assert len([w for w in written if w.startswith("tensorboard/")]) == 1  # rank 0's only
    steps = [line.split('"step": ')[1].split(",")[0] for line in (run_dir / "metrics.jsonl").open()]
    assert len(steps) == len(set(steps))  # no record written twice
    _assert_same_weights(_weights(single, 9), _weights(run_dir, 9))


EVERY, STEPS = 10, 100  # a checkpoint every 10 steps; 100 steps leave seconds to kill a worker


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_overrides) -> Path:
    """The same two ranks on one node, never interrupted."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    one_node = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [*tiny_overrides, "optim=adagrad", f"trainer.checkpoint_every={EVERY}"]
    subprocess.run(
        [*one_node, "-m", "lm1b.train", *args, f"trainer.max_steps={STEPS}", f"hydra.run.dir={run_dir}"],
        cwd=run_dir, env=_env(), check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    return run_dir


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [(r["step"], r["sampled_loss"]) for r in records if "sampled_loss" in r]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(600)
@pytest.mark.parametrize("killed_rank", [0, 1])
def test_one_nodes_worker_killed_restarts_both_and_resumes_bitwise(
    tmp_path, tiny_overrides, uninterrupted, killed_rank
):
    """kill -9 of one node's worker after the first checkpoint: its agent restarts (a counted
    restart), the other agent restarts for the membership change (not counted, so the two
    nodes' TORCHELASTIC_RESTART_COUNT differ: the case that hung for 30 min in gloo's
    rendezvous); rank 0 (the run-directory lock) or rank 1 dies."""
    job = f"kill-rank{killed_rank}"
    args = [*tiny_overrides, "optim=adagrad", f"trainer.checkpoint_every={EVERY}"]
    nodes = _start_two_nodes(
        tmp_path, job, [*args, f"trainer.max_steps={STEPS}"], ["--max-restarts=1"]
    )
    run_dir = tmp_path / "outputs" / "train" / "tiny" / f"torchrun-{job}"
    first_checkpoint = run_dir / "checkpoints" / f"step-{EVERY:09d}.pt"
    deadline = time.monotonic() + 120
    try:
        while not first_checkpoint.exists():
            assert time.monotonic() < deadline and all(n.poll() is None for n in nodes)
            time.sleep(0.02)
        node, pid = _worker_of_rank(nodes, killed_rank)
        os.kill(pid, signal.SIGKILL)
    except BaseException:
        _stop(nodes)
        raise

    assert _wait_for_both(tmp_path, job, nodes) == run_dir
    assert "(exitcode: -9)" in (tmp_path / f"{job}-node{node}.err").read_text()
    # Resumed from a checkpoint (the first one, or a later one the kill came after) ...
    resumed = re.findall(r"resuming from .*step-(\d+)\.pt", (run_dir / "train.log").read_text())
    assert len(resumed) == 1 and int(resumed[0]) % EVERY == 0 and 0 < int(resumed[0]) < STEPS
    # ... and trained what the uninterrupted run trained: one record per step, same losses.
    assert _losses(run_dir) == _losses(uninterrupted)
    _assert_same_weights(_weights(uninterrupted, STEPS), _weights(run_dir, STEPS))
