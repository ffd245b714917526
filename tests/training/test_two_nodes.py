"""The README's multi-node command, two nodes on one machine: two torchrun agents joined by
c10d rendezvous (one worker each) agree on one run directory, write each file once, and train
bitwise the weights that the same two ranks train on one node. (An elastic restart after one
node's worker dies is not tested here yet: with `--max-restarts=1` the pair did not finish
within 400 s; see the issue tracker.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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


def _two_nodes(tmp_path: Path, job: str, args: list[str]) -> Path:
    """Start both agents (as on two machines sharing tmp_path), wait for both; the run dir."""
    rendezvous = [
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
        f"--rdzv-id={job}",
    ]
    command = [*TORCHRUN, *rendezvous, "-m", "lm1b.train", *args]
    nodes = [
        subprocess.Popen(command, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=400)
        assert node.returncode == 0, stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "tiny").glob(f"torchrun-{job}")
    return run_dir


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
