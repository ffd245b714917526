"""`python -m lm1b.evaluate`: eval.json, its run directory, and one-line errors (RELIABILITY.md
#25). The numbers themselves are tested on `lm1b.inference` in test_inference.py."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lm1b.commands.evaluate import evaluate_checkpoint, read_config
from lm1b.config import CONFIG_DIR, ConfigError
from lm1b.evaluation import evaluate_stream
from lm1b.inference import load_trained_model
from lm1b.training.checkpoint import CheckpointError
from test_inference import HELDOUT, independent_counts, stream_of
from trained_checkpoint import train_tiny_run

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "perplexity", "nll", "num_tokens", "num_words", "num_sentences", "num_unk",
    "words_per_sec", "checkpoint", "files", "step", "weights",
}  # fmt: skip


@pytest.fixture(scope="module")
def heldout_glob(synthetic_corpus) -> str:
    return f"{HELDOUT}/news.en.heldout-0000*"


def evaluate_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lm1b.evaluate", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def composed(overrides: list[str]):
    """The evaluate config composed in process, as the command would see it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


@pytest.mark.slow
def test_the_command_writes_eval_json_under_outputs_evaluate(tiny_run_dir, heldout_glob, tmp_path):
    args = [f"checkpoint={tiny_run_dir}", f"data.test_files={heldout_glob}", "batch_size=5"]
    result = evaluate_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = (tmp_path / "outputs" / "evaluate").glob("*/eval.json")
    report = json.loads(written.read_text())
    assert set(report) >= FIELDS and "perplexity_per_word" not in report  # word tokenizer
    assert report["checkpoint"] == str(tiny_run_dir / "checkpoints" / "best.pt")
    assert report["weights"] == "ema" and len(report["files"]) == 2
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"perplexity {report['perplexity']:.2f} | ")
    assert "2 files" in summary and "words/s" in summary
    # The default streams are the checkpoint's data.eval_batch_size; batch_size changes nothing.
    trained = load_trained_model(tiny_run_dir)
    stream = stream_of(trained, [Path(f) for f in report["files"]], report["num_streams"])
    expected = evaluate_stream(trained.model, stream)
    assert report["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    assert report["num_tokens"] == expected.num_tokens


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "checkpoint is required"),
        (["checkpoint={corrupt}"], "cannot load checkpoint .*step-000000009.pt"),
    ],
)
def test_command_errors_are_one_line(tmp_path, args, message):
    corrupt = tmp_path / "step-000000009.pt"
    corrupt.write_bytes(b"not a checkpoint")
    args = [a.format(corrupt=corrupt) for a in args]
    result = evaluate_cli([*args, f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lm1b.evaluate: ")
    assert re.search(message, last), last


def test_errors_name_what_is_wrong(tiny_run_dir, heldout_glob, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint is required"):
        read_config(composed([]))
    with pytest.raises(ConfigError, match="batch_size=0 is invalid"):
        read_config(composed(["checkpoint=x", "batch_size=0"]))
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate_checkpoint(read_config(composed([f"checkpoint={tmp_path / 'nope'}"])))
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        evaluate_checkpoint(read_config(composed([f"checkpoint={empty}"])))
    glob = read_config(composed([f"checkpoint={tiny_run_dir}", "data.test_files=nope/*"]))
    with pytest.raises(FileNotFoundError, match=r"no files match data\.test_files='nope/\*'"):
        evaluate_checkpoint(glob)
    # The default is the standard test shard under the checkpoint's data.root.
    standard = read_config(composed([f"checkpoint={tiny_run_dir}"]))
    with pytest.raises(FileNotFoundError, match=r"news\.en\.heldout-00000-of-00050"):
        evaluate_checkpoint(standard)


def test_overrides_reach_the_evaluation(tiny_run_dir, heldout_glob, synthetic_corpus, tmp_path):
    root = shutil.copytree(synthetic_corpus / HELDOUT, tmp_path / "corpus" / HELDOUT)
    overrides = [
        f"checkpoint={tiny_run_dir / 'checkpoints' / 'step-000000002.pt'}",
        f"data.root={root.parent}",
        f"data.test_files={heldout_glob}",
        "num_streams=3",
        "use_ema=false",
        "progress_bar=false",
    ]
    report = evaluate_checkpoint(read_config(composed(overrides)))
    assert report["step"] == 2 and report["weights"] == "raw" and report["num_streams"] == 3
    assert all(f.startswith(str(root)) for f in report["files"])


def test_a_subword_model_also_reports_perplexity_per_word(tiny_overrides, heldout_glob, tmp_path):
    overrides = ["data.tokenizer=sentencepiece", "data.spm_vocab_size=80"]
    run = train_tiny_run(tmp_path / "spm-run", [*tiny_overrides, *overrides])
    report = evaluate_checkpoint(
        read_config(composed([f"checkpoint={run}", f"data.test_files={heldout_glob}"]))
    )
    sentences, words, _ = independent_counts([Path(f) for f in report["files"]], set())
    assert (report["num_sentences"], report["num_words"]) == (sentences, words)
    assert report["num_tokens"] > report["num_words"]  # pieces, not words, are predicted
    assert report["perplexity"] == pytest.approx(math.exp(report["nll"] / report["num_tokens"]))
    per_word = math.exp(report["nll"] / report["num_words"])
    assert report["perplexity_per_word"] == pytest.approx(per_word)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_eval_without_ckpt_fails_in_one_line():
    # STAMP= skips the environment set-up prerequisite: only the target's own check runs.
    result = subprocess.run(
        ["make", "-s", "eval", "CKPT=", "STAMP="], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert (
        result.stderr.splitlines()[0] == "make eval: pass CKPT=<checkpoint file or run directory>"
    )
