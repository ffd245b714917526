"""End to end: sampled-softmax training on the synthetic Markov corpus approaches the source's
true perplexity under the full softmax."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from lm1b.config import compose_config
from lm1b.data.eval_stream import EvalStream
from lm1b.data.synthetic import HELDOUT_DIR, TRAIN_DIR, generate_corpus
from lm1b.data.train_loader import TrainLoader
from lm1b.models.language_model import build_language_model
from lm1b.tokenizer import WordTokenizer
from lm1b.vocab import Vocabulary

logger = logging.getLogger(__name__)

STEPS = 600
# Measured: 5.80 after 600 steps against the source's 4.89 on the test shard (ratio 1.19).
# A smoothed bigram count model on the same 6,000 training sentences reaches ~1.01x; the LSTM
# closes the rest more slowly (5.54 at 1,400 steps). Below 0.98x would mean a leak.
MAX_RATIO, MIN_RATIO = 1.3, 0.98


def _train(model, loader: TrainLoader, steps: int) -> None:
    """Adam on the LSTM, SparseAdam on the row-sparse vocabulary tables; state carried."""
    tables = [model.embedding.weight, model.softmax.weight, model.softmax.bias]
    optimizers = [
        torch.optim.Adam(model.rnn.parameters(), lr=0.01),
        torch.optim.SparseAdam(tables, lr=0.01),
    ]
    generator, state = torch.Generator().manual_seed(0), None
    model.train()
    for _, batch in zip(range(steps), loader, strict=False):
        out = model(batch.inputs, batch.targets, state, generator=generator)
        for optimizer in optimizers:
            optimizer.zero_grad()
        out.loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        state = tuple(s.detach() for s in out.state)


@torch.no_grad()
def _perplexity(model, stream: EvalStream) -> tuple[float, int]:
    """Token-weighted full-softmax perplexity, state carried across windows."""
    model.eval()
    nll_sum, num_tokens, state = 0.0, 0, None
    for batch in stream:
        out = model(batch.inputs, batch.targets, state, batch.mask)
        nll_sum += out.nll_sum.item()
        num_tokens += int(out.num_tokens)
        state = out.state
    return math.exp(nll_sum / num_tokens), num_tokens


@pytest.mark.slow
def test_sampled_training_reaches_near_true_perplexity(tmp_path):
    info = generate_corpus(
        tmp_path,
        vocab_size=100,
        num_train_shards=2,
        sentences_per_shard=3000,
        num_heldout_shards=1,
        heldout_sentences_per_shard=500,
        seed=0,
    )
    tokenizer = WordTokenizer(Vocabulary.load(tmp_path / "vocab.txt"))
    train_files = sorted((tmp_path / TRAIN_DIR).glob("news.en-*"))
    loader = TrainLoader(train_files, tokenizer, batch_size=32, num_steps=10, seed=0)
    test_files = sorted((tmp_path / HELDOUT_DIR).glob("news.en.heldout-00000-*"))
    stream = EvalStream(test_files, tokenizer, batch_size=16, num_steps=20)
    cfg = dataclasses.replace(
        compose_config(["experiment=tiny"]).model,
        num_layers=1,
        state_size=64,
        projection_size=32,
        num_sampled=32,  # of the 97 vocabulary ids
        dropout=0.0,
        sparse_embedding=True,
    )
    model = build_language_model(cfg, vocab_size=tokenizer.vocab_size)

    _train(model, loader, STEPS)
    perplexity, num_tokens = _perplexity(model, stream)

    true_perplexity = info["test_shard_source_perplexity"]
    logger.info("perplexity %.3f, source %.3f on this shard", perplexity, true_perplexity)
    assert num_tokens == info["test_shard_tokens"]
    assert MIN_RATIO * true_perplexity < perplexity < MAX_RATIO * true_perplexity
