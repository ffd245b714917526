"""Sampling: reproducible with a seed, greedy at top_k=1 (checked against re-running the whole
prefix from a zero state), and the top-k / top-p filters on known distributions."""

from __future__ import annotations

import math

import pytest
import torch

from lm1b.commands.generate import GenerateConfig, filter_logits, main, next_token_logits, sample
from lm1b.inference import load_trained_model
from trained_checkpoint import train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_overrides):
    run_dir = train_tiny(tmp_path_factory.mktemp("generate-run"), tiny_overrides, steps=10)
    return load_trained_model(run_dir)


def greedy_reference(trained, prompt: list[int], max_tokens: int) -> list[int]:
    """Argmax decoding that re-runs the whole prefix from a zero state at every step."""
    tokenizer, model = trained.tokenizer, trained.model
    ids = [tokenizer.bos_id, *prompt]
    for _ in range(max_tokens):
        with torch.no_grad():
            hidden, _ = model.rnn(model.embedding(torch.tensor([ids]).t()))
        token = int(next_token_logits(trained, hidden[-1]).argmax())
        if token == tokenizer.eos_id:
            break
        ids.append(token)
    return ids[1:]


def test_same_seed_same_samples_other_seed_other_samples(trained):
    cfg = GenerateConfig(checkpoint="unused", num_samples=4, top_p=0.95, seed=3)
    first = sample(trained, cfg)
    assert first == sample(trained, cfg)
    assert first != sample(trained, GenerateConfig(checkpoint="unused", num_samples=4, seed=4))
    assert len(first) == 4 and all(len(ids) <= cfg.max_tokens for ids in first)
    assert trained.tokenizer.eos_id not in sum(first, [])


def test_top_k_one_is_greedy_decoding(trained):
    prompt = trained.tokenizer.encode(["w1", "w2"])
    cfg = GenerateConfig(checkpoint="unused", prompt="w1 w2", num_samples=2, top_k=1, max_tokens=12)
    expected = greedy_reference(trained, prompt, cfg.max_tokens)
    assert sample(trained, cfg) == [expected, expected]


def test_filters_keep_the_right_tokens():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda out: torch.isfinite(out)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.81)) == [True, True, True, False]
    assert kept(filter_logits(logits[:, [3, 1, 0, 2]], top_k=1)) == [False, False, True, False]
    # Kept logits are unchanged, so the renormalised probabilities keep their ratios.
    out = filter_logits(logits, top_p=0.7).softmax(-1)[0]
    assert out[0].item() == pytest.approx(0.5 / 0.8) and math.isclose(out[2].item(), 0.0)


def test_command_prints_reproducible_samples(trained, capsys):
    args = [f"checkpoint={trained.checkpoint}", "num_samples=3", "seed=7", "device=cpu"]
    main(args)
    first = capsys.readouterr().out.splitlines()
    main(args)
    assert len(first) == 3 and capsys.readouterr().out.splitlines() == first
    with pytest.raises(SystemExit, match="temperature=0.0 is invalid"):
        main([*args, "temperature=0"])
