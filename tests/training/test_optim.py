"""Which optimizer updates which parameters (the recipe, and Adam for small data)."""

from __future__ import annotations

import copy

import pytest
import torch

from lm1b.config import compose_config
from lm1b.models.language_model import build_language_model
from lm1b.training.optim import Optimizers, lstm_parameters, table_parameters
from lm1b.training.sparse_adagrad import RowSparseAdagrad


def _optimizers(*overrides: str) -> tuple[torch.nn.Module, Optimizers]:
    cfg = compose_config(["experiment=tiny", "model.vocab_size=50", *overrides])
    model = build_language_model(cfg.model)
    return model, Optimizers(model, cfg.optim)


@pytest.mark.parametrize(
    ("optim", "dense_type", "table_type"),
    [
        ("adagrad", torch.optim.Adagrad, RowSparseAdagrad),
        # Adam for the LSTM, the recipe's row-sparse Adagrad for the tables (see optim.tables).
        ("adam", torch.optim.Adam, RowSparseAdagrad),
    ],
)
def test_dense_weights_and_tables_get_their_own_optimizer(optim, dense_type, table_type):
    model, optimizers = _optimizers(f"optim={optim}")
    dense, tables = optimizers.optimizers
    assert type(dense) is dense_type and type(tables) is table_type
    assert [p for g in dense.param_groups for p in g["params"]] == lstm_parameters(model)
    assert [p for g in tables.param_groups for p in g["params"]] == table_parameters(model)
    assert tables.defaults["lr"] == 0.2 and tables.defaults["initial_accumulator_value"] == 1.0


def test_dense_tables_get_torchs_adagrad():
    """Without row-sparse gradients (model.sparse_embedding=false) the tables' Adagrad is
    torch's dense one: RowSparseAdagrad refuses dense gradients."""
    model, optimizers = _optimizers("model.sparse_embedding=false")
    dense, tables = optimizers.optimizers
    assert type(tables) is torch.optim.Adagrad
    assert [p for g in tables.param_groups for p in g["params"]] == table_parameters(model)


def test_sparse_adam_for_the_tables_is_available_on_request():
    _, optimizers = _optimizers("optim=adam", "optim.tables=adam", "optim.table_lr=0.01")
    assert type(optimizers.optimizers[1]) is torch.optim.SparseAdam


def _one_step(model: torch.nn.Module, optimizers: Optimizers) -> None:
    """One optimizer step on a small loss touching every table row of a short batch."""
    ids = torch.randint(0, 50, (2, 4))
    model(ids, ids).loss.backward()
    optimizers.step_device_flagged(torch.tensor(True))
    optimizers.step_host_checked()
    optimizers.zero_grad()


@pytest.mark.parametrize("tables", ["adagrad", "adam"])
def test_a_resume_keeps_this_runs_implementation_and_loads_every_optimizer(tables):
    """A checkpoint's optimizer groups carry the implementation they were saved with (here:
    foreach, as one written before the fused optimizers, or on another device); the resumed
    run keeps its own, and the groups without implementation flags (SparseAdam) load too."""
    torch.manual_seed(0)
    model, saved = _optimizers("optim=adam", f"optim.tables={tables}")
    _one_step(model, saved)
    state = saved.state_dict()
    for group in state[0]["param_groups"]:
        group["fused"], group["foreach"] = None, True
    _, resumed = _optimizers("optim=adam", f"optim.tables={tables}")
    expected = [[dict(g) for g in o.param_groups] for o in resumed.optimizers]
    resumed.load_state_dict(state)
    dense = resumed.optimizers[0]
    assert [(g["fused"], g["foreach"]) for g in dense.param_groups] == [(True, None)]
    for optimizer, groups in zip(resumed.optimizers, expected, strict=True):
        for group, before in zip(optimizer.param_groups, groups, strict=True):
            flags = [k for k in ("fused", "foreach", "capturable") if k in before]
            assert {k: group[k] for k in flags} == {k: before[k] for k in flags}
    # Torch placed the step counts as for a fused group: float32 next to the parameter.
    for param, param_state in dense.state.items():
        assert param_state["step"].dtype == torch.float32
        assert param_state["step"].device == param.device


def test_an_optimizer_resumed_with_another_implementation_steps_as_the_saved_one_would():
    """foreach Adam saved, fused Adam resumed: the next step equals the saved optimizer's own
    next step (float rounding apart)."""
    torch.manual_seed(0)
    model, optimizers = _optimizers("optim=adam")
    dense = optimizers.optimizers[0]
    for group in dense.param_groups:
        group["fused"], group["foreach"] = None, True  # as a checkpoint of the old code
    _one_step(model, optimizers)
    state = copy.deepcopy(optimizers.state_dict())  # the live state moves on with the next step
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    _one_step(model, optimizers)
    reference = lstm_parameters(model)

    resumed_model, resumed = _optimizers("optim=adam")
    resumed_model.load_state_dict(model_state)
    resumed.load_state_dict(state)
    assert resumed.optimizers[0].param_groups[0]["fused"] is True
    torch.manual_seed(1)
    _one_step(resumed_model, resumed)
    for mine, theirs in zip(lstm_parameters(resumed_model), reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
