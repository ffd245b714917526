"""The Makefile is the front door: `make help` lists every target a user needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["setup", "test", "lint", "demo", "train", "eval", "bench", "data", "tensorboard"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_help_lists_every_target():
    result = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("  make ")}
    assert set(TARGETS) <= listed
