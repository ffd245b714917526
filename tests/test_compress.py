"""Compression of a BIGLSTM: SVD to an F-LSTM and block diagonal to a G-LSTM, checked against the
dense model's own outputs (float64); the compressed checkpoint, `trainer.init_from` and the
fine-tune."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lm1b.commands.compress import CompressConfig, compress, main, write_compressed
from lm1b.config import ConfigError, compose_config
from lm1b.config.model import ModelConfig
from lm1b.inference import load_trained_model
from lm1b.models.convert import (
    block_diagonal,
    compressed_model_config,
    convert_state_dict,
    dense_gate_matrix,
    factorize,
)
from lm1b.models.language_model import build_language_model
from lm1b.training.checkpoint import load_checkpoint
from lm1b.training.setup import build_trainer
from trained_checkpoint import CPU, train_tiny

VOCAB = 23
DENSE = ModelConfig(type="biglstm", state_size=12, projection_size=6, num_sampled=8, dropout=0.0)


def dense_model(seed: int = 0):
    """A float64 BIGLSTM with random (non-zero) biases, in eval mode."""
    torch.manual_seed(seed)
    model = build_language_model(DENSE, vocab_size=VOCAB).double().eval()
    with torch.no_grad():
        for layer in model.rnn.layers:
            layer.gates.bias.normal_(0, 0.5)
    return model


def outputs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-softmax NLL sum and the final state of one window."""
    with torch.no_grad():
        out = model(ids[:, :-1], ids[:, 1:])
    return out.nll_sum, torch.cat([s.flatten() for s in out.state])


def converted(model, target: ModelConfig):
    new = build_language_model(target, vocab_size=VOCAB).double().eval()
    new.load_state_dict(convert_state_dict(model.state_dict(), target))
    return new


