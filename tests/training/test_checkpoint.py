"""Checkpoint atomicity, validation, retention and early failure (RELIABILITY #1, #2, #3, #26)."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import torch

from lm1b.config.checks import ConfigError
from lm1b.training.checkpoint import (
    META_KEY,
    RESUME_ENTRIES,
    CheckpointError,
    CheckpointManager,
    checkpoint_name,
    find_checkpoint,
    load_checkpoint,
)


def _state(step: int) -> dict:
    """A small checkpoint shaped like the real one (every entry a trained model's use reads):
    tensors inside nested containers."""
    return {
        "config": {"model": {"type": "biglstm"}},
        "tokenizer": {"kind": "word", "words": ["<S>"], "counts": [1]},
        "model": {"weight": torch.full((3, 2), float(step))},
        "ema": None,
        "counters": {"step": step, "tokens": step * 100},
        "tags": ("a", 1, None, True, 0.5),
    }


def _saved(directory: Path, steps: list[int], keep_last: int = 3) -> CheckpointManager:
    manager = CheckpointManager(directory, keep_last=keep_last)
    for step in steps:
        manager.save(_state(step), step)
    return manager


def _latest_step(manager: CheckpointManager) -> int | None:
    found = manager.latest()
    return None if found is None else found[1][META_KEY]["step"]


def test_save_round_trips_and_names_sort(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(_state(10), 10)
    assert path == tmp_path / "step-000000010.pt"
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["weight"], torch.full((3, 2), 10.0))
    assert state["tags"] == ("a", 1, None, True, 0.5)
    assert state[META_KEY]["step"] == 10 and state[META_KEY]["complete"] is True
    assert checkpoint_name(7) < checkpoint_name(20) < checkpoint_name(100)


def test_save_does_not_modify_the_callers_state(tmp_path):
    state = _state(1)
    CheckpointManager(tmp_path).save(state, 1)
    assert META_KEY not in state


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """#1: a writer that dies half-way leaves step 10 as the latest and no step-20 file."""
    manager = _saved(tmp_path, [10])
    real_save = torch.save

    def half_save(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(CheckpointError, match="step-000000020.pt"):
        manager.save(_state(20), 20)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000010.pt"]
    assert _latest_step(manager) == 10


def test_leftover_tmp_from_a_killed_writer_is_ignored_then_removed(tmp_path):
    """#1: a `.tmp` left by a SIGKILLed writer is never a checkpoint and is cleaned up."""
    manager = _saved(tmp_path, [10])
    tmp = tmp_path / "step-000000020.pt.tmp"
    tmp.write_bytes((tmp_path / "step-000000010.pt").read_bytes()[:100])
    best_tmp = tmp_path / "best.pt.tmp"  # a background write of best.pt, killed
    best_tmp.write_bytes(b"partial")
    assert manager.paths() == [tmp_path / "step-000000010.pt"]
    assert _latest_step(manager) == 10
    assert not tmp.exists() and not best_tmp.exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"
        ),
        pytest.param(lambda p: p.write_bytes(b"\x80\x02garbage" * 50), id="garbage"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_damaged_newest_falls_back_with_a_warning(tmp_path, caplog, damage):
    """#2: the newest file is unreadable -> the previous one is used, the warning names it."""
    manager = _saved(tmp_path, [10, 20])
    damage(tmp_path / "step-000000020.pt")
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        assert _latest_step(manager) == 10
    assert "step-000000020.pt" in caplog.text


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"step": 20, "format_version": 1, "complete": False}, id="incomplete"),
        pytest.param({"step": 10, "format_version": 1, "complete": True}, id="wrong-step"),
        pytest.param({"step": 20, "format_version": 99, "complete": True}, id="future-format"),
        pytest.param(None, id="no-meta"),
    ],
)
def test_untrusted_metadata_is_skipped(tmp_path, caplog, meta):
    """#2: only complete metadata whose step matches the file name is trusted."""
    manager = _saved(tmp_path, [10])
    state = _state(20) if meta is None else {**_state(20), META_KEY: meta}
    torch.save(state, tmp_path / "step-000000020.pt")
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        assert _latest_step(manager) == 10
    assert "step-000000020.pt" in caplog.text


