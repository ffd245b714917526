"""The GPU fast paths on a real device: CUDA-graph replay and the fused cell give the eager
results, and actually engage (no silent fall-back). Skipped without CUDA; scripts/gpu_check.sh
runs them first on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lm1b.benchmark.candidates import build_candidate, compose_variant_config
from lm1b.benchmark.timing import count_host_syncs
from lm1b.config.bench import PRESETS
from lm1b.config.model import ModelConfig
from lm1b.config.trainer import TrainerConfig
from lm1b.models.acceleration import enable_fast_paths, fast_path_status
from lm1b.models.language_model import build_language_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

B, T, V = 8, 5, 1000


def model_pair(model_type: str, num_groups: int = 1):
    """Two identical small models on the GPU: one eager, one with every fast path on."""
    cfg = ModelConfig(
        type=model_type,
        vocab_size=V,
        num_layers=2,
        projection_size=64,
        state_size=256,
        num_groups=num_groups,
        factor_rank=32,
        num_sampled=100,
        dropout=0.0,
    )
    models = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = build_language_model(cfg).cuda().train()
        switches = TrainerConfig(max_steps=1, cuda_graphs=fast, fused_cell=fast)
        assert enable_fast_paths(model, switches, torch.device("cuda"))["cuda_graphs"] == fast
        models.append(model)
    return models


def train(model, precision: str, steps: int = 5) -> list[float]:
    """`steps` SGD steps on fixed random batches, carrying the state; the losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    generator = torch.Generator(device="cuda")
    data = torch.Generator().manual_seed(1)
    state, losses = None, []
    for step in range(steps):
        ids = torch.randint(V, (B, T + 1), generator=data).cuda()
        generator.manual_seed(step)
        with torch.autocast(
            "cuda", torch.bfloat16, enabled=precision == "bf16", cache_enabled=False
        ):
            out = model(ids[:, :-1], ids[:, 1:], state, generator=generator)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = tuple(s.detach() for s in out.state)
        losses.append(out.loss.item())
    return losses


# First: cheap (no compilation), so a time-limited GPU check runs it whatever comes after.
@pytest.mark.parametrize("variant", ["biglstm", "flstm_r512", "glstm_k2"])
def test_a_training_step_waits_for_the_gpu_once(variant):
    """The trainer's step on CUDA in bf16 with CUDA graphs waits for the device once, to read
    its flags (step.py; tests/training/test_host_syncs.py checks the operations on a CPU)."""
    device = torch.device("cuda")
    # The fused cell is left out: it compiles per variant, and it does not touch the host.
    cfg = compose_variant_config(variant, PRESETS["tiny"], "bf16", ["trainer.fused_cell=false"])
    candidate = build_candidate(variant, cfg, device, seed=0)
    for _ in range(3):  # allocations, then the capture of the graphs on the second step
        candidate.train_step()
    count_host_syncs(candidate, device)
    assert fast_path_status(candidate.model)["cuda_graphs"]
    assert candidate.host_syncs == 1


# Each case compiles the cell for its own shapes and dtype: three cover every gate map and
# both precisions within the GPU check's time budget.
@pytest.mark.parametrize(
    ("model_type", "num_groups", "precision"),
    [("biglstm", 1, "fp32"), ("glstm", 4, "bf16"), ("flstm", 1, "bf16")],
)
def test_fast_paths_engage_and_match_eager(model_type, num_groups, precision):
    eager, fast = model_pair(model_type, num_groups)
    want = train(eager, precision)
    got = train(fast, precision)
    # Captured and compiled: neither fell back to eager.
    assert fast_path_status(fast) == {"cuda_graphs": True, "fused_cell": True}
    tolerance = 1e-4 if precision == "fp32" else 3e-2
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    for (name, a), b in zip(fast.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.slow
def test_training_run_on_the_gpu_with_and_without_graphs(tmp_path, tiny_overrides):
    """The trainer end to end on CUDA in bf16: the fast paths change speed, not the losses."""
    losses = {}
    for graphs in ("true", "false"):
        run_dir = tmp_path / graphs
        command = [
            sys.executable, "-m", "lm1b.train", *tiny_overrides, "trainer.device=cuda",
            "trainer.precision=bf16", "trainer.max_steps=8", "trainer.checkpoint_every=0",
            f"trainer.cuda_graphs={graphs}", f"trainer.fused_cell={graphs}",
            f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        result = subprocess.run(
            command, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        losses[graphs] = [r["sampled_loss"] for r in records if "sampled_loss" in r]
        log = (run_dir / "train.log").read_text()
        assert f"cuda_graphs={graphs.title()}" in log
    assert len(losses["true"]) == 8
    torch.testing.assert_close(losses["true"], losses["false"], rtol=3e-2, atol=3e-2)
