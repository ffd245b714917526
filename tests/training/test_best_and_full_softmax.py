"""Keeping the best model (best.pt, early stopping), training with the full softmax, and never
starting a fresh run over an old one."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lm1b.config import ConfigError, compose_config
from lm1b.inference import load_trained_model
from lm1b.models.language_model import build_language_model
from lm1b.models.sampler import CandidateSample
from lm1b.models.softmax import full_softmax_loss, full_softmax_nll, sampled_softmax_loss
from lm1b.training.checkpoint import BEST_NAME, CheckpointManager, load_checkpoint
from lm1b.training.distributed import DistContext
from lm1b.training.setup import build_trainer

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def make_trainer(run_dir, overrides):
    cfg = compose_config(overrides)
    container = OmegaConf.to_container(OmegaConf.structured(cfg))  # commands rebuild from it
    return build_trainer(cfg, CPU, run_dir, container, config_yaml="")


def scripted_validations(trainer, perplexities: list[float]) -> list[int]:
    """Make the trainer's validations return `perplexities` in turn; returns the steps at
    which it validated (filled in as it runs)."""
    steps, values = [], iter(perplexities)

    def validate():
        steps.append(trainer.counters.step)
        return next(values)

    trainer.validate = validate
    return steps


def test_full_softmax_loss_equals_the_exhaustive_sampled_loss_and_the_evaluator():
    torch.manual_seed(0)
    vocab, n, p = 37, 11, 5
    hidden = torch.randn(n, p, dtype=torch.float64)
    weight = torch.randn(vocab, p, dtype=torch.float64)
    bias = torch.randn(vocab, 1, dtype=torch.float64)
    targets = torch.randint(vocab, (n,))
    mask = torch.rand(n) > 0.3
    full = full_softmax_loss(hidden, targets, weight, bias, mask)
    everything = CandidateSample.exhaustive(vocab)  # Q = 1 for every id
    sampled = sampled_softmax_loss(hidden, targets, weight, bias, everything, mask)
    nll_sum, count = full_softmax_nll(hidden, targets, weight, bias, mask, vocab_chunk_size=8)
    torch.testing.assert_close(full, sampled)
    torch.testing.assert_close(full, nll_sum / count)


def test_num_sampled_0_trains_with_dense_softmax_gradients(tmp_path, tiny_overrides):
    cfg = compose_config([*tiny_overrides, "model.num_sampled=0"])
    model = build_language_model(cfg.model, vocab_size=50).train()
    assert model.sampler is None and not model.softmax.sparse and model.embedding.sparse
    inputs = torch.randint(50, (3, 4))
    out = model(inputs, torch.randint(50, (3, 4)))
    out.loss.backward()
    assert not model.softmax.weight.grad.is_sparse
    assert bool((model.softmax.weight.grad != 0).all())  # every row, not only sampled ones

    trainer = make_trainer(tmp_path, [*tiny_overrides, "model.num_sampled=0"])
    first = trainer.steps.run(next(iter(trainer.loader)), 1, [0.0, 0.0, 0.0])
    trainer.cfg.trainer.max_steps = 20
    trainer.fit()
    records = (tmp_path / "metrics.jsonl").read_text()
    assert '"loss"' in records and "sampled_loss" not in records  # a real loss, named so
    assert not first.skipped and trainer.counters.skipped_steps == 0


def test_best_checkpoint_is_kept_outside_the_rotation_and_used_by_commands(
    tmp_path, tiny_overrides
):
    trainer = make_trainer(
        tmp_path,
        [
            *tiny_overrides,
            "trainer.val_every=2",
            "trainer.checkpoint_every=2",
            "trainer.keep_last=2",
        ],
    )
    steps = scripted_validations(trainer, [50.0, 40.0, 45.0, 47.0, 48.0, 49.0])
    trainer.cfg.trainer.max_steps = 10
    trainer.fit()
    assert steps == [2, 4, 6, 8, 10]
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert [p.name for p in manager.paths()] == ["step-000000008.pt", "step-000000010.pt"]
    best_path, best = manager.best()
    assert best_path.name == BEST_NAME and best["meta"]["step"] == 4
    assert best["counters"]["best_val_ppl"] == 40.0 and best["counters"]["best_step"] == 4
    # Commands given the run directory use the best; resuming uses the newest.
    assert load_trained_model(tmp_path).checkpoint == best_path
    assert load_trained_model(tmp_path).step == 4
    assert manager.latest()[0].name == "step-000000010.pt"
    resumed = make_trainer(tmp_path, [*tiny_overrides, "trainer.val_every=2"])
    assert resumed.counters.step == 10 and resumed.counters.best_val_ppl == 40.0


def test_a_best_checkpoint_holds_the_weights_that_were_validated(tmp_path, tiny_overrides):
    trainer = make_trainer(tmp_path, [*tiny_overrides, "trainer.val_every=3"])
    trainer.cfg.trainer.max_steps = 3
    trainer.fit()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    best = load_checkpoint(tmp_path / "checkpoints" / BEST_NAME)
    assert all(torch.equal(best["model"][k], weights[k]) for k in weights)
    assert best["counters"]["best_val_ppl"] == trainer.counters.best_val_ppl


def test_patience_stops_after_that_many_validations_without_a_new_best(tmp_path, tiny_overrides):
    trainer = make_trainer(tmp_path, [*tiny_overrides, "trainer.val_every=2", "trainer.patience=2"])
    steps = scripted_validations(trainer, [50.0, 40.0, 40.5, 41.0, 30.0])
    trainer.cfg.trainer.max_steps = 100
    assert trainer.fit() == "patience"
    assert steps == [2, 4, 6, 8] and trainer.counters.step == 8
    assert trainer.counters.best_step == 4 and trainer.counters.validations_since_best == 2


def test_resume_never_refuses_a_run_directory_that_holds_a_run(tmp_path, tiny_overrides):
    """Starting afresh there would interleave two runs' checkpoints and rewrite metrics.jsonl."""
    trainer = make_trainer(tmp_path, [*tiny_overrides, "trainer.val_every=2"])
    trainer.cfg.trainer.max_steps = 2
    trainer.fit()
    trainer.metrics.close()
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"trainer.resume=never but .* already holds a run"):
        make_trainer(tmp_path, [*tiny_overrides, "trainer.resume=never"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    fresh = tmp_path / "elsewhere"
    assert make_trainer(fresh, [*tiny_overrides, "trainer.resume=never"]).counters.step == 0


def test_a_resume_refuses_changed_settings_and_lists_them(tmp_path, tiny_overrides):
    """Resuming with optim.lr=0.02 once trained on at the checkpoint's lr while new
    checkpoints recorded 0.02; another seed or batch size ended in a traceback."""
    trainer = make_trainer(tmp_path, tiny_overrides)
    trainer.cfg.trainer.max_steps = 2
    trainer.fit()
    trainer.metrics.close()
    changed = ["optim.lr=0.02", "seed=7", "data.batch_size=8"]
    with pytest.raises(ConfigError) as refused:
        make_trainer(tmp_path, [*tiny_overrides, *changed])
    message = str(refused.value)
    assert "optim.lr: 0.002 in the checkpoint, 0.02 now" in message
    assert "seed: 1 in the checkpoint, 7 now" in message and "data.batch_size: 4" in message
    # How long it runs and how it logs may change.
    resumed = make_trainer(
        tmp_path, [*tiny_overrides, "trainer.max_steps=9", "trainer.log_every=3"]
    )
    assert resumed.counters.step == 2
