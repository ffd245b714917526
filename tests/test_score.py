"""Per-sentence scoring against independent references: the evaluator (state carried) and the
model's own forward pass on each sentence alone (fresh state)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lm1b.commands.score import ScoreConfig, main, numbered_lines, run, score_lines
from lm1b.data.eval_stream import EvalStream
from lm1b.data.synthetic import HELDOUT_DIR
from lm1b.evaluation import evaluate_stream
from lm1b.inference import load_trained_model
from trained_checkpoint import train_tiny

EXTRA = ["w1 zzz-unknown w2 w3", "", "w5"]  # an unknown word, a blank line, a one-word sentence


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_overrides):
    return train_tiny(tmp_path_factory.mktemp("score-run"), tiny_overrides, steps=10)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, synthetic_corpus):
    """40 held-out sentences, then EXTRA."""
    shard = sorted((synthetic_corpus / HELDOUT_DIR).iterdir())[0]
    lines = shard.read_text().splitlines()[:40] + EXTRA
    path = tmp_path_factory.mktemp("score-text") / "text.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def score(checkpoint, path, carry_state: bool, batch_size: int = 8) -> list[dict]:
    trained = load_trained_model(checkpoint)
    lines = numbered_lines(str(path), trained.config.data.max_line_tokens)
    return list(score_lines(trained, lines, carry_state=carry_state, batch_size=batch_size))


def test_carried_scores_sum_to_the_evaluators_nll(checkpoint, text_file):
    trained = load_trained_model(checkpoint)
    stream = EvalStream(
        [text_file], trained.tokenizer, batch_size=1, num_steps=trained.config.data.num_steps
    )
    totals = evaluate_stream(trained.model, stream)
    records = score(checkpoint, text_file, carry_state=True, batch_size=5)
    total = -sum(r["logprob"] for r in records)
    assert abs(total - totals.nll) / totals.nll < 1e-4
    assert sum(r["num_tokens"] for r in records) == totals.num_tokens
    assert sum(r["num_unk"] for r in records) == totals.num_unk == 1
    assert len(records) == totals.num_sentences


def test_fresh_scores_equal_each_sentence_run_alone(checkpoint, text_file):
    trained = load_trained_model(checkpoint)
    records = score(checkpoint, text_file, carry_state=False, batch_size=7)
    vocab = trained.tokenizer
    for record in records:
        ids = [vocab.bos_id, *vocab.encode(record["sentence"].split(" ")), vocab.eos_id]
        ids = torch.tensor([ids])
        with torch.no_grad():
            out = trained.model(ids[:, :-1], ids[:, 1:])  # zero state, no padding
        assert record["logprob"] == pytest.approx(-out.nll_sum.item(), rel=1e-6)
        assert record["num_tokens"] == ids.shape[1] - 1
        assert record["ppl"] == pytest.approx(torch.exp(out.nll_sum / out.num_tokens).item())
    # Batching, padding and sorting change nothing; output stays in input order.
    alone = score(checkpoint, text_file, carry_state=False, batch_size=1)
    assert [r["line"] for r in records] == [r["line"] for r in alone] == [*range(1, 42), 43]
    for a, b in zip(records, alone, strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], rel=1e-6)


def test_unknown_words_are_scored_as_unk_and_counted(checkpoint, text_file):
    records = {r["line"]: r for r in score(checkpoint, text_file, carry_state=False)}
    assert records[41]["sentence"] == EXTRA[0]
    assert records[41]["num_unk"] == 1 and records[41]["num_tokens"] == 5
    assert records[43]["num_unk"] == 0 and records[43]["num_tokens"] == 2
    assert 42 not in records  # the blank line


def test_run_writes_json_lines(checkpoint, text_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    cfg = ScoreConfig(checkpoint=str(checkpoint), input=str(text_file), output=str(out))
    totals = run(cfg)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == totals["num_sentences"] == 42
    assert {"sentence", "logprob", "num_tokens", "ppl", "num_unk", "line"} <= set(records[0])


@pytest.mark.slow
def test_command_reads_standard_input(checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "lm1b.score", f"checkpoint={checkpoint}", "input=-", "device=cpu"],
        input="w1 w2\n\nw3 w4 w5\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["line"], r["sentence"]) for r in records] == [(1, "w1 w2"), (3, "w3 w4 w5")]
    assert "perplexity" in result.stderr


def test_command_requires_checkpoint_and_input():
    with pytest.raises(SystemExit, match="checkpoint, input required"):
        main([])


def test_the_input_file_is_never_the_output(checkpoint, text_file, tmp_path):
    """`input=F output=F` (or output a hard link to F) once truncated F to 0 bytes."""
    own = tmp_path / "text.txt"
    own.write_bytes(text_file.read_bytes())
    alias = tmp_path / "alias.txt"
    alias.hardlink_to(own)
    for output in (own, alias):
        with pytest.raises(SystemExit, match="is the input file"):
            main([f"checkpoint={checkpoint}", f"input={own}", f"output={output}"])
        assert own.read_bytes() == text_file.read_bytes()


def test_every_line_gets_one_record_even_one_token_longer_than_the_limit(checkpoint, tmp_path):
    """A line whose single token exceeds the byte bound once produced no record at all."""
    path = tmp_path / "long.txt"
    limit = load_trained_model(checkpoint).config.data.max_line_tokens
    huge = "x" * (limit * 64 + 100)  # over the reader's bound of 64 bytes per token
    path.write_text(f"w1 w2\n{huge}\nw3 {' '.join(['w4'] * limit)}\nw5\n")
    out = tmp_path / "scores.jsonl"
    run(ScoreConfig(checkpoint=str(checkpoint), input=str(path), output=str(out)))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert [r["truncated"] for r in records] == [False, True, True, False]
    assert records[1]["num_tokens"] == 2  # the cut token (an <UNK>) and the sentence end


def test_directories_are_refused_by_name(checkpoint, text_file, tmp_path):
    for args in ([f"input={tmp_path}"], [f"input={text_file}", f"output={tmp_path}"]):
        with pytest.raises(SystemExit, match=r"put=.* is a directory"):
            main([f"checkpoint={checkpoint}", *args])


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_the_command_quietly(checkpoint, text_file, tmp_path):
    """`python -m lm1b.score ... | head -1` once ended in a BrokenPipeError traceback. The
    input is long enough (about 1 MB of records) to be still writing when `head` exits."""
    long_text = tmp_path / "long.txt"
    long_text.write_text(text_file.read_text() * 200)
    command = f"{sys.executable} -m lm1b.score checkpoint={checkpoint} input={long_text} | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120
    )
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
