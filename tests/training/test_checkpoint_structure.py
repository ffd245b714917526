"""A checkpoint that loads but lacks an entry, or holds one of the wrong type (a hand-edited or
foreign file), is refused where it is loaded, in one line naming the file and the entry: for
every command that loads one, and for a resume, which falls back to the previous checkpoint
when the newest is such a file."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm1b.config import compose_config
from lm1b.training.checkpoint import CheckpointError, load_checkpoint
from lm1b.training.setup import build_trainer
from trained_checkpoint import CPU

NEWEST = Path("checkpoints") / "step-000000004.pt"  # of tiny_run_dir; step 2 is before it
# What tiny_run_dir was trained with beyond tiny_overrides (trained_checkpoint.train_tiny_run)
# and a resume of it must repeat; no TensorBoard (importing it alone takes seconds).
TINY_RUN = ["optim.ema_decay=0.9", "logger.tensorboard=false"]


def _without_tokenizer(state: dict) -> None:
    del state["tokenizer"]


def _without_counters(state: dict) -> None:
    del state["counters"]


def _ema_of_strings(state: dict) -> None:
    state["ema"]["shadow"] = ["not a tensor" for _ in state["ema"]["shadow"]]


def _tokenizer_as_a_list(state: dict) -> None:
    state["tokenizer"] = ["the", "words"]


def _config_as_a_list(state: dict) -> None:
    state["config"] = [state["config"]]


# Each hand edit a new user tried, with the words the one-line refusal must contain (before,
# each ended in a KeyError, AttributeError or TypeError traceback).
EDITS = [
    pytest.param(_without_tokenizer, "lacks 'tokenizer'", id="no-tokenizer"),
    pytest.param(_without_counters, "lacks 'counters'", id="no-counters"),
    pytest.param(_ema_of_strings, "'ema.shadow' holding a str", id="ema-not-tensors"),
    pytest.param(_tokenizer_as_a_list, "'tokenizer' of type list", id="tokenizer-not-a-dict"),
    pytest.param(_config_as_a_list, "'config' of type list", id="config-a-list"),
]


def edited_copy(source: Path, edit, target: Path) -> Path:
    """`source` loaded, changed by `edit` and saved as `target`, as a user would by hand (its
    meta entry untouched, so it still loads as a complete checkpoint)."""
    state = torch.load(source, weights_only=True)
    edit(state)
    torch.save(state, target)
    return target


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_command(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def assert_one_line_refusal(result: subprocess.CompletedProcess, prefix: str, *words: str) -> None:
    """The command exited 1 with no traceback, its last line naming each of `words`."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), last
    for word in words:
        assert word in last, last


@pytest.mark.parametrize(("edit", "problem"), EDITS)
def test_load_refuses_a_hand_edited_checkpoint_naming_the_file_and_entry(
    tiny_run_dir, tmp_path, edit, problem
):
    edited = edited_copy(tiny_run_dir / NEWEST, edit, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(edited)
    message = str(refused.value)
    assert str(edited) in message and problem in message and "\n" not in message, message


@pytest.mark.parametrize(("edit", "problem"), EDITS)
def test_evaluate_on_a_hand_edited_checkpoint_ends_in_one_line(
    tiny_run_dir, tmp_path, edit, problem
):
    edited = edited_copy(tiny_run_dir / NEWEST, edit, tmp_path / "edited.pt")
    args = [f"checkpoint={edited}", f"hydra.run.dir={tmp_path / 'out'}"]
    result = run_command("lm1b.evaluate", args, cwd=tmp_path)
    assert_one_line_refusal(result, "lm1b.evaluate: ", str(edited), problem)


def test_resuming_from_a_named_checkpoint_whose_config_is_a_list_ends_in_one_line(
    tiny_run_dir, tiny_overrides, tmp_path
):
    edited = edited_copy(tiny_run_dir / NEWEST, _config_as_a_list, tmp_path / "edited.pt")
    args = [*tiny_overrides, *TINY_RUN, f"trainer.resume={edited}", "trainer.max_steps=6"]
    result = run_command("lm1b.train", [*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_line_refusal(result, "lm1b.train: ", str(edited), "'config' of type list")


def test_a_resume_falls_back_from_a_newest_checkpoint_whose_config_is_a_list(
    tiny_run_dir, tiny_overrides, tmp_path, caplog
):
    """Like a damaged newest file: skipped with a warning naming it and the entry, and the
    run resumes from the checkpoint before it."""
    run_dir = shutil.copytree(tiny_run_dir, tmp_path / "run")
    edited_copy(run_dir / NEWEST, _config_as_a_list, run_dir / NEWEST)
    cfg = compose_config([*tiny_overrides, *TINY_RUN, "trainer.max_steps=6"])
    with caplog.at_level(logging.WARNING, logger="lm1b.training.checkpoint"):
        resumed = build_trainer(cfg, CPU, run_dir, {}, config_yaml="")
    resumed.metrics.close()
    assert resumed.counters.step == 2
    assert f"{run_dir / NEWEST} has 'config' of type list" in caplog.text
