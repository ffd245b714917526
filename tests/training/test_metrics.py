"""metrics.jsonl after a resume: the records of the steps to be redone are dropped by writing a
new file and renaming it over the old one, never by rewriting the history in place (a kill
mid-rewrite once left a 70 MB history at 0 bytes)."""

from __future__ import annotations

import json
import os

import pytest

import lm1b.atomic_files
from lm1b.training.metrics import _drop_lines_after


def _history(path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "sampled_loss": 1.0}) + "\n" for s in steps))


def _steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_resume_drops_later_records_without_writing_the_old_file_in_place(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _history(path, range(1, 6))
    witness = tmp_path / "witness"
    os.link(path, witness)  # the old file's inode: an in-place rewrite would change it
    _drop_lines_after(path, 3)
    assert _steps(path) == [1, 2, 3]
    assert _steps(witness) == [1, 2, 3, 4, 5]  # the old file was replaced, not truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "witness"]


def test_a_rewrite_that_fails_leaves_the_history_whole_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _history(path, range(1, 6))

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lm1b.atomic_files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _drop_lines_after(path, 3)
    assert _steps(path) == [1, 2, 3, 4, 5]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
