"""Mistakes a user makes end in one line naming the field or file, not a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from lm1b.commands.run_directory import RunDirectoryCheck
from lm1b.config import ConfigError, compose_config
from lm1b.training.distributed import DistContext, init_distributed
from lm1b.training.setup import build_trainer

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_names_the_field():
    with pytest.raises(ConfigError, match=r"trainer.device='cuda' is invalid here"):
        init_distributed("cuda")


def test_a_vocabulary_file_that_is_a_directory_fails_before_any_work(tmp_path, tiny_overrides):
    """It was found 'missing', rebuilt from every shard, and only then failed to be written,
    leaving a temporary file behind."""
    directory = tmp_path / "vocab"
    directory.mkdir()
    cfg = compose_config([*tiny_overrides, f"data.vocab_file={directory}"])
    with pytest.raises(ConfigError, match=r"data.vocab_file=.*vocab is invalid: it exists and"):
        build_trainer(cfg, CPU, tmp_path / "run", {}, config_yaml="")
    assert list(directory.iterdir()) == [] and not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_without_training_state_is_skipped_on_resume(tmp_path, tiny_overrides):
    """A newest file that loads (weights_only) but lacks keys once crashed the resume with a
    KeyError; now it is skipped like a truncated file and the previous one is used."""
    from lm1b.training.checkpoint import CheckpointManager

    cfg = compose_config([*tiny_overrides, "trainer.checkpoint_every=2", "trainer.max_steps=4"])
    trainer = build_trainer(cfg, CPU, tmp_path, {}, config_yaml="")
    trainer.fit()
    trainer.metrics.close()
    CheckpointManager(tmp_path / "checkpoints").save({"model": {}}, 6)  # valid meta, no state
    cfg = compose_config([*tiny_overrides, "trainer.max_steps=4"])
    resumed = build_trainer(cfg, CPU, tmp_path, {}, config_yaml="")
    assert resumed.counters.step == 4


def test_a_run_directory_that_is_a_file_ends_in_one_line(tmp_path, tiny_overrides):
    """Hydra's mkdir raised FileExistsError with a traceback."""
    afile = tmp_path / "afile"
    afile.write_text("a user's file\n")
    command = [sys.executable, "-m", "lm1b.train", *tiny_overrides, f"hydra.run.dir={afile}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"lm1b.train: hydra.run.dir={afile} is a file, not a directory: pass a directory "
        "(new or holding a run)"
    )
    assert afile.read_text() == "a user's file\n"


def test_a_full_disk_is_named_before_hydra_writes(tmp_path, monkeypatch):
    """Hydra failed writing .hydra/ with 'OSError: [Errno 28]', naming no file."""
    full = SimpleNamespace(total=2**30, used=2**30, free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(tmp_path / "new")}, "job": {"name": "evaluate"}}}
    )
    with pytest.raises(SystemExit, match=r"^lm1b.evaluate: the disk holding hydra.run.dir=.*new "):
        RunDirectoryCheck().on_run_start(config=config)


def test_a_checkpoint_that_cannot_be_written_says_how_much_disk_is_free(tmp_path, monkeypatch):
    """torch.save on a full disk fails with 'enforce fail at inline_container.cc'."""
    from lm1b.training.checkpoint import CheckpointError, CheckpointManager

    def full_disk(payload, file):
        file.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 164352")

    monkeypatch.setattr(torch, "save", full_disk)
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=2, run_id="run")
    with pytest.raises(CheckpointError, match=r"step-000000005.pt \(.* MiB free on its disk\)"):
        manager.save({"model": {}}, 5)
    assert list((tmp_path / "checkpoints").iterdir()) == []  # no .tmp left behind
