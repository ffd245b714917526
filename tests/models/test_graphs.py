"""CUDA-graph bookkeeping of the LSTM stack, exercised on a CPU with a stand-in for
`torch.cuda.make_graphed_callables` (the capture itself is tested on a GPU in
test_gpu_paths.py), and the switch that turns the fast paths on."""

from __future__ import annotations

import logging

import pytest
import torch

from lm1b.config.model import ModelConfig
from lm1b.config.trainer import TrainerConfig
from lm1b.models import acceleration
from lm1b.models.acceleration import enable_fast_paths, fast_path_status
from lm1b.models.cell import cell_backward, cell_forward
from lm1b.models.graphs import LayerGraphs
from lm1b.models.language_model import build_language_model
from lm1b.models.lstm_stack import build_lstm_stack

T, B, P, N = 3, 2, 4, 8


class FakeCapture:
    """Records what the stack asks to capture and hands back the wrappers (eager calls)."""

    def __init__(self, fail: bool = False):
        self.samples = []
        self.fail = fail

    def __call__(self, calls, samples):
        self.samples.append(samples)
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return calls


def stack_with_graphs(capture, num_layers=2, num_groups=1):
    cfg = ModelConfig(
        type="glstm" if num_groups > 1 else "biglstm",
        num_layers=num_layers,
        projection_size=P,
        state_size=N,
        num_groups=num_groups,
        dropout=0.0,
    )
    stack = build_lstm_stack(cfg).double()
    stack.graphs = LayerGraphs(stack.layers, capture=capture)
    return stack


def run(stack, batch=B, state=None, dtype=torch.float64):
    x = torch.randn(T, batch, P, dtype=dtype, requires_grad=True)
    return stack(x, state)


def test_capture_on_the_second_matching_call_and_replay_after():
    capture = FakeCapture()
    stack = stack_with_graphs(capture)
    run(stack)
    assert capture.samples == [] and not stack.graphs.captured  # the first call runs eagerly
    _, state = run(stack)  # same signature: captured now
    assert len(capture.samples) == 1 and stack.graphs.captured
    (x1, h1, c1), (x2, h2, c2) = capture.samples[0]
    assert x1.shape == x2.shape == (T, B, P) and x1.requires_grad and x2.requires_grad
    assert h1.shape == (B, P) and c1.shape == (B, N) and not (h1.requires_grad or c1.requires_grad)
    assert len({id(t) for t in (x1, h1, c1, x2, h2, c2)}) == 6  # each a static input of its own
    state = tuple(s.detach() for s in state)
    x = torch.randn(T, B, P, dtype=torch.float64, requires_grad=True)
    calls = stack.graphs.layer_calls(x, *state)
    assert calls is not None and len(calls) == 2
    assert stack.graphs.layer_calls(x.detach(), *state) is None  # another signature
    run(stack, state=state)
    assert len(capture.samples) == 1  # captured once


def test_other_signatures_eval_and_no_grad_run_eagerly():
    capture = FakeCapture()
    stack = stack_with_graphs(capture)
    run(stack)
    run(stack)
    h, c = stack.zero_state(B + 1, torch.zeros(1, dtype=torch.float64))
    assert stack.graphs.layer_calls(torch.zeros(T, B + 1, P, dtype=torch.float64), h, c) is None
    with torch.no_grad():
        h, c = stack.zero_state(B, torch.zeros(1, dtype=torch.float64))
        assert stack.graphs.layer_calls(torch.zeros(T, B, P, dtype=torch.float64), h, c) is None
    stack.eval()
    run(stack)
    assert len(capture.samples) == 1


