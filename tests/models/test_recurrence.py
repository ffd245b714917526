"""The fused recurrence's hand-written backward against numerical and plain-autograd gradients."""

from __future__ import annotations

import pytest
import torch

from lm1b.models.cell import EAGER
from lm1b.models.gates import FactorizedGates, GroupedGates
from lm1b.models.recurrence import LSTMPRecurrence, run_plain

P, N, STEPS, BATCH = 4, 8, 3, 2


def gate_maps():
    return {
        "dense": GroupedGates(P, N, num_groups=1, forget_bias=1.0),
        "grouped": GroupedGates(P, N, num_groups=2, forget_bias=1.0),
        "factorized": FactorizedGates(P, N, rank=3, forget_bias=1.0),
    }


def recurrence_inputs(gate_map):
    """(pre, h0, c0, proj, *recurrent weights) in float64, all requiring grad."""
    gate_map.double()
    x = torch.randn(STEPS, BATCH, P, dtype=torch.float64)
    pre = gate_map.input_side(x).detach()
    h0 = torch.randn(BATCH, P, dtype=torch.float64)
    c0 = torch.randn(BATCH, N, dtype=torch.float64)
    proj = torch.randn(N, P, dtype=torch.float64) / N**0.5
    weights = [w.detach() for w in gate_map.recurrent_weights()]
    return [t.clone().requires_grad_() for t in (pre, h0, c0, proj, *weights)]


@pytest.mark.parametrize("name", ["dense", "grouped", "factorized"])
def test_gradcheck_fused_recurrence(name):
    gate_map = gate_maps()[name]
    inputs = recurrence_inputs(gate_map)
    assert torch.autograd.gradcheck(
        lambda *args: LSTMPRecurrence.apply(gate_map, EAGER, *args), inputs, eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("name", ["dense", "grouped", "factorized"])
def test_fused_layer_matches_plain_autograd(name):
    """Whole layer (hoisted input side + fused recurrence) vs the per-step loop, same weights."""
    gate_map = gate_maps()[name].double()
    x = torch.randn(STEPS, BATCH, P, dtype=torch.float64, requires_grad=True)
    h0, proj = torch.randn(BATCH, P, dtype=torch.float64), torch.randn(N, P, dtype=torch.float64)
    c0 = torch.randn(BATCH, N, dtype=torch.float64)
    params = [x, *gate_map.parameters()]
    results = []
    for fused in (True, False):
        if fused:
            pre = gate_map.input_side(x)
            weights = gate_map.recurrent_weights()
            out, h, c = LSTMPRecurrence.apply(gate_map, EAGER, pre, h0, c0, proj, *weights)
        else:
            out, h, c = run_plain(gate_map, proj, x, h0, c0)
        loss = out.tanh().sum() + (h * h).sum() + c.sin().sum()
        results.append([out, h, c, *torch.autograd.grad(loss, params)])
    for fused, plain in zip(*results, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
