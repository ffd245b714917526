"""RNG state survives a weights_only checkpoint and a fresh process (RELIABILITY #4)."""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from lm1b.training import rng
from lm1b.training.checkpoint import CheckpointManager
from lm1b.training.rng import capture_rng_state, restore_rng_state

# Runs in a fresh interpreter: plain torch.load with weights_only=True (no allow-list, no
# lm1b checkpoint code), then restore and draw.
FRESH_PROCESS_DRAWS = """
import json, random, sys
import torch
from lm1b.training.rng import restore_rng_state
state = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
restore_rng_state(state["rng"])
print(json.dumps({"python": [random.random() for _ in range(3)], "torch": torch.rand(4).tolist()}))
"""


def _draws() -> dict:
    """The next few draws from every generator the state covers."""
    return {"python": [random.random() for _ in range(3)], "torch": torch.rand(4).tolist()}


def test_restore_repeats_the_draws_after_a_weights_only_round_trip():
    random.seed(123)
    torch.manual_seed(123)
    buffer = io.BytesIO()
    torch.save({"rng": capture_rng_state()}, buffer)
    expected = _draws()
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True)["rng"])
    assert _draws() == expected


def test_checkpointed_rng_state_restores_in_a_fresh_process(tmp_path):
    """#4: a real checkpoint file loads in a new interpreter without weights_only=False."""
    random.seed(7)
    torch.manual_seed(7)
    path = CheckpointManager(tmp_path).save({"rng": capture_rng_state()}, step=10)
    expected = _draws()
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_DRAWS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # JSON floats round-trip exactly (repr), so equality here is bit equality.
    assert json.loads(result.stdout) == expected


def test_cuda_state_is_skipped_without_cuda(monkeypatch, caplog):
    """A GPU checkpoint resumed on a CPU-only machine restores the rest and says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = capture_rng_state()
    assert "cuda" not in state
    expected = _draws()
    with caplog.at_level(logging.INFO, logger=rng.__name__):
        restore_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]})
    assert _draws() == expected
    assert "CUDA RNG state is not restored" in caplog.text


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA-less torch made to report 8 GPUs with per-device RNG states; `current` is the
    device a rank drives (what init_distributed sets); `restored` collects (device, state)."""
    cuda = SimpleNamespace(current=0, restored=[])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: cuda.current)
    monkeypatch.setattr(torch.cuda, "get_rng_state", _device_state)
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda s, device: cuda.restored.append((device, s))
    )
    return cuda


def _device_state(device: int) -> torch.Tensor:
    return torch.full((16,), device, dtype=torch.uint8)


def test_a_rank_restores_its_own_gpus_state_whatever_its_index(fake_cuda):
    """Saved by local rank 3 seeing all 8 GPUs (cuda:3), resumed under per-task binding, where
    the same rank's GPU is cuda:0: the state of cuda:3 goes to cuda:0, and nothing else."""
    fake_cuda.current = 3
    state = capture_rng_state()
    assert "cuda" not in state  # not every visible device's state
    fake_cuda.current = 0
    restore_rng_state(state)
    assert [(d, s.tolist()) for d, s in fake_cuda.restored] == [(0, _device_state(3).tolist())]


def test_a_checkpoint_with_every_devices_state_still_restores(fake_cuda):
    """Written before per-rank states: one state per visible device; the rank's own is at the
    index it drives (its local rank, the same again in the same launch)."""
    saved = [_device_state(i) for i in range(8)]
    fake_cuda.current = 3
    restore_rng_state({"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": saved})
    assert [(d, s.tolist()) for d, s in fake_cuda.restored] == [(3, saved[3].tolist())]


def test_an_old_checkpoint_without_this_ranks_device_is_not_restored(fake_cuda, caplog):
    saved = [_device_state(i) for i in range(2)]
    fake_cuda.current = 3
    with caplog.at_level(logging.WARNING, logger=rng.__name__):
        restore_rng_state(
            {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": saved}
        )
    assert fake_cuda.restored == []
    assert "states for 2 devices, none for cuda:3" in caplog.text
