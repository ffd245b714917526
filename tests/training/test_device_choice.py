"""Each rank drives a GPU it can see, however the launch numbers them: all of a node's GPUs under
torchrun, or only the task's own under SLURM's per-task binding (`--gpus-per-task`), where every
task sees its GPU as cuda:0 while its local rank still counts the node's tasks. No GPU is needed:
torch.cuda is made to report the visible GPUs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from lm1b.training import distributed
from lm1b.training.distributed import init_distributed

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID")


@pytest.fixture
def visible_gpus(monkeypatch):
    """`visible_gpus(n)`: torch reports n GPUs; returns the list the chosen devices go to."""
    current: list[int] = []

    def report(count: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", current.append)
        return current

    return report


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "SLURM_LOCALID"])
@pytest.mark.parametrize(
    ("visible", "local_rank", "index"),
    [(1, 3, 0), (8, 3, 3), (2, 3, 1), (2, 4, 0)],
    ids=["own-gpu", "all-8-gpus", "own-2-gpus", "own-2-gpus-next-task"],
)
def test_a_rank_drives_a_gpu_it_sees(
    monkeypatch, caplog, visible_gpus, variable, visible, local_rank, index
):
    for name in (*LAUNCH_VARIABLES, "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(local_rank))
    current = visible_gpus(visible)
    with caplog.at_level(logging.INFO, logger=distributed.__name__):
        ctx = init_distributed("auto")
    assert ctx.device == torch.device("cuda", index)
    assert current == [index]
    assert f"local rank {local_rank} drives cuda:{index} of the {visible} GPU(s)" in caplog.text


def test_a_rank_on_a_gpu_another_rank_drives_is_warned(monkeypatch, caplog):
    """Ranks 0 and 2 end up on one GPU (say, 3 torchrun workers on a node with 2 GPUs); each
    rank is its own process, simulated here one after the other on one store."""
    store = dist.HashStore()
    with caplog.at_level(logging.WARNING, logger=distributed.__name__):
        for rank, uuid in enumerate(["GPU-a", "GPU-b", "GPU-a"]):
            properties = SimpleNamespace(uuid=uuid)
            monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _, p=properties: p)
            distributed._warn_if_gpu_shared(store, rank, torch.device("cuda", 0))
    assert [r.getMessage().split(" drives")[0] for r in caplog.records] == ["rank 2"]
    assert "GPU GPU-a (cuda:0 here), which 1 other rank(s) of this job drive too" in caplog.text


def test_cpu_ranks_are_not_counted():
    no_store = object()  # any use fails
    distributed._warn_if_gpu_shared(no_store, 0, torch.device("cpu"))
