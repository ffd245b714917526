"""trainer.precision and trainer.tf32: what `auto` means on each device, the cuDNN baseline's
refusal of bf16 on CUDA, TF32 set through whichever API the installed torch has, and a run
that records both. CUDA is monkeypatched: nothing here needs a GPU."""

from __future__ import annotations

import pytest
import torch

from lm1b.config import ConfigError, compose_config
from lm1b.config.trainer import TrainerConfig
from lm1b.training import precision
from lm1b.training.distributed import DistContext
from lm1b.training.precision import resolve_precision, set_tf32, tf32_enabled
from lm1b.training.setup import _hparams, build_trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
CPU_RANK = DistContext(rank=0, world_size=1, local_rank=0, device=CPU)


def test_the_defaults_are_auto_precision_and_tf32():
    trainer = TrainerConfig(max_steps=1)
    assert (trainer.precision, trainer.tf32) == ("auto", True)


@pytest.mark.parametrize(
    ("requested", "model_type", "device", "capability", "expected"),
    [
        ("auto", "biglstm", CPU, None, "fp32"),
        ("auto", "glstm", CUDA, (9, 0), "bf16"),  # H100
        ("auto", "glstm", CUDA, (8, 0), "bf16"),  # A100
        ("auto", "glstm", CUDA, (7, 0), "fp32"),  # V100: bf16 only emulated, slower than fp32
        ("auto", "biglstm_cudnn", CUDA, (9, 0), "fp32"),
        ("bf16", "biglstm", CPU, None, "bf16"),  # CPU autocast, asked for explicitly
        ("bf16", "biglstm_cudnn", CPU, None, "bf16"),
        ("fp32", "flstm", CUDA, (9, 0), "fp32"),
    ],
)
def test_auto_means_bf16_on_a_gpu_with_native_bf16_only(
    monkeypatch, requested, model_type, device, capability, expected
):
    # torch.cuda.is_bf16_supported() says yes on a V100 too (emulation): it must not decide.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision(requested, model_type, device) == expected


def test_the_capability_asked_about_is_the_runs_own_gpu(monkeypatch):
    """Rank 3 on cuda:3 of a node mixing GPU generations asks about cuda:3, not the current
    device."""
    asked = []
    capabilities = {0: (7, 0), 3: (9, 0)}

    def capability(device=None):
        asked.append(device)
        return capabilities[torch.device(device).index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_precision("auto", "glstm", torch.device("cuda", 3)) == "bf16"
    assert asked == [torch.device("cuda", 3)]


def test_bf16_with_the_cudnn_baseline_on_cuda_is_refused_naming_the_fields():
    with pytest.raises(ConfigError, match=r"trainer\.precision='bf16'.*biglstm_cudnn.*float16"):
        resolve_precision("bf16", "biglstm_cudnn", CUDA)


@pytest.fixture
def restore_tf32():
    """Leave the process's TF32 flags as found (they are global)."""
    new_api = precision._has_fp32_precision_api()
    saved = (
        torch.backends.cuda.matmul.fp32_precision
        if new_api
        else torch.backends.cuda.matmul.allow_tf32
    )
    yield
    if new_api:
        torch.backends.cuda.matmul.fp32_precision = saved
    else:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_is_set_on_cuda_and_left_alone_on_a_cpu(restore_tf32):
    assert set_tf32(CPU, True) is None
    assert set_tf32(CUDA, True) is True and tf32_enabled()
    assert set_tf32(CUDA, False) is False and not tf32_enabled()


def test_the_legacy_tf32_flags_are_used_where_torch_has_no_fp32_precision(monkeypatch):
    """torch before 2.9: allow_tf32 on cuBLAS and cuDNN (on 2.9 and newer, mixing the two
    APIs raises, so only one may be touched)."""

    class Flags:
        allow_tf32 = False

    matmul, cudnn = Flags(), Flags()
    monkeypatch.setattr(precision, "_has_fp32_precision_api", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    assert set_tf32(CUDA, True) is True
    assert matmul.allow_tf32 and cudnn.allow_tf32


def test_a_run_logs_and_records_its_precision_and_tf32(tmp_path, tiny_overrides, caplog):
    """On a CPU `auto` trains in fp32, TF32 not applicable: the log says so and the run's
    hyperparameters (its TensorBoard header) record it."""
    cfg = compose_config([*tiny_overrides, "trainer.max_steps=1"])
    with caplog.at_level("INFO", logger="lm1b.training.setup"):
        trainer = build_trainer(cfg, CPU_RANK, tmp_path, {"name": cfg.name}, config_yaml="")
    assert trainer.steps.precision == "fp32"
    messages = [r.getMessage() for r in caplog.records]
    assert "precision fp32 (trainer.precision=auto), TF32 n/a on a CPU" in messages
    hparams = _hparams(cfg, trainer.model, {"precision": "bf16", "tf32": True})
    assert (hparams["trainer/precision"], hparams["trainer/tf32"]) == ("bf16", "True")
