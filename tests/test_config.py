"""Every experiment composes; typos, wrong types and broken cross-field rules fail with the field
named (RELIABILITY.md #21)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, HydraException

from lm1b.config import CONFIG_DIR, ConfigError, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
PAPER = ["biglstm", "flstm_r512", "glstm_k2", "glstm_k4", "glstm_k8", "hglstm_k2_k4"]


def test_all_experiments_are_present():
    assert set(PAPER + ["tiny"]) <= set(EXPERIMENTS)


@pytest.mark.parametrize("size", ["paper", "cpu", "tiny"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_at_every_size(experiment, size):
    cfg = compose_config([f"experiment={experiment}", f"size={size}"])
    assert cfg.name == experiment
    expected_width = {"paper": 1024, "cpu": 256, "tiny": 16}[size]
    assert cfg.model.projection_size == expected_width


def test_paper_experiments_define_their_variant():
    variants = {name: compose_config([f"experiment={name}"]).model for name in PAPER}
    assert variants["biglstm"].type == "biglstm"
    assert (variants["flstm_r512"].type, variants["flstm_r512"].factor_rank) == ("flstm", 512)
    assert variants["glstm_k2"].groups_per_layer() == [2, 2]
    assert variants["glstm_k8"].groups_per_layer() == [8, 8]
    assert variants["hglstm_k2_k4"].groups_per_layer() == [2, 4]
    assert all(m.vocab_size == 793471 and m.state_size == 8192 for m in variants.values())


def test_cpu_size_keeps_the_rank_ratio_of_f512():
    model = compose_config(["experiment=flstm_r512", "size=cpu"]).model
    assert model.factor_rank * 2 == model.projection_size


def test_unknown_experiment_lists_the_available_ones():
    with pytest.raises(HydraException, match="Available options"):
        compose_config(["experiment=nope"])


def test_typo_in_a_field_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.lrr'"):
        compose_config(["model.lrr=1"])


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="model.state_size"):
        compose_config(["model.state_size=big"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["experiment=glstm_k4", "model.num_groups=3", "model.state_size=8"], "model.num_groups"),
        (["experiment=glstm_k4", "model.num_groups=[2]"], "model.num_groups"),
        (["experiment=flstm_r512", "model.factor_rank=4096"], "model.factor_rank"),
        (["experiment=flstm_r512", "model.factor_rank=0"], "model.factor_rank"),
        (["model.num_sampled=793471"], "model.num_sampled"),
        (["model.type=gru"], "model.type"),
        (["model.dropout=1.0"], "model.dropout"),
        (["optim.lr=0"], "optim.lr"),
        (["optim.lr=-0.1"], "optim.lr"),
        (["optim.name=sgd"], "optim.name"),
        (["optim.tables=sgd"], "optim.tables"),
        (["optim.table_lr=0"], "optim.table_lr"),
        (["data.train_files=null"], "data.train_files"),
        (["data.train_files=[]"], "data.train_files"),
        (["data.tokenizer=bpe"], "data.tokenizer"),
        (["trainer.keep_last=1"], "trainer.keep_last"),
        (["trainer.max_steps=null", "trainer.max_time=null"], "trainer.max_steps"),
        (["trainer.precision=fp8"], "trainer.precision"),
    ],
)
def test_broken_rules_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        compose_config(overrides)


def test_group_error_names_the_allowed_values():
    with pytest.raises(ConfigError, match=r"allowed: \[1, 2, 4, 8\]"):
        compose_config(["experiment=glstm_k4", "model.num_groups=3", "model.state_size=8"])


def test_batch_must_divide_over_ranks():
    compose_config(["data.batch_size=1024"], world_size=8)
    with pytest.raises(ConfigError, match=r"data\.batch_size=1024 .* ranks \(3\)"):
        compose_config(["data.batch_size=1024"], world_size=3)