def test_load_checkpoint_raises_a_clear_error_naming_the_file(tmp_path):
    """#2: never a bare UnpicklingError / EOFError / zip error."""
    path = tmp_path / "step-000000010.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="step-000000010.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_refuses_objects_outside_the_weights_only_allow_list(tmp_path):
    path = tmp_path / "step-000000001.pt"
    torch.save(
        {"bad": Path("x"), META_KEY: {"step": 1, "format_version": 1, "complete": True}}, path
    )
    with pytest.raises(CheckpointError, match="step-000000001.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(lambda s: s["model"].update(w=[1.0]), "'model' holding a list", id="item"),
        pytest.param(
            lambda s: s["counters"].update(step="1"), "'counters.step' of type str", id="inner"
        ),
        pytest.param(
            lambda s: s.update(ema={"shadow": []}), "lacks 'ema.num_updates'", id="inner-key"
        ),
        pytest.param(
            lambda s: s.update(ema=[]), "'ema' of type list, expected dict or None", id="type"
        ),
    ],
)
def test_entries_are_checked_inside_entries_and_in_their_items(tmp_path, edit, problem):
    """Beyond the top-level keys: the keys a loader reads inside an entry, and the type of
    every tensor in a list or dict of them (the EMA's None needs nothing inside, see _state)."""
    state = _state(10)
    edit(state)
    path = CheckpointManager(tmp_path).save(state, 10)
    with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(str(path))} .*{problem}"):
        load_checkpoint(path)


def test_resuming_needs_the_training_entries_a_model_checkpoint_may_lack(tmp_path, caplog):
    """A compressed checkpoint serves inference and init_from, not a resume."""
    path = CheckpointManager(tmp_path).save(_state(10), 10)
    assert load_checkpoint(path)[META_KEY]["step"] == 10
    with pytest.raises(CheckpointError, match=r"step-000000010.pt lacks 'optimizers'"):
        load_checkpoint(path, RESUME_ENTRIES)
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        assert CheckpointManager(tmp_path).latest(RESUME_ENTRIES) is None
    assert "step-000000010.pt lacks 'optimizers'" in caplog.text


def test_all_corrupt_gives_none_and_find_raises(tmp_path, caplog):
    """#2: nothing valid -> latest() is None (logged), find_checkpoint names the directory."""
    checkpoints = tmp_path / "checkpoints"
    manager = _saved(checkpoints, [10, 20])
    for path in manager.paths():
        path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        assert manager.latest() is None
    assert "none of the 2 checkpoints" in caplog.text
    with pytest.raises(CheckpointError, match="no valid checkpoint in .*checkpoints"):
        find_checkpoint(tmp_path)


