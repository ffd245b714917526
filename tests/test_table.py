"""`python -m lm1b.table`: two tiny variants trained for seconds on the synthetic corpus, each
evaluated, and the table, its JSON and its picture written; and the step-to-time mapping."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from lm1b.benchmark.runs import read_curve, run_variant
from lm1b.config.table import SharedTraining, TableConfig


@pytest.mark.slow
def test_two_tiny_variants_make_a_table_and_a_picture(tmp_path, synthetic_corpus):
    out = tmp_path / "table"
    overrides = f"['data.root={synthetic_corpus}','data.vocab_file={synthetic_corpus}/vocab.txt']"
    command = [
        sys.executable, "-m", "lm1b.table", "budget_seconds=1", "variants=[biglstm,glstm_k2]",
        "train.size=tiny", "train.data=synthetic", f"train.overrides={overrides}",
        "val_every=10", "log_every=5", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "table.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["biglstm", "glstm_k2"]
    for row in rows.values():
        assert math.isfinite(row["perplexity"]) and row["steps"] >= 1
        assert row["train_seconds"] >= 1 and row["words_per_sec"] > 0 and row["curve"]
        eval_json = json.loads((out / "runs" / row["name"] / "eval" / "eval.json").read_text())
        assert eval_json["perplexity"] == row["perplexity"]
        assert eval_json["files"][0].endswith("news.en.heldout-00000-of-00002")
    assert rows["glstm_k2"]["rnn_params"] < rows["biglstm"]["rnn_params"]
    markdown = (out / "table.md").read_text()
    assert "| model | perplexity | RNN parameters | words/sec | steps | best at step |" in markdown
    assert "| biglstm |" in markdown and "optim=adagrad" in markdown
    assert "Kneser-Ney" not in markdown  # its figure is for the sample only
    for row in rows.values():  # the best checkpoint was evaluated
        assert 1 <= row["best_step"] <= row["steps"]
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Run again in the same directory: an evaluated variant is read back, not retrained.
    shared = SharedTraining(
        size="tiny", data="synthetic", overrides=report["config"]["train"]["overrides"]
    )
    again = run_variant(TableConfig(train=shared), "biglstm", out / "runs")
    assert json.loads(json.dumps(again.to_json())) == report["variants"][0]


def test_validation_steps_are_placed_on_the_trainers_clock(tmp_path):
    records = [
        {"step": 10, "loss": 5.0, "words_per_sec": 100.0},  # 10 steps x 10 words / 100 = 1 s
        {"step": 20, "loss": 4.0, "words_per_sec": 50.0},  # 2 s more
        {"step": 20, "val_ppl": 80.0},
        {"step": 25, "val_ppl": 70.0},  # the final validation, between log lines
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = read_curve(tmp_path, tokens_per_step=10, final_step=25, train_seconds=4.0)
    assert curve == [(3.0, 80.0), (4.0, 70.0)]
