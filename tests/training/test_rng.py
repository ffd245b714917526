"""RNG state survives a weights_only checkpoint and a fresh process (RELIABILITY #4)."""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys

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


def test_cuda_states_restore_the_common_prefix_of_devices(monkeypatch, caplog):
    """Fewer visible devices than saved: restore what fits and warn (no real GPU needed)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: restored.append((d, s)))
    saved = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": saved}
    with caplog.at_level(logging.WARNING, logger=rng.__name__):
        restore_rng_state(state)
    assert [(d, s.tolist()) for d, s in restored] == [(0, saved[0].tolist())]
    assert "for 2 devices but 1 are visible" in caplog.text
