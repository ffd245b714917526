"""Building the stacks: paper-size parameter counts on the meta device, initialisation,
dropout placement, the state convention, and the nn.LSTM baseline's documented differences."""

from __future__ import annotations

import math

import pytest
import torch

from lm1b.config import compose_config
from lm1b.config.model import ModelConfig
from lm1b.models.lstm_stack import build_lstm_stack

# docs/models.md, "Parameter counts at paper size".
PAPER_RNN_PARAMS = {
    "biglstm": 151_060_480,
    "flstm_r512": 52_494_336,
    "glstm_k2": 83_951_616,
    "glstm_k4": 50_397_184,
    "glstm_k8": 33_619_968,
}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(overrides: list[str]):
    cfg = compose_config(overrides).model
    with torch.device("meta"):
        stack = build_lstm_stack(cfg)
    assert all(p.is_meta for p in stack.parameters())
    return cfg, stack


@pytest.mark.parametrize(("experiment", "expected"), PAPER_RNN_PARAMS.items())
def test_paper_size_rnn_parameter_counts(experiment, expected):
    cfg, stack = build_on_meta([f"experiment={experiment}", "size=paper"])
    assert cfg.state_size == 8192 and cfg.projection_size == 1024
    assert count(stack) == expected


def test_glstm_k16_and_hierarchical_counts():
    _, k16 = build_on_meta(["experiment=glstm_k8", "model.num_groups=16"])
    assert count(k16) == 25_231_360
    # Hierarchical [2, 4]: one layer of G2 plus one of G4.
    _, hier = build_on_meta(["experiment=hglstm_k2_k4"])
    assert count(hier) == (83_951_616 + 50_397_184) // 2


def test_cudnn_baseline_has_one_extra_bias_per_layer():
    cfg, stack = build_on_meta(["experiment=biglstm", "model=biglstm_cudnn"])
    assert count(stack) == PAPER_RNN_PARAMS["biglstm"] + cfg.num_layers * 4 * cfg.state_size


def tiny_cfg(model_type="biglstm", **fields) -> ModelConfig:
    return ModelConfig(type=model_type, state_size=32, projection_size=16, **fields)


@pytest.mark.parametrize(
    ("model_type", "fields"),
    [
        ("biglstm", {}),
        ("glstm", {"num_groups": [2, 4]}),
        ("flstm", {"factor_rank": 8}),
        ("biglstm_cudnn", {}),
    ],
)
def test_state_convention_and_dropout_after_last_layer(model_type, fields):
    stack = build_lstm_stack(tiny_cfg(model_type, dropout=0.5, **fields))
    x = torch.randn(6, 5, 16)
    stack.eval()
    out, (h, c) = stack(x)
    assert out.shape == (6, 5, 16) and h.shape == (2, 5, 16) and c.shape == (2, 5, 32)
    torch.testing.assert_close(h[-1], out[-1])  # eval: no dropout, h of the last layer
    zero_state = (torch.zeros(2, 5, 16), torch.zeros(2, 5, 32))
    torch.testing.assert_close(stack(x, zero_state)[0], out)
    stack.train()
    train_out, _ = stack(x)
    assert 0.3 < (train_out == 0).float().mean() < 0.7  # dropout acts on the stack's output


def test_initialisation_glorot_and_forget_bias():
    cfg = tiny_cfg("glstm", num_groups=2, forget_bias=1.0)
    layer = build_lstm_stack(cfg).layers[0]
    k, p_g, w = layer.gates.weight_ih.shape
    bound = math.sqrt(6.0 / (2 * p_g + w))  # each group's [x, h] -> 4n/k matrix
    assert layer.gates.weight_ih.abs().max() <= bound
    assert layer.gates.weight_ih.abs().max() > 0.9 * bound
    assert torch.all(layer.gates.bias == 0)
    assert layer.proj.abs().max() <= math.sqrt(6.0 / (32 + 16))
    # With zero input, state and weights, c_1 = sigmoid(0 + 1) * 0 + sigmoid(0) * tanh(0) = 0 and
    # the forget gate's +1 shows in how c decays: c_1 = sigmoid(1) * c_0.
    with torch.no_grad():
        for param in (layer.gates.weight_ih, layer.gates.weight_hh):
            param.zero_()
    c0 = torch.ones(3, 32)
    _, _, c1 = layer(torch.zeros(1, 3, 16), torch.zeros(3, 16), c0)
    torch.testing.assert_close(c1, torch.sigmoid(torch.tensor(1.0)) * c0)


def test_cudnn_baseline_initialisation():
    stack = build_lstm_stack(tiny_cfg("biglstm_cudnn", forget_bias=1.0))
    lstm = stack.lstm
    for layer in range(2):
        bias_ih = getattr(lstm, f"bias_ih_l{layer}").view(4, 32)
        assert torch.all(bias_ih[1] == 1.0) and torch.all(bias_ih[[0, 2, 3]] == 0)
        assert torch.all(getattr(lstm, f"bias_hh_l{layer}") == 0)
        assert getattr(lstm, f"weight_ih_l{layer}").abs().max() <= math.sqrt(6.0 / (32 + 128))
