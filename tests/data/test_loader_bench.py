"""The loader benchmark runs on the shared sample and ends with a JSON line."""

from __future__ import annotations

import json

import pytest

from lm1b.commands.loader_bench import main


@pytest.mark.sample
def test_bench_prints_tokens_per_sec(sample_dir, tmp_path, capsys):
    result = main(
        [
            "--seconds",
            "0.3",
            "data=sample",
            f"data.vocab_file={tmp_path}/vocab.txt",
            "data.batch_size=64",
        ]
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["tokens_per_sec"] == result["tokens_per_sec"] > 0
    assert (tmp_path / "vocab.txt").is_file()
