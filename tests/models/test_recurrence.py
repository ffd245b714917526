"""The layer Function's hand-written backward against numerical and plain-autograd gradients."""

from __future__ import annotations

import pytest
import torch

from lm1b.models.cell import EAGER
from lm1b.models.gates import FactorizedGates, GroupedGates
from lm1b.models.recurrence import LSTMPLayerFunction, run_plain

P, N, STEPS, BATCH = 4, 8, 3, 2


def gate_maps():
    return {
        "dense": GroupedGates(P, N, num_groups=1, forget_bias=1.0),
        "grouped": GroupedGates(P, N, num_groups=2, forget_bias=1.0),
        "factorized": FactorizedGates(P, N, rank=3, forget_bias=1.0),
    }


def layer_inputs(gate_map):
    """(x, h0, c0, proj, *forward weights) in float64, all requiring grad."""
    gate_map.double()
    x = torch.randn(STEPS, BATCH, P, dtype=torch.float64)
    h0 = torch.randn(BATCH, P, dtype=torch.float64)
    c0 = torch.randn(BATCH, N, dtype=torch.float64)
    proj = torch.randn(N, P, dtype=torch.float64) / N**0.5
    weights = [w.detach() for w in gate_map.forward_weights()]
    return [t.clone().requires_grad_() for t in (x, h0, c0, proj, *weights)]


@pytest.mark.parametrize("name", ["dense", "grouped", "factorized"])
def test_gradcheck_layer_function(name):
    gate_map = gate_maps()[name]
    inputs = layer_inputs(gate_map)
    assert torch.autograd.gradcheck(
        lambda *args: LSTMPLayerFunction.apply(gate_map, EAGER, *args),
        inputs,
        eps=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ["dense", "grouped", "factorized"])
def test_fused_layer_matches_plain_autograd(name):
    """The layer Function (hoisted input side + time loop) vs the per-step loop, same weights."""
    gate_map = gate_maps()[name].double()
    x = torch.randn(STEPS, BATCH, P, dtype=torch.float64, requires_grad=True)
    h0, proj = torch.randn(BATCH, P, dtype=torch.float64), torch.randn(N, P, dtype=torch.float64)
    c0 = torch.randn(BATCH, N, dtype=torch.float64)
    params = [x, *gate_map.parameters()]
    results = []
    for fused in (True, False):
        if fused:
            weights = gate_map.forward_weights()
            out, h, c = LSTMPLayerFunction.apply(gate_map, EAGER, x, h0, c0, proj, *weights)
        else:
            out, h, c = run_plain(gate_map, proj, x, h0, c0)
        loss = out.tanh().sum() + (h * h).sum() + c.sin().sum()
        results.append([out, h, c, *torch.autograd.grad(loss, params)])
    for fused, plain in zip(*results, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
