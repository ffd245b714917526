"""`make demo` end to end on the synthetic corpus (what a fresh clone without data gets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    from lm1b.commands.demo import _report

    for perplexity, verdict in ((160.0, "is better than"), (190.0, "is NOT better than")):
        _report(tmp_path, "the real LM1B sample in X", {"perplexity": perplexity, "num_tokens": 9})
        out = capsys.readouterr().out
        assert f"test perplexity {perplexity:.2f}" in out
        assert "Kneser-Ney model scores 175.8" in out and verdict in out
    _report(tmp_path, "the synthetic corpus in Y", {"perplexity": 50.0, "num_tokens": 9})
    assert "Kneser-Ney" not in capsys.readouterr().out
