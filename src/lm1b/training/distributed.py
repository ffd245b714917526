"""Process-group set-up for one process, torchrun (one node or several), and SLURM's srun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A job started by
`srun python -m lm1b.train` without torchrun has SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID
instead; the sbatch script exports MASTER_ADDR and MASTER_PORT (see scripts/slurm_train.sbatch).
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lm1b.config.checks import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` and the device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_max(self, value: float) -> float:
        """The largest `value` over all ranks (a stop flag, a non-finite flag)."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's `obj` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: object) -> list:
        """Every rank's `obj`, indexed by rank."""
        if not self.is_distributed:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def _export_slurm_rendezvous() -> None:
    """Under srun without torchrun, point every task at the job's first node (unless the
    sbatch script exported MASTER_ADDR / MASTER_PORT already)."""
    if "MASTER_ADDR" not in os.environ:
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        os.environ["MASTER_ADDR"] = hosts[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000))


def _choose_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device='cuda' is invalid here: torch sees no CUDA device (use 'auto' or 'cpu')"
        )
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _attempt_store(world_size: int, timeout: timedelta) -> dist.Store | None:
    """torchrun's agent store, namespaced by restart attempt; None outside torchrun.

    Why: torchrun keeps one TCPStore server for all restarts of a job and its workers join it
    without a per-attempt prefix, so after an elastic restart a rank could read the gloo/NCCL
    addresses its crashed peers published in the previous attempt (seen as "Connection
    refused" or a hang in gloo's connectFullMesh). Our own prefix makes every attempt start
    from an empty namespace.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"lm1b/attempt_{attempt}", store)


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group described by the environment (none for a single process).

    NCCL drives GPUs and gloo CPUs; a single process never creates a group.
    """
    world_size = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    device = _choose_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if "RANK" not in os.environ:
            _export_slurm_rendezvous()
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(minutes=30)  # torch's default for both backends
        store = _attempt_store(world_size, timeout)
        if store is None:
            dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        else:
            dist.init_process_group(
                backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
            )
        logger.info("rank %d/%d joined the %s group on %s", rank, world_size, backend, device)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


# No return annotation: postponed annotations make it a string, which DDP's hook check rejects.
def bf16_allreduce_hook(process_group, bucket):
    """DDP communication hook: the bucket's gradients averaged over ranks, sent in bf16;
    returns a Future of the bucket's flat tensor.

    The same arithmetic as torch's `default_hooks.bf16_compress_hook`, which DDP accepts only
    with NCCL (or XCCL); this one also runs over gloo, so it is tested on a CPU.
    """
    group = process_group or dist.group.WORLD
    flat = bucket.buffer()  # (bucket elements,) fp32 gradients of this rank
    compressed = flat.to(torch.bfloat16).div_(group.size())
    future = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(done: torch.futures.Future) -> torch.Tensor:
        flat.copy_(done.value()[0])
        return flat

    return future.then(decompress)


def ddp_lstm_stack(
    stack: nn.Module, ctx: DistContext, bf16_grads: bool = False
) -> DistributedDataParallel:
    """A DDP wrapper of the dense LSTM stack `stack` for the training forward and backward;
    the model keeps `stack` itself (saved, evaluated and inspected unwrapped), and the
    vocabulary tables stay outside (their sparse rows are exchanged by the step). Building it
    broadcasts rank 0's weights. `bf16_grads`: DDP all-reduces the gradients in bf16, half the
    bytes (docs/performance.md), each averaged gradient rounded to bf16."""
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = DistributedDataParallel(stack, device_ids=device_ids, broadcast_buffers=False)
    if bf16_grads:
        ddp.register_comm_hook(None, bf16_allreduce_hook)
    return ddp


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