def test_graphed_calls_give_the_eager_results_and_gradients():
    torch.manual_seed(0)
    stack = stack_with_graphs(FakeCapture(), num_groups=2)
    x = torch.randn(T, B, P, dtype=torch.float64)
    results = []
    for _ in range(3):  # eager, capture + graphed, graphed
        stack.zero_grad()
        out, (h, c) = stack(x.clone().requires_grad_())
        (out.sum() + h.sum() + c.sum()).backward()
        results.append([out, h, c, *(p.grad.clone() for p in stack.parameters())])
    assert stack.graphs.captured
    for later in results[1:]:
        for got, want in zip(later, results[0], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_under_autocast_capture_is_on_the_second_call_with_half_precision_samples():
    capture = FakeCapture()
    stack = stack_with_graphs(capture).float()
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        _, state = run(stack, dtype=torch.float32)
        # The zero state already had the carried state's dtypes (h bf16, c in the parameters'
        # fp32): capture now.
        assert [s.dtype for s in state] == [torch.bfloat16, torch.float32]
        assert capture.samples == []
        run(stack, state=tuple(s.detach() for s in state), dtype=torch.float32)
    (x1, h1, c1), (x2, _, _) = capture.samples[0]
    assert (x1.dtype, x2.dtype, h1.dtype) == (torch.float32, torch.bfloat16, torch.bfloat16)
    assert c1.dtype == torch.float32


def test_a_failed_capture_warns_once_and_stays_eager(caplog):
    capture = FakeCapture(fail=True)
    stack = stack_with_graphs(capture)
    with caplog.at_level(logging.WARNING, logger="lm1b.models.graphs"):
        for _ in range(4):
            out, _ = run(stack)
            out.sum().backward()
    assert len(capture.samples) == 1 and stack.graphs.failed and not stack.graphs.captured
    assert len([r for r in caplog.records if "capture failed" in r.message]) == 1


@pytest.mark.parametrize("model_type", ["biglstm", "glstm", "flstm", "biglstm_cudnn"])
def test_fast_paths_are_switched_on_for_our_stack(model_type, monkeypatch):
    """CUDA graphs on CUDA only; the fused cell on both devices, its backward only on a CPU."""
    monkeypatch.setattr(acceleration, "compiler_for", lambda device: "/usr/bin/cc")
    cfg = ModelConfig(
        type=model_type,
        num_layers=2,
        projection_size=P,
        state_size=N,
        num_groups=2,
        factor_rank=2,
        vocab_size=50,
        num_sampled=5,
    )
    trainer = TrainerConfig(max_steps=1)
    ours = model_type != "biglstm_cudnn"
    cpu_model = build_language_model(cfg)
    assert enable_fast_paths(cpu_model, trainer, torch.device("cpu")) == {
        "cuda_graphs": False,
        "fused_cell": ours,
    }
    if ours:
        cell = cpu_model.rnn.layers[0].cell
        assert cell._forward is cell_forward and cell._backward is not cell_backward
    # Switching on only sets attributes (nothing is compiled or captured before a step), so
    # the CUDA branch can be checked without a GPU.
    model = build_language_model(cfg)
    enabled = enable_fast_paths(model, trainer, torch.device("cuda"))
    assert enabled == {"cuda_graphs": ours, "fused_cell": ours}
    # Engaged: the cell is compiled (lazily), the graphs not captured before two steps ran.
    assert fast_path_status(model) == {"cuda_graphs": False, "fused_cell": ours}
    if ours:
        assert model.rnn.graphs is not None
        assert all(layer.cell.fused for layer in model.rnn.layers)
        off = TrainerConfig(max_steps=1, cuda_graphs=False, fused_cell=False)
        assert enable_fast_paths(build_language_model(cfg), off, torch.device("cuda")) == {
            "cuda_graphs": False,
            "fused_cell": False,
        }


def test_without_a_compiler_the_cell_runs_unfused_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    cfg = ModelConfig(type="biglstm", projection_size=P, state_size=N, num_sampled=5)
    model = build_language_model(cfg, vocab_size=50)
    with caplog.at_level(logging.WARNING, logger="lm1b.models.acceleration"):
        enabled = enable_fast_paths(model, TrainerConfig(max_steps=1), torch.device("cpu"))
    assert enabled == {"cuda_graphs": False, "fused_cell": False}
    assert not any(layer.cell.fused for layer in model.rnn.layers)
    [warning] = [r.message for r in caplog.records]
    assert "no C++ ($CXX or g++) compiler" in warning


@pytest.mark.parametrize(
    ("device", "variable", "default"), [("cpu", "CXX", "g++"), ("cuda", "CC", "gcc")]
)
def test_a_compiler_variable_that_is_set_is_the_only_compiler_looked_for(
    monkeypatch, device, variable, default
):
    """torch.compile calls $CXX ($CC for Triton) when it is set, whether or not it exists: a
    missing one means no compiler, however many others the PATH has."""
    installed = {default: f"/usr/bin/{default}", "/opt/cc/bin/c++": "/opt/cc/bin/c++"}
    monkeypatch.setattr(acceleration.shutil, "which", installed.get)
    monkeypatch.setattr(acceleration.sys, "platform", "linux")
    monkeypatch.setenv(variable, "/opt/missing/c++")
    assert acceleration.compiler_for(torch.device(device)) is None
    monkeypatch.setenv(variable, "/opt/cc/bin/c++")
    assert acceleration.compiler_for(torch.device(device)) == "/opt/cc/bin/c++"
    monkeypatch.delenv(variable)
    assert acceleration.compiler_for(torch.device(device)) == f"/usr/bin/{default}"
