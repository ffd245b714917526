"""The language model's wiring: layouts, masks, state carrying, modes, sparse gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lm1b.config import compose_config
from lm1b.models.language_model import LMOutput, build_language_model
from lm1b.models.sampler import CandidateSample

VOCAB = 50


def _model_config(**overrides):
    cfg = compose_config(["experiment=tiny"]).model
    return dataclasses.replace(cfg, dropout=0.0, **overrides)


def _model(**overrides):
    return build_language_model(_model_config(**overrides), vocab_size=VOCAB)


def _batch(batch: int = 3, steps: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, VOCAB, (batch, steps), generator=generator),
        torch.randint(0, VOCAB, (batch, steps), generator=generator),
    )


def _naive_nll(model, inputs, targets, state=None):
    """Per-position NLL (B, T) from the whole logits matrix, computed batch-major here."""
    hidden, new_state = model.rnn(model.embedding(inputs).transpose(0, 1), state)  # (T, B, p)
    hidden = hidden.transpose(0, 1)  # (B, T, p)
    logits = hidden @ model.softmax.weight.t() + model.softmax.bias.squeeze(1)  # (B, T, V)
    nll = -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return nll, new_state


def test_builds_on_meta_device_with_paper_sizes():
    cfg = compose_config(["experiment=biglstm"]).model
    with torch.device("meta"):
        model = build_language_model(cfg, vocab_size=793_471)
    assert all(p.is_meta for p in model.parameters())
    count = {
        name: sum(p.numel() for p in getattr(model, name).parameters())
        for name in ("embedding", "rnn", "softmax")
    }
    assert count == {
        "embedding": 793_471 * 1024,
        "rnn": 151_060_480,
        "softmax": 793_471 * 1024 + 793_471,
    }
    assert model.softmax.bias.shape == (793_471, 1)
    assert model.embedding.sparse == cfg.sparse_embedding


def test_eval_mode_equals_naive_full_softmax_with_mask_and_chunks():
    model = _model().eval()
    model.token_chunk_size, model.vocab_chunk_size = 4, 7  # neither divides 15 nor 50
    inputs, targets = _batch()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 0] = False
    with torch.no_grad():
        out = model(inputs, targets, mask=mask)
        naive, naive_state = _naive_nll(model, inputs, targets)
    assert isinstance(out, LMOutput)
    torch.testing.assert_close(out.nll_sum.float(), naive[mask].sum())
    assert out.num_tokens.item() == 12
    torch.testing.assert_close(out.loss, naive[mask].mean())
    for got, want in zip(out.state, naive_state, strict=True):
        torch.testing.assert_close(got, want)


def test_training_mode_is_the_sampled_loss_of_the_same_hidden_states():
    model = _model().train()
    inputs, targets = _batch()
    out = model(inputs, targets, generator=torch.Generator().manual_seed(4))
    sample = model.sampler.sample(torch.Generator().manual_seed(4))
    hidden, _ = model.rnn(model.embedding(inputs.t()))  # (T, B, p)
    expected = model.softmax.sampled_loss(hidden.reshape(-1, 16), targets.t().reshape(-1), sample)
    torch.testing.assert_close(out.loss, expected)
    assert out.num_tokens.item() == 15
    torch.testing.assert_close(out.nll_sum, out.loss * 15)


def test_training_with_exhaustive_sampler_equals_full_softmax(monkeypatch):
    """Feeding every id with Q = 1 through the training path gives the eval-mode loss."""
    model = _model()
    inputs, targets = _batch()
    monkeypatch.setattr(
        model.sampler, "sample", lambda generator, device: CandidateSample.exhaustive(VOCAB)
    )
    train_loss = model.train()(inputs, targets).loss
    eval_loss = model.eval()(inputs, targets).loss
    torch.testing.assert_close(train_loss, eval_loss)


def test_carried_state_equals_one_long_window():
    model = _model().eval()
    inputs, targets = _batch(steps=8)
    with torch.no_grad():
        whole = model(inputs, targets)
        first = model(inputs[:, :5], targets[:, :5])
        second = model(inputs[:, 5:], targets[:, 5:], first.state)
    torch.testing.assert_close(first.nll_sum + second.nll_sum, whole.nll_sum)
    for got, want in zip(second.state, whole.state, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("sparse", [True, False])
def test_vocabulary_gradients_are_sparse_when_configured(sparse):
    model = _model(sparse_embedding=sparse).train()
    inputs, targets = _batch()
    model(inputs, targets, generator=torch.Generator().manual_seed(1)).loss.backward()
    for table in (model.embedding.weight, model.softmax.weight, model.softmax.bias):
        assert table.grad.is_sparse == sparse
    assert all(not p.grad.is_sparse for p in model.rnn.parameters())
    # Only the input rows of the embedding receive a gradient.
    grad = model.embedding.weight.grad.to_dense()
    untouched = torch.ones(VOCAB, dtype=torch.bool)
    untouched[inputs.unique()] = False
    assert grad[untouched].eq(0).all() and grad[~untouched].ne(0).any()


def test_same_generator_seed_gives_same_sample_and_loss():
    model = _model().train()
    inputs, targets = _batch()
    losses = [
        model(inputs, targets, generator=torch.Generator().manual_seed(seed)).loss
        for seed in (9, 9, 10)
    ]
    assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2])


def test_initialisation_is_uniform_unit_scaling():
    model = _model()
    limit = (3.0 / VOCAB) ** 0.5
    for table in (model.embedding.weight, model.softmax.weight, model.softmax.bias):
        assert table.abs().max() <= limit and table.abs().max() > 0.5 * limit


def test_vocab_size_must_be_known_and_consistent():
    with pytest.raises(ValueError, match="model.vocab_size"):
        build_language_model(_model_config())
    with pytest.raises(ValueError, match="model.vocab_size"):
        build_language_model(_model_config(vocab_size=60), vocab_size=VOCAB)
    assert build_language_model(_model_config(vocab_size=60)).softmax.weight.shape == (60, 16)
