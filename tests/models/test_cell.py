"""The cell's pointwise step (eager and torch.compile-fused) against autograd of the textbook
formulas, and the fused cell's fall-back to eager."""

from __future__ import annotations

import logging

import pytest
import torch
from torch._dynamo.utils import counters

from lm1b.models import cell as cell_module
from lm1b.models.cell import CellMath, cell_backward, cell_forward
from lm1b.models.gates import GroupedGates
from lm1b.models.lstm_stack import LSTMPLayer

G, B, W = 2, 3, 5


def textbook(gates: torch.Tensor, c_prev: torch.Tensor):
    i, j, f, o = gates.unbind(2)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(j)
    return c, torch.sigmoid(o) * torch.tanh(c)


def random_step(dtype=torch.float64):
    gates = torch.randn(G, B, 4, W, dtype=dtype) * 2
    return gates, torch.randn(G, B, W, dtype=dtype), torch.randn(G, B, W, dtype=dtype)


def run_forward(forward, gates, c_prev):
    """(act, c, tanh_c, m) of a cell forward, m written into a strided slot as the recurrence
    gives it: group g of the natural (B, G*W) layout."""
    natural = torch.zeros(B, G * W, dtype=gates.dtype)
    slot = natural.view(B, G, W).transpose(0, 1)
    return (*forward(gates, c_prev, slot), slot)


def test_forward_and_backward_match_autograd_of_the_formulas():
    gates, c_prev, d_c_next = random_step()
    d_m = torch.randn(G, B, W, dtype=torch.float64)
    act, c, tanh_c, m = run_forward(cell_forward, gates, c_prev)
    gates_ref, c_prev_ref = gates.clone().requires_grad_(), c_prev.clone().requires_grad_()
    c_ref, m_ref = textbook(gates_ref, c_prev_ref)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m, m_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tanh_c, torch.tanh(c_ref), rtol=1e-12, atol=1e-12)
    # d_c_next stands for dL/dc_t arriving from the later steps.
    (c_ref * d_c_next + m_ref * d_m).sum().backward()
    d_gates = torch.empty_like(gates)
    d_c_prev = cell_backward(d_m, d_c_next, act, tanh_c, c_prev, d_gates)
    torch.testing.assert_close(d_gates, gates_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_c_prev, c_prev_ref.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("matmul_dtype", [torch.float32, torch.bfloat16])
def test_the_eager_forward_is_the_fusable_one(matmul_dtype):
    """The eager path (ATen with out=, no sigmoid of j) computes what the fusable expression
    computes, m included, up to the last bit of a vectorised against a scalar exp; under bf16
    the math in fp32, m rounded to bf16."""
    gates, c_prev, _ = random_step(torch.float32)
    gates = gates.to(matmul_dtype)
    eager = run_forward(cell_module._forward_eager, gates, c_prev)
    fusable = run_forward(cell_module._forward_fusable, gates, c_prev)
    for got, want in zip(eager, fusable, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert eager[0].dtype == torch.float32 and eager[3].dtype == matmul_dtype


@pytest.mark.slow
def test_compiled_cell_matches_eager():
    """torch.compile (inductor's CPU back-end here; Triton on a GPU) fuses the same math."""
    fused = CellMath(fuse_forward=True, fuse_backward=True)
    gates, c_prev, d_c = random_step(torch.float32)
    d_m = torch.randn(G, B, W)
    eager_fwd = run_forward(cell_forward, gates, c_prev)
    fused_fwd = run_forward(fused.forward, gates, c_prev)
    for got, want in zip(fused_fwd, eager_fwd, strict=True):
        torch.testing.assert_close(got, want)
    act, _, tanh_c, _ = eager_fwd
    # The gate gradients are written into a strided slot, as the recurrence's window buffer.
    fused_slots, eager_slots = torch.zeros(2, G, 3, B, 4, W), torch.zeros(2, G, 3, B, 4, W)
    fused_d_c = fused.backward(d_m, d_c, act, tanh_c, c_prev, fused_slots[0, :, 1])
    eager_d_c = cell_backward(d_m, d_c, act, tanh_c, c_prev, eager_slots[0, :, 1])
    torch.testing.assert_close(fused_d_c, eager_d_c)
    torch.testing.assert_close(fused_slots, eager_slots)
    assert eager_slots[0, :, 1].abs().sum() > 0 and eager_slots[0, :, 0].abs().sum() == 0
    assert fused.fused  # it compiled, no fall-back


@pytest.mark.slow
def test_a_fused_layer_compiles_once_per_shape_and_dtype():
    """Carried state, fp32 then bf16, each backward run under autocast as CUDA-graph capture
    runs it: one forward and one backward version per dtype, so Dynamo's recompile limit (8,
    which ends a fullgraph compile and sent the cell back to eager) stays far away."""
    layer = LSTMPLayer(GroupedGates(8, 16, num_groups=1, forget_bias=1.0), 16, 8)
    layer.cell = CellMath(fuse_forward=True, fuse_backward=True)
    before = counters["stats"]["unique_graphs"]
    for precision in ("fp32", "bf16"):
        h, c = torch.zeros(3, 8), torch.zeros(3, 16)
        for _ in range(3):
            x = torch.randn(4, 3, 8, requires_grad=True)
            bf16 = precision == "bf16"
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16, cache_enabled=False):
                out, h, c = layer(x, h, c)
                out.float().sum().backward()
            h, c = h.detach(), c.detach()
    assert layer.cell.fused
    assert counters["stats"]["unique_graphs"] - before == 4


def test_a_failing_fused_cell_falls_back_to_eager_once(monkeypatch, caplog):
    calls = []

    def broken_compile(function, **options):
        def compiled(*args):
            calls.append(function.__name__)
            raise RuntimeError("no compiler back-end")

        return compiled

    monkeypatch.setattr(cell_module.torch, "compile", broken_compile)
    fused = CellMath(fuse_forward=True, fuse_backward=True)
    gates, c_prev, _ = random_step()
    with caplog.at_level(logging.WARNING, logger="lm1b.models.cell"):
        first = run_forward(fused.forward, gates, c_prev)
        second = run_forward(fused.forward, gates, c_prev)
    expected = run_forward(cell_forward, gates, c_prev)
    for got, want in zip(first + second, expected * 2, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert calls == ["cell_forward"] and not fused.fused
    assert [r.message for r in caplog.records if "fused LSTM cell" in r.message]
