"""Parameter counts at paper size equal docs/models.md's table exactly, counted on the meta device."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lm1b.commands.summary import summarize
from lm1b.config import compose_config

# docs/models.md, "Parameter counts at paper size": gate weights + gate biases + projections.
RNN_PARAMETERS = {
    "biglstm": 151_060_480,
    "flstm_r512": 52_494_336,
    "glstm_k2": 83_951_616,
    "glstm_k4": 50_397_184,
    "glstm_k8": 33_619_968,
}
EMBEDDING = 793_471 * 1024
SOFTMAX = 793_471 * 1024 + 793_471


@pytest.mark.parametrize(("experiment", "rnn"), sorted(RNN_PARAMETERS.items()))
def test_paper_size_counts_match_the_reference(experiment, rnn):
    counts = summarize(compose_config([f"experiment={experiment}"]))["parameters"]
    assert counts == {
        "rnn": rnn,
        "embedding": EMBEDDING,
        "softmax": SOFTMAX,
        "total": rnn + EMBEDDING + SOFTMAX,
    }


def test_sixteen_groups_and_the_hierarchical_variant():
    k16 = summarize(compose_config(["experiment=glstm_k8", "model.num_groups=16"]))
    assert k16["parameters"]["rnn"] == 25_231_360  # docs/models.md's G-LSTM k=16
    # One layer of G2 plus one of G4: the mean of the two uniform models.
    hierarchical = summarize(compose_config(["experiment=hglstm_k2_k4"]))
    assert hierarchical["model"]["num_groups"] == [2, 4]
    assert hierarchical["parameters"]["rnn"] == (83_951_616 + 50_397_184) // 2


def test_the_cudnn_baseline_has_one_extra_bias_per_gate_and_layer():
    cudnn = summarize(compose_config(["experiment=biglstm", "model.type=biglstm_cudnn"]))
    assert cudnn["parameters"]["rnn"] == 151_060_480 + 2 * 4 * 8192  # nn.LSTM's b_hh


def test_the_command_prints_json_for_an_experiment():
    result = subprocess.run(
        [sys.executable, "-m", "lm1b.summary", "experiment=glstm_k4"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert report["experiment"] == "glstm_k4"
    assert report["parameters"]["rnn"] == 50_397_184


def test_a_bad_override_is_one_line_on_stderr():
    result = subprocess.run(
        [sys.executable, "-m", "lm1b.summary", "experiment=glstm_k4", "model.num_groups=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.num_groups=3 is invalid" in lines[0]
