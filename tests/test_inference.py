"""Loading trained models and scoring evaluation streams (RELIABILITY.md #25): EMA or raw
weights, run directories, reproducibility, batching independence, exact counts, known values."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lm1b.data.eval_stream import EvalStream
from lm1b.evaluation import evaluate_stream
from lm1b.inference import load_trained_model
from lm1b.vocab import SPECIALS

HELDOUT = "heldout-monolingual.tokenized.shuffled"


def stream_of(trained, files, num_streams: int) -> EvalStream:
    return EvalStream(files, trained.tokenizer, batch_size=num_streams, num_steps=8)


def independent_counts(paths: list[Path], vocabulary) -> tuple[int, int, int]:
    """(sentences, words + sentence ends, out-of-vocabulary words) straight from the bytes."""
    sentences = tokens = unknown = 0
    for path in paths:
        for line in path.read_bytes().decode("utf-8").split("\n"):
            words = [w for w in line.split(" ") if w]
            if words:
                sentences += 1
                tokens += len(words) + 1
                unknown += sum(w not in vocabulary for w in words)
    return sentences, tokens, unknown


@pytest.fixture(scope="module")
def heldout(synthetic_corpus) -> list[Path]:
    return sorted((synthetic_corpus / HELDOUT).glob("news.en.heldout-*"))


def test_load_rebuilds_the_run_and_swaps_in_the_ema(tiny_run_dir):
    state = torch.load(tiny_run_dir / "checkpoints" / "step-000000004.pt", weights_only=True)
    trained = load_trained_model(tiny_run_dir)
    raw = load_trained_model(tiny_run_dir, use_ema=False)
    # The run validated at step 4: a directory means its best checkpoint, written then.
    assert trained.checkpoint.name == "best.pt" and trained.step == 4
    assert dataclasses.asdict(trained.config) == state["config"]
    assert trained.tokenizer.vocab_size == trained.model.softmax.weight.shape[0]
    assert not trained.model.training and trained.ema and not raw.ema
    for param, shadow in zip(trained.model.rnn.parameters(), state["ema"]["shadow"], strict=True):
        assert torch.equal(param, shadow)
    for name, value in raw.model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    assert not torch.equal(trained.model.rnn.layers[0].proj, raw.model.rnn.layers[0].proj)


def test_ema_and_raw_weights_give_different_perplexities(tiny_run_dir, heldout):
    ppl = {}
    for use_ema in (True, False):
        trained = load_trained_model(tiny_run_dir, use_ema=use_ema)
        ppl[use_ema] = evaluate_stream(trained.model, stream_of(trained, heldout, 8)).perplexity
    assert ppl[True] != pytest.approx(ppl[False], rel=1e-5)  # well beyond float rounding


def test_the_evaluator_reproduces_the_trainers_validation(tiny_run_dir, synthetic_corpus):
    """Same weights, files and streams as the trainer's validation: the same perplexity."""
    trained = load_trained_model(tiny_run_dir)
    valid = sorted((synthetic_corpus / HELDOUT).glob("news.en.heldout-00001-*"))
    stream = stream_of(trained, valid, trained.config.data.eval_batch_size)
    logged = [
        json.loads(line) for line in (tiny_run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    val_ppl = next(r["val_ppl"] for r in logged if "val_ppl" in r)
    assert evaluate_stream(trained.model, stream).perplexity == pytest.approx(val_ppl, rel=1e-9)


def test_a_directory_means_its_best_checkpoint_else_its_newest_valid_one(tiny_run_dir, tmp_path):
    copy = shutil.copytree(tiny_run_dir, tmp_path / "run")
    assert load_trained_model(copy / "checkpoints").checkpoint.name == "best.pt"
    (copy / "checkpoints" / "best.pt").write_bytes(b"truncated")  # an invalid best is skipped
    assert load_trained_model(copy / "checkpoints").checkpoint.name == "step-000000004.pt"
    (copy / "checkpoints" / "step-000000004.pt").write_bytes(b"truncated")
    assert load_trained_model(copy).step == 2


def test_evaluating_twice_gives_identical_numbers(tiny_run_dir, heldout):
    trained = load_trained_model(tiny_run_dir)
    first = evaluate_stream(trained.model, stream_of(trained, heldout, 5), rows_per_step=2)
    again = load_trained_model(tiny_run_dir)
    second = evaluate_stream(again.model, stream_of(again, heldout, 5), rows_per_step=2)
    assert dataclasses.replace(first, seconds=0) == dataclasses.replace(second, seconds=0)


def test_rows_per_step_changes_nothing_beyond_rounding(tiny_run_dir, heldout):
    trained = load_trained_model(tiny_run_dir)
    stream = stream_of(trained, heldout, 16)
    trained.model.train()  # evaluate_stream switches to eval mode and back
    results = [evaluate_stream(trained.model, stream, rows_per_step=n) for n in (1, 3, 16)]
    assert trained.model.training
    assert len({r.num_tokens for r in results}) == 1
    for result in results[1:]:
        assert result.perplexity == pytest.approx(results[0].perplexity, rel=1e-6)


def test_counts_equal_an_independent_count_of_the_files(tiny_run_dir, heldout, tmp_path):
    trained = load_trained_model(tiny_run_dir)
    vocabulary = trained.tokenizer.vocabulary
    known = " ".join(w for w in vocabulary.words[:8] if w not in SPECIALS)
    messy = tmp_path / "messy"  # blank lines, unknown words, U+0092, no final newline
    messy.write_text(f"{known} zzz-unknown\n\n  \n\u0092 {known}\nqqq-unknown {known}", "utf-8")
    files = [*heldout, messy]
    totals = evaluate_stream(trained.model, stream_of(trained, files, 7), rows_per_step=3)
    sentences, tokens, unknown = independent_counts(files, vocabulary)
    assert (totals.num_sentences, totals.num_tokens, totals.num_unk) == (sentences, tokens, unknown)
    assert totals.num_words == tokens and unknown >= 3


def _three_sentences(trained, tmp_path) -> tuple[Path, list[list[int]]]:
    words = [w for w in trained.tokenizer.vocabulary.words if w not in SPECIALS]
    lines = [words[5:9], words[10:12], [words[4], "never-seen"]]
    path = tmp_path / "three"
    path.write_text("\n".join(" ".join(line) for line in lines) + "\n", "utf-8")
    return path, [trained.tokenizer.encode(line) for line in lines]


def test_a_uniform_model_scores_the_vocabulary_size(tiny_run_dir, tmp_path):
    """Zero output layer: every id has probability 1/V, so 9 predicted tokens cost 9 log V."""
    trained = load_trained_model(tiny_run_dir)
    with torch.no_grad():
        trained.model.softmax.weight.zero_()
        trained.model.softmax.bias.zero_()
    path, _ = _three_sentences(trained, tmp_path)
    totals = evaluate_stream(trained.model, stream_of(trained, [path], 2))
    vocab_size = trained.tokenizer.vocab_size
    assert totals.num_tokens == 4 + 2 + 2 + 3  # words plus one sentence end each
    assert totals.nll == pytest.approx(11 * math.log(vocab_size), rel=1e-6)  # float32 logits
    assert totals.perplexity == pytest.approx(vocab_size, rel=1e-6)


def test_a_hand_computed_three_sentence_file(tiny_run_dir, tmp_path):
    """One stream: the state runs through all three sentences, as a plain forward pass does."""
    trained = load_trained_model(tiny_run_dir)
    path, encoded = _three_sentences(trained, tmp_path)
    tok, model = trained.tokenizer, trained.model
    inputs = torch.tensor([i for ids in encoded for i in [tok.bos_id, *ids]])
    targets = torch.tensor([i for ids in encoded for i in [*ids, tok.eos_id]])
    with torch.no_grad():
        hidden, _ = model.rnn(model.embedding(inputs)[:, None], None)  # (N, 1, p)
        logits = hidden[:, 0] @ model.softmax.weight.t() + model.softmax.bias[:, 0]  # (N, V)
        expected = F.cross_entropy(logits.double(), targets, reduction="sum").item()
    totals = evaluate_stream(model, stream_of(trained, [path], 1))
    assert totals.num_tokens == len(targets) == 11
    assert totals.nll == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_a_two_rank_checkpoint_loads_in_one_process(tmp_path, tiny_overrides, heldout):
    command = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "lm1b.train", *tiny_overrides),
        *("optim.ema_decay=0.9", "trainer.max_steps=2", f"hydra.run.dir={tmp_path}"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "checkpoints" / "step-000000002.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    trained = load_trained_model(tmp_path)
    assert trained.ema and trained.step == 2
    totals = evaluate_stream(trained.model, stream_of(trained, heldout, 4))
    assert math.isfinite(totals.perplexity) and totals.num_tokens > 0
