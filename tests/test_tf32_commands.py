"""`tf32` of evaluate, score and generate: parsed, applied to the model's device through
`set_tf32`, and recorded (eval.json; score's totals). TF32 exists on CUDA only: on a CPU
`set_tf32` changes nothing and the record is null; a stand-in for it checks what a GPU run
would record."""

from __future__ import annotations

import pytest
import torch

import lm1b.commands.evaluate as evaluate_command
import lm1b.commands.generate as generate_command
import lm1b.commands.score as score_command
from lm1b.config.compose import compose_schema
from test_evaluation_passes import evaluate_command_report

CPU = torch.device("cpu")


@pytest.fixture
def tf32_calls(monkeypatch) -> list[tuple[torch.device, bool]]:
    """Every command's set_tf32 replaced by one that records its arguments and answers as a
    GPU would: the setting asked for is the one in force."""
    calls = []

    def set_tf32_as_on_a_gpu(device: torch.device, enabled: bool) -> bool:
        calls.append((device, enabled))
        return enabled

    for command in (evaluate_command, score_command, generate_command):
        monkeypatch.setattr(command, "set_tf32", set_tf32_as_on_a_gpu)
    return calls


def test_evaluate_records_null_tf32_and_the_device_on_a_cpu(tiny_run_dir, synthetic_corpus):
    for overrides in ((), ("tf32=false",)):
        report = evaluate_command_report(tiny_run_dir, *overrides)
        assert report["tf32"] is None and report["device"] == "cpu"


def test_evaluate_sets_and_records_tf32_on_the_models_device(
    tiny_run_dir, synthetic_corpus, tf32_calls
):
    assert evaluate_command_report(tiny_run_dir)["tf32"] is True  # the default
    assert evaluate_command_report(tiny_run_dir, "tf32=false")["tf32"] is False
    assert tf32_calls == [(CPU, True), (CPU, False)]


def test_score_sets_tf32_and_reports_it_with_the_device(tiny_run_dir, tmp_path, tf32_calls):
    text = tmp_path / "text.txt"
    text.write_text("w1 w2\nw3\n")
    for tf32 in (True, False):
        cfg = compose_schema(
            "score",
            score_command.ScoreConfig,
            [f"checkpoint={tiny_run_dir}", f"input={text}", f"output={tmp_path / 'out'}"]
            + ([] if tf32 else ["tf32=false"]),
        )
        totals = score_command.run(cfg)
        assert totals["tf32"] is tf32 and totals["device"] == "cpu"
    assert tf32_calls == [(CPU, True), (CPU, False)]


def test_score_reports_null_tf32_on_a_cpu(tiny_run_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("w1 w2\n")
    cfg = score_command.ScoreConfig(
        checkpoint=str(tiny_run_dir), input=str(text), output=str(tmp_path / "out")
    )
    assert score_command.run(cfg)["tf32"] is None


def test_generate_sets_tf32_on_the_models_device(tiny_run_dir, tf32_calls, capsys):
    args = [f"checkpoint={tiny_run_dir}", "num_samples=1", "max_tokens=3", "device=cpu"]
    generate_command.main(args)
    generate_command.main([*args, "tf32=false"])
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert tf32_calls == [(CPU, True), (CPU, False)]
