"""The evaluator's passes over the vocabulary: hidden states collected over windows and scored
`tokens_per_pass` at a time give the window-by-window forward's NLL, in fewer passes."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

import lm1b.models.softmax as softmax_module
from lm1b.commands.evaluate import evaluate_checkpoint, read_config
from lm1b.config import CONFIG_DIR, ConfigError
from lm1b.config.evaluate import DEFAULT_TOKENS_PER_PASS
from lm1b.data.eval_stream import EvalStream
from lm1b.evaluation import evaluate_stream
from lm1b.inference import load_trained_model

HELDOUT = "heldout-monolingual.tokenized.shuffled"
NUM_STREAMS, NUM_STEPS = 5, 8  # 40 positions per window


@pytest.fixture(scope="module")
def model_and_stream(tiny_run_dir, synthetic_corpus):
    """The tiny run's model in float64 (so that float32 rounding cannot hide a wrong sum) and
    a stream over both held-out shards."""
    trained = load_trained_model(tiny_run_dir)
    files = sorted((synthetic_corpus / HELDOUT).glob("news.en.heldout-*"))
    stream = EvalStream(files, trained.tokenizer, batch_size=NUM_STREAMS, num_steps=NUM_STEPS)
    return trained.model.double(), stream


@torch.no_grad()
def window_by_window(model, stream) -> tuple[float, int]:
    """(summed NLL, scored tokens) from the model's own forward, one window at a time, every
    row's state carried: the evaluator's definition."""
    nll, count, state = 0.0, 0, None
    for batch in stream:
        out = model(batch.inputs, batch.targets, state, mask=batch.mask)
        nll, count, state = nll + out.nll_sum.item(), count + int(out.num_tokens), out.state
    return nll, count


@pytest.mark.parametrize("rows_per_step", [None, 2])
@pytest.mark.parametrize("tokens_per_pass", [1, 7, 40, 93, 100_000])
def test_collected_passes_give_the_window_by_window_nll(
    model_and_stream, tokens_per_pass, rows_per_step
):
    model, stream = model_and_stream
    expected_nll, expected_tokens = window_by_window(model, stream)
    totals = evaluate_stream(
        model, stream, rows_per_step=rows_per_step, tokens_per_pass=tokens_per_pass
    )
    assert totals.num_tokens == expected_tokens == stream.rank_counts.num_tokens
    assert totals.nll == pytest.approx(expected_nll, rel=1e-12)


def test_each_pass_over_the_vocabulary_scores_tokens_per_pass_tokens(model_and_stream, monkeypatch):
    """Every pass but the last covers exactly tokens_per_pass scored tokens, across windows
    (a pass used to cover one window: 40 positions here, padding included)."""
    model, stream = model_and_stream
    pass_sizes = []
    logsumexp = softmax_module._chunked_logsumexp

    def recording_logsumexp(hidden, *args):
        pass_sizes.append(hidden.shape[0])
        return logsumexp(hidden, *args)

    monkeypatch.setattr(softmax_module, "_chunked_logsumexp", recording_logsumexp)
    totals = evaluate_stream(model, stream, tokens_per_pass=93)
    full, last = divmod(totals.num_tokens, 93)
    assert pass_sizes == [93] * full + ([last] if last else [])
    windows_with_text = sum(batch.num_tokens > 0 for batch in stream)
    assert len(pass_sizes) == math.ceil(totals.num_tokens / 93) < windows_with_text


def test_padding_is_never_scored(model_and_stream, monkeypatch):
    """Only the masked-in positions reach the softmax: the padded tail of every row is left
    out before the pass, not weighted by zero in it."""
    model, stream = model_and_stream
    scored = []
    token_nll = softmax_module.full_softmax_token_nll

    def recording_token_nll(hidden, targets, *args):
        scored.append(targets.numel())
        return token_nll(hidden, targets, *args)

    monkeypatch.setattr(softmax_module, "full_softmax_token_nll", recording_token_nll)
    totals = evaluate_stream(model, stream)
    padded = sum(batch.mask.numel() for batch in stream)
    assert sum(scored) == totals.num_tokens == stream.rank_counts.num_tokens < padded


def test_the_pass_is_unchanged_in_float32(tiny_run_dir, synthetic_corpus):
    """The commands' own precision: the collected passes agree with the window-by-window
    forward to float32 rounding."""
    trained = load_trained_model(tiny_run_dir)
    files = [sorted((synthetic_corpus / HELDOUT).glob("news.en.heldout-*"))[0]]
    stream = EvalStream(files, trained.tokenizer, batch_size=3, num_steps=NUM_STEPS)
    expected_nll, _ = window_by_window(trained.model, stream)
    totals = evaluate_stream(trained.model, stream, tokens_per_pass=50)
    assert totals.nll == pytest.approx(expected_nll, rel=1e-6)


def evaluate_command_report(checkpoint, *overrides: str) -> dict:
    """`python -m lm1b.evaluate`'s report for `overrides`, composed as the command does."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(
            config_name="evaluate",
            overrides=[
                f"checkpoint={checkpoint}",
                f"data.test_files={HELDOUT}/news.en.heldout-0000*",
                "progress_bar=false",
                *overrides,
            ],
        )
    return evaluate_checkpoint(read_config(dict_cfg))


def test_the_command_passes_tokens_per_pass_and_records_it(tiny_run_dir, synthetic_corpus):
    default = evaluate_command_report(tiny_run_dir)
    small = evaluate_command_report(tiny_run_dir, "tokens_per_pass=7")
    assert default["tokens_per_pass"] == DEFAULT_TOKENS_PER_PASS and small["tokens_per_pass"] == 7
    assert small["nll"] == pytest.approx(default["nll"], rel=1e-6)
    assert small["num_tokens"] == default["num_tokens"]
    with pytest.raises(ConfigError, match="tokens_per_pass=0 is invalid"):
        evaluate_command_report(tiny_run_dir, "tokens_per_pass=0")
