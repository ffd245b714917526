"""Mistakes a user makes end in one line naming the field or file, not a traceback."""

from __future__ import annotations

import pytest
import torch

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
