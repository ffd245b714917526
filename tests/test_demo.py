"""`make demo` end to end on the synthetic corpus (what a fresh clone without data gets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_trains_evaluates_and_reports_from_eval_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LM1B_SAMPLE_DIR"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm1b.demo",
            "--out",
            "run",
            "trainer.max_time=4",
            "logger.progress_bar=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data" / "synthetic" / "source.json").is_file()
    evaluation = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())
    assert f"test perplexity {evaluation['perplexity']:.2f}" in result.stdout
    assert "true perplexity" in result.stdout
    assert list((tmp_path / "run" / "train" / "checkpoints").glob("step-*.pt"))
    assert (tmp_path / "run" / "train" / "tensorboard").is_dir()


def test_on_the_sample_the_demo_reports_kneser_ney_beside_its_own_perplexity(tmp_path, capsys):
    from lm1b.commands.demo import Corpus, DemoData, _report

    sample = DemoData(Corpus.SAMPLE, tmp_path / "X")
    for perplexity, verdict in ((160.0, "is better than"), (190.0, "is NOT better than")):
        _report(tmp_path, sample, {"perplexity": perplexity, "num_tokens": 9})
        out = capsys.readouterr().out
        assert f"test perplexity {perplexity:.2f}" in out
        assert "Kneser-Ney model scores 175.8" in out and verdict in out
    _report(
        tmp_path, DemoData(Corpus.SYNTHETIC, tmp_path / "Y"), {"perplexity": 50.0, "num_tokens": 9}
    )
    assert "Kneser-Ney" not in capsys.readouterr().out


def _write_source(root: Path, perplexity: float) -> None:
    """A synthetic corpus's source.json, the true perplexity the demo compares with."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "source.json").write_text(json.dumps({"perplexity": perplexity}))


def test_the_sample_is_recognised_by_its_data_config_not_by_its_path(tmp_path, monkeypatch, capsys):
    """A sample directory whose path says "synthetic", beside a synthetic corpus in
    data/synthetic: once the word in the description decided, and both comparisons printed."""
    from lm1b.commands.demo import Corpus, _report, choose_data

    monkeypatch.chdir(tmp_path)
    _write_source(tmp_path / "data" / "synthetic", 12.0)
    sample = tmp_path / "synthetic-runs" / "lm1b-sample"
    (sample / "heldout-monolingual.tokenized.shuffled").mkdir(parents=True)
    monkeypatch.setenv("LM1B_SAMPLE_DIR", str(sample))
    data = choose_data()
    assert data.corpus is Corpus.SAMPLE and data.overrides == ["data=sample"]
    _report(tmp_path, data, {"perplexity": 160.0, "num_tokens": 9})
    out = capsys.readouterr().out
    assert "Kneser-Ney model scores 175.8" in out and "true perplexity" not in out


def test_a_synthetic_corpus_is_recognised_by_its_data_config_not_by_its_path(tmp_path, capsys):
    """The synthetic corpus in a directory whose path says "sample": its true perplexity,
    and no Kneser-Ney comparison (which holds for the sample's text only)."""
    from lm1b.commands.demo import Corpus, DemoData, _report

    root = tmp_path / "sample-runs" / "synthetic"
    _write_source(root, 12.0)
    data = DemoData(Corpus.SYNTHETIC, root)
    assert "sample" in data.description and data.overrides == ["data=synthetic"]
    _report(tmp_path, data, {"perplexity": 50.0, "num_tokens": 9})
    out = capsys.readouterr().out
    assert "true perplexity is 12.00" in out and "Kneser-Ney" not in out