def test_find_checkpoint_accepts_a_file_a_run_dir_or_a_checkpoints_dir(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    _saved(checkpoints, [10, 20])
    newest = checkpoints / "step-000000020.pt"
    assert find_checkpoint(tmp_path / "run")[0] == newest
    assert find_checkpoint(checkpoints)[0] == newest
    assert find_checkpoint(str(checkpoints / "step-000000010.pt"))[0] == (
        checkpoints / "step-000000010.pt"
    )
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        find_checkpoint(tmp_path / "empty")


def test_latest_is_none_for_a_missing_or_empty_directory(tmp_path):
    assert CheckpointManager(tmp_path / "absent").latest() is None
    assert CheckpointManager(tmp_path).latest() is None
    assert CheckpointManager(tmp_path / "absent").paths() == []


def test_retention_keeps_the_newest_three(tmp_path):
    """#3: keep_last=3 after 6 saves leaves exactly the 3 newest."""
    manager = _saved(tmp_path, [1, 2, 3, 4, 5, 6])
    assert [p.name for p in manager.paths()] == [checkpoint_name(s) for s in (4, 5, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(s) for s in (4, 5, 6)]


def test_retention_counts_and_deletes_only_this_runs_valid_checkpoints(tmp_path):
    """Newer files that are not valid checkpoints of this run (garbage, a truncated file,
    another run's checkpoint) once counted towards keep_last: saving step 25 deleted the run's
    own checkpoints and left only them, so the next resume found nothing valid."""
    ours = CheckpointManager(tmp_path, keep_last=2, run_id="ours")
    for step in (5, 10):
        ours.save(_state(step), step)
    (tmp_path / checkpoint_name(30)).write_bytes(b"not a checkpoint")
    CheckpointManager(tmp_path / "other", run_id="theirs").save(_state(40), 40)
    (tmp_path / "other" / checkpoint_name(40)).rename(tmp_path / checkpoint_name(40))
    truncated = ours.save(_state(50), 50).read_bytes()[:100]
    (tmp_path / checkpoint_name(50)).write_bytes(truncated)
    ours.save(_state(25), 25)
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    # Ours: 10 and the step just written (5 pruned); the three foreign files untouched.
    assert names == [checkpoint_name(s) for s in (10, 25, 30, 40, 50)]
    assert load_checkpoint(tmp_path / checkpoint_name(25))[META_KEY]["run_id"] == "ours"


def test_retention_never_deletes_the_file_just_written(tmp_path):
    ours = CheckpointManager(tmp_path, keep_last=2, run_id="ours")
    for step in (30, 40):
        ours.save(_state(step), step)
    ours.save(_state(20), 20)  # an older step written last (a resume from an older file)
    assert (tmp_path / checkpoint_name(20)).is_file()


def test_retention_orders_by_step_not_by_name(tmp_path):
    """A step past the zero-padding width still counts as the newest."""
    manager = _saved(tmp_path, [999_999_999, 1_000_000_000, 1_000_000_001], keep_last=2)
    assert [p.name for p in manager.paths()] == ["step-1000000000.pt", "step-1000000001.pt"]


@pytest.mark.parametrize("keep_last", [1, 0, -1])
def test_keep_last_below_two_is_rejected(tmp_path, keep_last):
    """#3: a corrupt newest file must leave one to fall back to."""
    with pytest.raises(ConfigError, match="trainer.keep_last"):
        CheckpointManager(tmp_path, keep_last=keep_last)
    assert issubclass(ConfigError, ValueError)


def test_failed_delete_warns_and_saving_continues(tmp_path, monkeypatch, caplog):
    """#3: a flaky filesystem that refuses deletes does not stop training."""

    def refuse(self, missing_ok=False):
        raise PermissionError(f"cannot delete {self}")

    monkeypatch.setattr(Path, "unlink", refuse)
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        manager = _saved(tmp_path, [1, 2, 3, 4, 5])
    assert len(manager.paths()) == 5
    assert "could not delete old checkpoint" in caplog.text
    assert _latest_step(manager) == 5


def test_check_writable_creates_the_directory(tmp_path):
    directory = tmp_path / "run" / "checkpoints"
    CheckpointManager(directory).check_writable()
    assert directory.is_dir() and list(directory.iterdir()) == []


@pytest.mark.parametrize(
    "make_directory",
    [
        pytest.param(lambda tmp: tmp / "file" / "checkpoints", id="under-a-file"),
        pytest.param(lambda tmp: tmp / "file", id="is-a-file"),
        pytest.param(lambda tmp: Path("/proc/x/checkpoints"), id="proc"),
    ],
)
def test_unwritable_directory_fails_early(tmp_path, make_directory):
    """#26: tests run as root, which ignores chmod, so use paths that fail for root too."""
    (tmp_path / "file").write_text("a regular file")
    directory = make_directory(tmp_path)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(directory))} is not writable"):
        CheckpointManager(directory).check_writable()
