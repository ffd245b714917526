"""The memory model (lm1b.training.memory) against a measured process, at a size where the
vocabulary tables dominate as they do at paper size (V 400,000, p 128: 205 MB per table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lm1b.config import compose_config
from lm1b.training.memory import HOST_BYTES_PER_VOCAB_ENTRY, estimate_training_memory

VOCAB = 400_000
SIZE = [
    "model.projection_size=128",
    "model.state_size=512",
    "model.num_sampled=512",
    "data.batch_size=16",
    "data.num_steps=20",
    "optim=adagrad",
    "trainer.keep_best=false",
]


def _big_vocabulary(corpus_vocab: Path, path: Path) -> Path:
    """The corpus's vocabulary padded to VOCAB entries with words of count 1 (sorted after the
    corpus's own, before `<UNK> 0`, as the file format requires)."""
    lines = corpus_vocab.read_text().splitlines()
    filler = [f"zz{i:07d} 1" for i in range(VOCAB - len(lines))]
    path.write_text("\n".join([*lines[:-1], *filler, lines[-1]]) + "\n")
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_memory_model_matches_a_measured_run_and_no_table_gradient_is_dense(
    tmp_path, tiny_overrides, synthetic_corpus
):
    vocab = _big_vocabulary(synthetic_corpus / "vocab.txt", tmp_path / "vocab.txt")
    overrides = [*tiny_overrides, f"data.vocab_file={vocab}", *SIZE]
    probe = Path(__file__).with_name("memory_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe), *overrides],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    measured = json.loads(done.stdout.strip().splitlines()[-1])

    cfg = compose_config(overrides)
    estimate = estimate_training_memory(
        cfg.model, cfg.optim, vocab_size=VOCAB, rows=16, num_steps=20
    )
    predicted = estimate.total + VOCAB * HOST_BYTES_PER_VOCAB_ENTRY
    peak = max(measured["steps_peak"], measured["save_peak"]) - measured["before"]
    assert abs(predicted - peak) / peak < 0.15, (predicted, peak, measured)

    # A dense (V, p) gradient of either table would add 205 MB during the steps.
    dense_table_gradient = VOCAB * 128 * 4
    assert measured["steps_peak"] - measured["built"] < dense_table_gradient / 2, measured