def test_full_rank_svd_reproduces_the_dense_model():
    model = dense_model()
    rank = min(2 * DENSE.projection_size, 4 * DENSE.state_size)
    flstm = converted(model, compressed_model_config(DENSE, "svd", rank))
    ids = torch.randint(VOCAB, (3, 9))
    for got, want in zip(outputs(flstm, ids), outputs(model, ids), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_truncated_svd_is_the_best_rank_r_approximation():
    weight = dense_gate_matrix(dense_model().state_dict(), layer=1)  # (2p, 4n)
    singular = torch.linalg.svdvals(weight)
    for rank in (1, 3, 7):
        w1, w2 = factorize(weight, rank)
        assert w1.shape == (weight.shape[0], rank) and w2.shape == (rank, weight.shape[1])
        error = torch.linalg.matrix_norm(weight - w1 @ w2) ** 2
        torch.testing.assert_close(error, (singular[rank:] ** 2).sum())
        # The factors share the singular values' square roots: equal column/row norms.
        torch.testing.assert_close(w1.norm(dim=0), w2.norm(dim=1))


@pytest.mark.parametrize("groups", [2, 3, [3, 2]])
def test_block_diagonal_equals_the_dense_model_with_off_blocks_zeroed(groups):
    model = dense_model()
    target = compressed_model_config(DENSE, "block", groups)
    glstm = converted(model, target)
    # Reference: zero every weight linking group g's inputs to another group's gate units.
    p, n = DENSE.projection_size, DENSE.state_size
    with torch.no_grad():
        for layer, k in zip(model.rnn.layers, target.groups_per_layer(), strict=True):
            row_group = torch.arange(p) // (p // k)  # (p,)
            col_group = (torch.arange(4 * n) % n) // (n // k)  # (4n,): unit's group, each slot
            keep = row_group[:, None] == col_group[None, :]  # (p, 4n)
            layer.gates.weight_ih[0] *= keep
            layer.gates.weight_hh[0] *= keep
    ids = torch.randint(VOCAB, (2, 7))
    for got, want in zip(outputs(glstm, ids), outputs(model, ids), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_block_diagonal_shapes_and_one_group_is_identity():
    weight = torch.randn(8, 16)  # p = 4, n = 4
    w_ih, w_hh = block_diagonal(weight, 1)
    torch.testing.assert_close(torch.cat([w_ih[0], w_hh[0]]), weight, rtol=0, atol=0)
    w_ih, w_hh = block_diagonal(weight, 2)
    assert w_ih.shape == w_hh.shape == (2, 2, 8)
    with pytest.raises(ValueError, match="num_groups=3"):
        block_diagonal(weight, 3)


def test_config_conversion_rules():
    svd = compressed_model_config(DENSE, "svd", 5)
    assert (svd.type, svd.factor_rank) == ("flstm", 5)
    assert compressed_model_config(DENSE, "block", [2, 3]).groups_per_layer() == [2, 3]
    with pytest.raises(ValueError, match="method='prune'"):
        compressed_model_config(DENSE, "prune", 5)
    with pytest.raises(ValueError, match="only 'biglstm'"):
        compressed_model_config(dataclasses.replace(DENSE, type="glstm"), "svd", 5)
    with pytest.raises(ValueError, match="rank=13"):
        factorize(torch.randn(12, 48), 13)


# ---- checkpoints: the tiny size has p = 16, n = 32, so full rank is min(2p, 4n) = 32 ---------


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_overrides):
    # With an EMA (Adam's default has none): compression must convert the averaged weights.
    overrides = [*tiny_overrides, "optim.ema_decay=0.9"]
    return train_tiny(tmp_path_factory.mktemp("compress-run"), overrides, steps=10)


def test_full_rank_keeps_the_perplexity_and_blocks_lose_some(source, tmp_path):
    cfg = CompressConfig(
        checkpoint=str(source), output_dir=str(tmp_path), ranks=[32, 4], groups=[2]
    )
    rows = {row["name"]: row for row in compress(cfg)}
    reference = rows["biglstm (source)"]["perplexity"]
    assert rows["flstm_r32"]["perplexity"] == pytest.approx(reference, rel=1e-5)
    assert rows["flstm_r4"]["perplexity"] > reference
    assert rows["glstm_k2"]["perplexity"] > reference
    assert rows["flstm_r4"]["rnn_params"] < rows["biglstm (source)"]["rnn_params"]
    state = load_checkpoint(rows["flstm_r32"]["checkpoint"])
    assert state["counters"]["step"] == 0 and state["ema"] is None and "optimizers" not in state
    assert state["config"]["model"]["type"] == "flstm"
    assert state["compressed_from"]["weights"] == "ema"
    assert (tmp_path / "compress.json").is_file()


def test_init_from_starts_a_fresh_run_from_the_compressed_weights(source, tmp_path, tiny_overrides):
    trained = load_trained_model(source)
    path = write_compressed(trained, "flstm_r8", "svd", 8, tmp_path / "flstm_r8")
    overrides = [*tiny_overrides, f"trainer.init_from={path.parent}", "optim.ema_decay=0.9"]
    cfg = compose_config([*overrides, "model.type=flstm", "model.factor_rank=8"])
    trainer = build_trainer(cfg, CPU, tmp_path / "run", {}, config_yaml="")
    saved = load_checkpoint(path)["model"]
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    assert trainer.counters.step == 0
    for optimizer in trainer.optimizers.state_dict():  # fresh: no step taken by any optimizer
        assert all(float(state.get("step", 0)) == 0 for state in optimizer["state"].values())
    names = [name for name, _ in trainer.model.rnn.named_parameters()]
    for name, shadow in zip(names, trainer.ema.shadow, strict=True):  # the EMA starts there too
        assert shadow.equal(saved[f"rnn.{name}"]), name
    with pytest.raises(ConfigError, match=r"model.type=flstm model.num_layers=2 .*factor_rank=8"):
        build_trainer(compose_config(overrides), CPU, tmp_path / "other", {}, config_yaml="")


@pytest.mark.slow
def test_command_fine_tunes_each_conversion(source, tmp_path, capsys):
    main([f"checkpoint={source}", f"output_dir={tmp_path}", "groups=[[2,4]]", "finetune_steps=2"])
    table = capsys.readouterr().out
    assert "| hglstm_k2_k4 |" in table and "fine-tuned after 2 steps" in table
    tuned = load_trained_model(tmp_path / "hglstm_k2_k4-finetune")
    assert tuned.step == 2 and tuned.config.model.groups_per_layer() == [2, 4]
    with pytest.raises(SystemExit, match="model.factor_rank=64 is invalid"):
        main([f"checkpoint={source}", f"output_dir={tmp_path}", "ranks=[64]"])
