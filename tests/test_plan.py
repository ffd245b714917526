"""The plan: meta-device parameter counts (docs/models.md's), analytic FLOPs (docs/performance.md's),
measured or predicted speeds and the budget filters."""

from __future__ import annotations

import json

import pytest

from lm1b.commands.plan import PlanConfig, default_ranks, main, make_plan
from lm1b.config import ConfigError
from lm1b.config.compose import compose_schema

PAPER = {  # name -> (RNN params, GFLOP/token forward + backward rounded as in docs/performance.md)
    "biglstm": (151_060_480, 0.96),
    "flstm_r512": (52_494_336, 0.36),  # docs/performance.md rounds 0.365 to 0.37
    "glstm_k2": (83_951_616, 0.55),  # docs/performance.md rounds 0.554 to 0.56
    "glstm_k4": (50_397_184, 0.35),
    "glstm_k8": (33_619_968, 0.25),
    "glstm_k16": (25_231_360, 0.20),
}


def plan(*overrides: str):
    return make_plan(compose_schema("plan", PlanConfig, list(overrides)))


def test_paper_size_counts_and_flops():
    found = {c.name: c for c in plan("size=paper")}
    for name, (params, gflops) in PAPER.items():
        assert found[name].rnn_params == params
        assert round(found[name].train_flops_per_word / 1e9, 2) == gflops
    assert found["hglstm_k2_k4"].rnn_params == (83_951_616 + 50_397_184) // 2
    assert found["biglstm"].total_params == 151_060_480 + 2 * 793_471 * 1024 + 793_471
    assert "flstm_r2048" not in found  # more parameters than the dense map: never proposed


def test_parameter_budget_keeps_what_fits_largest_first():
    chosen = plan("size=paper", "max_rnn_params=52494336", "per_layer_groups=false")
    assert [c.name for c in chosen[:2]] == ["flstm_r512", "glstm_k4"]
    assert all(c.rnn_params <= 52_494_336 for c in chosen)
    assert default_ranks(chosen[0].model) == [8, 16, 32, 64, 128, 256, 512, 1024]


def test_speeds_measured_where_benchmarked_else_predicted(tmp_path):
    bench = tmp_path / "bench.json"
    variants = [
        {"name": "biglstm", "words_per_sec": 1000.0},
        {"name": "glstm_k2", "words_per_sec": 1200.0},
    ]
    bench.write_text(json.dumps({"variants": variants}))
    chosen = plan("size=tiny", "model.vocab_size=100", f"bench={bench}", "min_words_per_sec=1100")
    by_name = {c.name: c for c in chosen}
    assert "biglstm" not in by_name
    assert (by_name["glstm_k2"].words_per_sec, by_name["glstm_k2"].speed_source) == (
        1200.0,
        "measured",
    )
    k4 = by_name["glstm_k4"]
    ratio = plan("size=tiny", "model.vocab_size=100")
    flops = {c.name: c.train_flops_per_word for c in ratio}
    assert k4.speed_source == "predicted"
    assert k4.words_per_sec == pytest.approx(1000.0 * flops["biglstm"] / flops["glstm_k4"])


def test_speed_budget_needs_a_benchmark_and_command_prints_a_table(capsys, tmp_path):
    with pytest.raises(ConfigError, match="needs bench="):
        plan("size=tiny", "model.vocab_size=100", "min_words_per_sec=5")
    out = tmp_path / "plan.json"
    main(["size=cpu", "model.vocab_size=32768", "max_rnn_params=3300000", f"output={out}"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["variant", "RNN"] and table[1].startswith("flstm_r128")
    assert json.loads(out.read_text())[0]["name"] == "flstm_r128"


def test_memory_columns_at_paper_size():
    """The fixed part from the counts by hand: fp32 weights, the LSTM gradient and DDP's
    bucket copy, Adagrad's accumulator for every weight, the EMA and the bf16 copy of the LSTM
    weights, plus the tables' row-sparse gradients (2,560 embedding rows, 2,560 + 8,192
    softmax rows, each with its int64 id)."""
    found = {c.name: c for c in plan("size=paper", "per_layer_groups=false", "ranks=[512]")}
    big = found["biglstm"]
    rnn, total = big.rnn_params, big.total_params
    tokens, sampled = 128 * 20, 8192
    sparse = tokens * (1024 * 4 + 8) + (tokens + sampled) * (1025 * 4 + 16)
    assert big.memory.fixed == 4 * total + 2 * 4 * rnn + sparse + 4 * total + 4 * rnn + 2 * rnn
    assert 16e9 < big.memory.fixed < 17e9  # what a GPU holds before any activation
    per_row = big.memory.activations_per_row
    assert big.memory.largest_batch(80e9) == int((80e9 - 2 * 2**30 - big.memory.fixed) // per_row)
    assert found["glstm_k8"].memory.fixed < big.memory.fixed
