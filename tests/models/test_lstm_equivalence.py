"""Equivalence of the LSTMP stack variants, in float64 with the same weights: against
nn.LSTM(proj_size), between G-LSTM / F-LSTM and BIGLSTM with the equivalent dense gate matrix,
and between the fused fast path and the plain per-step loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lm1b.config.model import ModelConfig
from lm1b.models.gates import GATE_F, GATE_I, GATE_J, GATE_O, GateMap
from lm1b.models.lstm_stack import build_lstm_stack

P, N, STEPS, BATCH = 8, 16, 5, 3
TORCH_ORDER = (GATE_I, GATE_F, GATE_J, GATE_O)  # nn.LSTM's (i, f, g, o) in our slots


def make_stack(model_type: str = "biglstm", **fields) -> nn.Module:
    cfg = ModelConfig(type=model_type, state_size=N, projection_size=P, dropout=0.0, **fields)
    return build_lstm_stack(cfg).double().eval()


def random_inputs(steps: int = STEPS):
    """Inputs (T, B, p) with grad, and a non-zero initial state ((L, B, p), (L, B, n))."""
    x = torch.randn(steps, BATCH, P, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, BATCH, P, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, BATCH, N, dtype=torch.float64, requires_grad=True)
    return x, (h0, c0)


def run_with_grads(forward, x, state, params):
    """Outputs, final state and the gradients of a loss touching all three."""
    out, (h, c) = forward(x, state)
    loss = out.sin().sum() + h.cos().sum() + (c * c).sum()
    grads = torch.autograd.grad(loss, [x, *state, *params])
    return [out, h, c], grads


def assert_all_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def dense_from_groups(weight: torch.Tensor) -> torch.Tensor:
    """(k, p/k, 4n/k) group weights -> the block-structured dense (p, 4n) gate matrix."""
    k, p_g, w = weight.shape
    n_g = w // 4
    dense = weight.new_zeros(k * p_g, 4, k, n_g)
    for g in range(k):
        dense[g * p_g : (g + 1) * p_g, :, g] = weight[g].view(p_g, 4, n_g)
    return dense.view(k * p_g, 4 * k * n_g)


def to_torch_order(matrix: torch.Tensor) -> torch.Tensor:
    """Our (.., 4n) [i | j | f | o] columns -> nn.LSTM's (4n, ..) [i | f | g | o] rows."""
    blocks = matrix.view(*matrix.shape[:-1], 4, N)
    return (
        torch.stack([blocks[..., s, :] for s in TORCH_ORDER], -2).reshape(*matrix.shape[:-1], -1).T
    )


def test_biglstm_equals_nn_lstm():
    ours = make_stack("biglstm")
    ref = nn.LSTM(P, N, num_layers=2, proj_size=P).double()
    with torch.no_grad():
        for layer_idx, layer in enumerate(ours.layers):
            gates = layer.gates
            getattr(ref, f"weight_ih_l{layer_idx}").copy_(to_torch_order(gates.weight_ih[0]))
            getattr(ref, f"weight_hh_l{layer_idx}").copy_(to_torch_order(gates.weight_hh[0]))
            bias = gates.bias.clone().view(4, N)
            bias[GATE_F] += 1.0  # the recipe's constant forget bias
            getattr(ref, f"bias_ih_l{layer_idx}").copy_(to_torch_order(bias.view(1, -1)).view(-1))
            getattr(ref, f"bias_hh_l{layer_idx}").zero_()
            getattr(ref, f"weight_hr_l{layer_idx}").copy_(layer.proj.T)
    x, state = random_inputs()
    ours_params = [p for layer in ours.layers for p in (layer.gates.weight_ih, layer.proj)]
    ref_params = [
        getattr(ref, f"{name}_l{i}") for i in range(2) for name in ("weight_ih", "weight_hr")
    ]
    ours_out, ours_grads = run_with_grads(ours, x, state, ours_params)
    ref_out, ref_grads = run_with_grads(ref, x, state, ref_params)
    assert_all_close(ours_out, ref_out)
    assert_all_close(ours_grads[:3], ref_grads[:3])  # inputs and initial state
    for i in range(2):  # weight gradients, mapped to nn.LSTM's layout
        torch.testing.assert_close(to_torch_order(ours_grads[3 + 2 * i][0]), ref_grads[3 + 2 * i])
        torch.testing.assert_close(ours_grads[4 + 2 * i].T, ref_grads[4 + 2 * i])


def test_glstm_k1_equals_biglstm():
    big, grouped = make_stack("biglstm"), make_stack("glstm", num_groups=1)
    grouped.load_state_dict(big.state_dict())
    x, state = random_inputs()
    assert_all_close(
        run_with_grads(grouped, x, state, list(grouped.parameters()))[0],
        run_with_grads(big, x, state, list(big.parameters()))[0],
    )


