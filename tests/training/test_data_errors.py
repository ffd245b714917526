"""Training shards that vanish mid-run: every rank stops after the same step with one clear
line, within seconds rather than after the process group's timeout (30 minutes), the newest
checkpoint is intact, and once the shards are back the same command resumes from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lm1b.data.synthetic import generate_corpus

TRAIN_SHARDS = "training-monolingual.tokenized.shuffled"


def _metrics_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.distributed
@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_vanished_shard_stops_every_rank_at_once(tmp_path, num_workers):
    # Shards of 20 sentences: each rank starts a new shard every few steps.
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, vocab_size=100, num_train_shards=6, sentences_per_shard=20)
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "lm1b.train", "experiment=tiny", f"data.root={corpus}",
        f"data.vocab_file={corpus / 'vocab.txt'}", f"data.num_workers={num_workers}",
        "logger.progress_bar=false", "trainer.val_every=0", "trainer.log_every=1",
        "trainer.checkpoint_every=2", "trainer.max_steps=400", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    slow = [*command, "testing.sleep_per_step=0.2"]
    proc = subprocess.Popen(slow, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _metrics_lines(run_dir) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    shards = corpus / TRAIN_SHARDS
    shutil.move(shards, tmp_path / "moved-away")
    removed = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    stopped_within = time.monotonic() - removed

    assert proc.returncode != 0, stderr[-3000:]
    assert stopped_within < 60, stderr[-3000:]  # each rank reads a new shard every few steps
    lines = [line for line in stderr.splitlines() if line.startswith("lm1b.train: rank ")]
    assert len(lines) == 2, stderr[-3000:]  # one line from each rank, naming the same rank
    failed = {line.split()[2] for line in lines}
    assert len(failed) == 1 and "could not read its training data" in lines[0]
    assert any("does not exist" in line or "no longer exists" in line for line in lines)
    stopped_at = {line.split("after step ")[1].split()[0] for line in lines}
    assert len(stopped_at) == 1  # the same step on both ranks

    # The newest checkpoint is whole, and nothing was saved after the failing step.
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(newest, weights_only=True)
    assert state["counters"]["step"] <= int(stopped_at.pop())
    assert not list(run_dir.rglob("*.tmp"))

    shutil.move(tmp_path / "moved-away", shards)
    finish = [*command, f"trainer.max_steps={state['counters']['step'] + 2}"]
    subprocess.run(finish, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    assert f"resuming from {newest}" in (run_dir / "train.log").read_text()
