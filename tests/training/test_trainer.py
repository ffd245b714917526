"""The training loop in one process: skip policy, clipping, dashboards, bad set-ups
(RELIABILITY.md #13, #15, #16, #17, #22, #24, #26)."""

from __future__ import annotations

import json

import pytest
import torch

from lm1b.config import CONFIG_DIR, compose_config
from lm1b.training.checkpoint import CheckpointError
from lm1b.training.distributed import DistContext
from lm1b.training.optim import lstm_parameters
from lm1b.training.setup import build_trainer

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def make_trainer(run_dir, overrides):
    cfg = compose_config(overrides)
    return build_trainer(cfg, CPU, run_dir, {"name": cfg.name}, config_yaml="")


def fit_to(trainer, steps: int) -> str:
    trainer.cfg.trainer.max_steps = steps
    return trainer.fit()


def _snapshot(trainer) -> dict:
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # Every optimizer's Adagrad sums: the LSTM's and the tables' (updated on a device flag).
    sums = [s["sum"].clone() for o in trainer.optimizers.optimizers for s in o.state.values()]
    return {"weights": weights, "adagrad_sums": sums}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]) and all(
        torch.equal(x, y) for x, y in zip(a["adagrad_sums"], b["adagrad_sums"], strict=True)
    )


def test_a_nan_step_is_skipped_and_the_next_one_is_normal(tmp_path, tiny_overrides):
    trainer = make_trainer(tmp_path, [*tiny_overrides, "optim=adagrad", "testing.nan_at_step=5"])
    fit_to(trainer, 4)
    before, position = _snapshot(trainer), trainer.loader.state_dict()
    fit_to(trainer, 5)
    assert _same(before, _snapshot(trainer))  # weights and optimizer state untouched
    assert trainer.counters.skipped_steps == 1 and trainer.counters.step == 5
    assert trainer.loader.state_dict() != position  # the batch was consumed all the same
    fit_to(trainer, 6)
    assert not _same(before, _snapshot(trainer))
    assert trainer.counters.skipped_steps == 1 and trainer.counters.consecutive_skips == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["optim_skipped_steps"] for r in records if r["step"] in (4, 5, 6)] == [0, 1, 1]


def test_a_short_sample_set_is_skipped_like_a_nan_step(tmp_path, tiny_overrides):
    """A sample set whose fixed draws held fewer than S distinct ids (forced here; otherwise
    below 1e-12 a step) changes nothing, and the next step is normal."""
    trainer = make_trainer(tmp_path, [*tiny_overrides, "optim=adagrad"])
    fit_to(trainer, 2)
    before = _snapshot(trainer)
    sampler = trainer.model.sampler
    sampler._draw_count = sampler.num_sampled - 1  # cannot hold S distinct ids
    fit_to(trainer, 3)
    assert _same(before, _snapshot(trainer)) and trainer.counters.skipped_steps == 1
    sampler._draw_count = None
    fit_to(trainer, 4)
    assert not _same(before, _snapshot(trainer)) and trainer.counters.skipped_steps == 1


def test_a_nan_storm_stops_the_run_naming_the_step(tmp_path, tiny_overrides):
    trainer = make_trainer(
        tmp_path,
        [*tiny_overrides, "testing.nan_every_step=true", "trainer.max_consecutive_skips=3"],
    )
    with pytest.raises(FloatingPointError, match="step 3: 3 consecutive steps"):
        fit_to(trainer, 10)


def test_clipping_logs_the_norm_before_and_applies_the_norm_after(tmp_path, tiny_overrides):
    trainer = make_trainer(tmp_path, [*tiny_overrides, "optim=adagrad", "optim.max_grad_norm=1.0"])
    applied = []
    step = trainer.optimizers.step_host_checked

    def record_then_step():
        grads = [p.grad for p in lstm_parameters(trainer.model)]
        applied.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        step()

    forward = trainer.model.forward

    def loss_times_a_million(*args, **kwargs):
        out = forward(*args, **kwargs)
        return out._replace(loss=out.loss * 1e6)

    trainer.optimizers.step_host_checked = record_then_step
    trainer.model.forward = loss_times_a_million
    batch = next(iter(trainer.loader))
    result = trainer.steps.run(batch, 1, [0.0])
    assert result.grad_norm > 1e3  # the pre-clip norm is what is reported
    assert applied[0] <= 1.0 * (1 + 1e-6)


def test_tensorboard_has_the_contract_tags_and_hparams(tmp_path, tiny_overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(tmp_path, [*tiny_overrides, "trainer.val_every=4"])
    fit_to(trainer, 4)
    trainer.metrics.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    expected = {
        "train/sampled_loss",
        "train/sampled_ppl",
        "train/words_per_sec",
        "optim/lr",
        "optim/grad_norm",
        "optim/skipped_steps",
        "val/ppl",
        "perf/data_wait_fraction",
    }
    assert expected <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/sampled_loss")] == [1, 2, 3, 4]
    # The sampled loss is never logged under the name of the model's loss.
    assert not {"train/loss", "train/ppl"} & set(events.Tags()["scalars"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_every_experiment_trains_one_step_at_tiny_size(tmp_path, tiny_overrides):
    for experiment in sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")):
        common = [o for o in tiny_overrides if not o.startswith("experiment=")]
        overrides = [*common, f"experiment={experiment}", "size=tiny", "data=synthetic"]
        trainer = make_trainer(tmp_path / experiment, overrides)
        assert fit_to(trainer, 1) == "max_steps"
        assert trainer.cfg.name == experiment
        assert (tmp_path / experiment / "checkpoints" / "step-000000001.pt").is_file()


def test_a_glob_matching_nothing_fails_before_any_model_is_built(tmp_path, tiny_overrides):
    with pytest.raises(FileNotFoundError, match=r"data\.train_files='nope/\*'"):
        make_trainer(tmp_path, [*tiny_overrides, "data.train_files=nope/*"])
    assert not (tmp_path / "checkpoints").exists()


def test_an_unwritable_run_directory_fails_before_training(tmp_path, tiny_overrides):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(CheckpointError, match="a-file/run/checkpoints is not writable"):
        make_trainer(tmp_path / "a-file" / "run", tiny_overrides)


def test_a_run_dir_of_only_corrupt_checkpoints_is_not_restarted_silently(tmp_path, tiny_overrides):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-000000010.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none is valid"):
        make_trainer(tmp_path, tiny_overrides)


@pytest.mark.parametrize("experiment", ["tiny", "flstm_r512", "glstm_k4"])
def test_bf16_autocast_trains_with_fp32_master_weights(tmp_path, tiny_overrides, experiment):
    common = [o for o in tiny_overrides if not o.startswith("experiment=")]
    overrides = [*common, f"experiment={experiment}", "size=tiny", "data=synthetic"]
    trainer = make_trainer(tmp_path, [*overrides, "trainer.precision=bf16"])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    fit_to(trainer, 2)
    assert trainer.counters.skipped_steps == 0
    for name, value in trainer.model.state_dict().items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value).all(), name
    assert not torch.equal(
        before["rnn.layers.0.proj"], trainer.model.state_dict()["rnn.layers.0.proj"]
    )


def test_more_samples_than_words_is_a_config_error(tmp_path, tiny_overrides):
    from lm1b.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.num_sampled=5000 .* vocabulary size"):
        make_trainer(tmp_path, [*tiny_overrides, "model.num_sampled=5000"])
