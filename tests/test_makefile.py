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


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_tensorboard_listens_on_loopback_unless_told_otherwise():
    def command(*args: str) -> str:
        dry_run = ["make", "-n", "tensorboard", "STAMP=", *args]
        return subprocess.run(dry_run, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert "--host 127.0.0.1" in command() and "--bind_all" not in command()
    assert "--host 0.0.0.0" in command("TB_HOST=0.0.0.0")