@pytest.mark.parametrize("num_groups", [2, 4])
def test_glstm_equals_block_structured_biglstm(num_groups):
    grouped, big = make_stack("glstm", num_groups=num_groups), make_stack("biglstm")
    with torch.no_grad():
        for g_layer, b_layer in zip(grouped.layers, big.layers, strict=True):
            b_layer.gates.weight_ih[0] = dense_from_groups(g_layer.gates.weight_ih)
            b_layer.gates.weight_hh[0] = dense_from_groups(g_layer.gates.weight_hh)
            b_layer.gates.bias.copy_(g_layer.gates.bias)
            b_layer.proj.copy_(g_layer.proj)
    x, state = random_inputs()
    g_out, g_grads = run_with_grads(grouped, x, state, list(grouped.parameters()))
    b_out, b_grads = run_with_grads(big, x, state, list(big.parameters()))
    assert_all_close(g_out, b_out)
    assert_all_close(g_grads[:3], b_grads[:3])
    # Each group's weight gradient is its block of the dense gradient; biases and P agree.
    for g_grad, b_grad in zip(g_grads[3:], b_grads[3:], strict=True):
        expected = dense_from_groups(g_grad) if g_grad.dim() == 3 else g_grad
        got = b_grad[0] if b_grad.dim() == 3 else b_grad
        mask = dense_from_groups(torch.ones_like(g_grad)) if g_grad.dim() == 3 else 1.0
        torch.testing.assert_close(got * mask, expected)


def test_flstm_equals_biglstm_with_product_matrix():
    fact, big = make_stack("flstm", factor_rank=4), make_stack("biglstm")
    with torch.no_grad():
        for f_layer, b_layer in zip(fact.layers, big.layers, strict=True):
            f = f_layer.gates
            b_layer.gates.weight_ih[0] = f.w1_x @ f.w2
            b_layer.gates.weight_hh[0] = f.w1_h @ f.w2
            b_layer.gates.bias.copy_(f.bias)
            b_layer.proj.copy_(f_layer.proj)
    x, state = random_inputs()
    f_names, f_params = zip(*fact.named_parameters(), strict=True)
    b_names, b_params = zip(*big.named_parameters(), strict=True)
    f_out, f_grads = run_with_grads(fact, x, state, f_params)
    b_out, b_grads = run_with_grads(big, x, state, b_params)
    assert_all_close(f_out, b_out)
    assert_all_close(f_grads[:3], b_grads[:3])
    f_grad = dict(zip(f_names, f_grads[3:], strict=True))
    b_grad = {name: g.squeeze(0) for name, g in zip(b_names, b_grads[3:], strict=True)}
    # Chain rule through W = W2 W1 for each layer's factor gradients.
    for i, f_layer in enumerate(fact.layers):
        f, pre = f_layer.gates, f"layers.{i}."
        d_ih, d_hh = b_grad[pre + "gates.weight_ih"], b_grad[pre + "gates.weight_hh"]
        torch.testing.assert_close(f_grad[pre + "gates.w1_x"], d_ih @ f.w2.T)
        torch.testing.assert_close(f_grad[pre + "gates.w1_h"], d_hh @ f.w2.T)
        torch.testing.assert_close(f_grad[pre + "gates.w2"], f.w1_x.T @ d_ih + f.w1_h.T @ d_hh)
        for name in ("gates.bias", "proj"):
            torch.testing.assert_close(f_grad[pre + name], b_grad[pre + name])


def test_hierarchical_with_equal_k_equals_glstm():
    flat, hier = make_stack("glstm", num_groups=4), make_stack("glstm", num_groups=[4, 4])
    hier.load_state_dict(flat.state_dict())
    x, state = random_inputs()
    h_out, h_grads = run_with_grads(hier, x, state, list(hier.parameters()))
    f_out, f_grads = run_with_grads(flat, x, state, list(flat.parameters()))
    assert_all_close(h_out + list(h_grads), f_out + list(f_grads))


VARIANTS = [
    ("biglstm", {}),
    ("flstm", {"factor_rank": 4}),
    ("glstm", {"num_groups": 2}),
    ("glstm", {"num_groups": 4}),
    ("glstm", {"num_groups": [2, 4]}),
]


@pytest.mark.parametrize(("model_type", "fields"), VARIANTS)
def test_fast_path_equals_plain_loop(model_type, fields):
    stack = make_stack(model_type, **fields)
    assert all(isinstance(layer.gates, GateMap) for layer in stack.layers)
    x, state = random_inputs()
    params = list(stack.parameters())
    fast_out, fast_grads = run_with_grads(stack.forward, x, state, params)
    plain_out, plain_grads = run_with_grads(stack.forward_plain, x, state, params)
    assert_all_close(fast_out + list(fast_grads), plain_out + list(plain_grads))


@pytest.mark.parametrize(("model_type", "fields"), [*VARIANTS, ("biglstm_cudnn", {})])
def test_carried_state_equals_one_long_window(model_type, fields):
    stack = make_stack(model_type, **fields)
    x, state = random_inputs(steps=2 * STEPS)
    with torch.no_grad():
        long_out, long_state = stack(x, state)
        first_out, carried = stack(x[:STEPS], state)
        second_out, final_state = stack(x[STEPS:], carried)
    assert_all_close([torch.cat([first_out, second_out]), *final_state], [long_out, *long_state])
