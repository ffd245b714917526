"""Reference figures our results are compared with (sources: docs/benchmarks.md)."""

from __future__ import annotations

# The paper's v3 test perplexities: one week of training on 4x V100 with the full 0.8B-word
# corpus, on the standard test shard.
PAPER_PERPLEXITY = {
    "biglstm": 35.1,
    "flstm_r512": 36.3,
    "glstm_k2": 36.0,
    "glstm_k4": 40.6,
    "glstm_k8": 39.4,
}

# KenLM's interpolated modified Kneser-Ney 5-gram trained on the sample's heldout shard 10 with
# the same count >= 2 vocabulary (9,082 entries), scored on heldout shard 11 with the same
# conventions as `lm1b.evaluate`: the bar a neural model trained on `data=sample` must clear.
SAMPLE_KNESER_NEY_PERPLEXITY = 175.8
