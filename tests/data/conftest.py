"""Fixtures for the data tests: small corpora written in tmp_path."""

from __future__ import annotations

import pytest
from shard_files import write_shards

from lm1b.vocab import build_vocabulary


@pytest.fixture
def corpus(tmp_path):
    """(shard paths, vocabulary) of 3 shards x 40 unique lines."""
    paths = write_shards(tmp_path / "train", 3, 40)
    return paths, build_vocabulary(paths, num_workers=1)
