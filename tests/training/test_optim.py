"""Which optimizer updates which parameters (the recipe, and Adam for small data)."""

from __future__ import annotations

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
