"""Shared fixtures. The real-text tests read the LM1B sample named by LM1B_SAMPLE_DIR: where it
is absent they skip with the reason, except under CI=true, where they fail (CI must exercise
real text)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def _missing_sample(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the LM1B sample is unavailable: {reason}", pytrace=False)
    pytest.skip(f"LM1B sample unavailable ({reason}); set LM1B_SAMPLE_DIR to run real-text tests")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The shared LM1B sample directory (see ../shared/lm1b-sample/README.md)."""
    location = os.environ.get("LM1B_SAMPLE_DIR")
    if not location:
        _missing_sample("LM1B_SAMPLE_DIR is not set")
    path = Path(location)
    if not (path / "heldout-monolingual.tokenized.shuffled").is_dir():
        _missing_sample(f"{path} has no heldout-monolingual.tokenized.shuffled/")
    return path


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A small corpus from the known Markov source, in LM1B layout, with its vocab.txt."""
    from lm1b.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("synthetic")
    generate_corpus(
        root,
        vocab_size=100,
        num_train_shards=4,
        sentences_per_shard=200,
        num_heldout_shards=2,
        heldout_sentences_per_shard=60,
    )
    return root


@pytest.fixture(scope="session")
def tiny_overrides(synthetic_corpus) -> list[str]:
    """Hydra overrides for a seconds-long tiny run on `synthetic_corpus`, quiet and short."""
    return [
        "experiment=tiny",
        f"data.root={synthetic_corpus}",
        f"data.vocab_file={synthetic_corpus / 'vocab.txt'}",
        "logger.progress_bar=false",
        "trainer.val_every=0",
        "trainer.log_every=1",
    ]


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_overrides) -> Path:
    """A tiny run trained once for the session (see trained_checkpoint.train_tiny_run); tests
    only read it (copy it to change it)."""
    from trained_checkpoint import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"), tiny_overrides)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Single-threaded, seeded torch for every test, so results do not depend on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
