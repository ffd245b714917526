"""Process-group set-up for one process, torchrun (one node or several), and SLURM's srun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A job started by
`srun python -m lm1b.train` without torchrun has SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID
instead; the sbatch script exports MASTER_ADDR and MASTER_PORT (see scripts/slurm_train.sbatch).
Each rank drives one of the GPUs it can see, chosen from its local rank (`_choose_device`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import uuid
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
    """The device this rank drives; a GPU becomes the current CUDA device.

    The local rank counts the ranks of this node, but the GPUs a process sees depend on the
    launch: torchrun, and srun without GPU binding, show every rank all the node's GPUs (local
    rank i drives GPU i); SLURM's per-task binding (`--gpus-per-task=k`, `--gpu-bind`) shows each
    task only its own k GPUs, numbered from 0 (CUDA_VISIBLE_DEVICES per task), so a local rank
    of k or more is no GPU index there ("invalid device ordinal"). The local rank modulo the
    visible count is right in both: GPU i, or GPU i % k of the task's own (cuda:0 when k = 1).
    """
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device='cuda' is invalid here: torch sees no CUDA device (use 'auto' or 'cpu')"
        )
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    index = local_rank % visible
    torch.cuda.set_device(index)
    logger.info(
        "local rank %d drives cuda:%d of the %d GPU(s) it sees (CUDA_VISIBLE_DEVICES=%s)",
        local_rank,
        index,
        visible,
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
    )
    return torch.device("cuda", index)


def _warn_if_gpu_shared(store: dist.Store, rank: int, device: torch.device) -> None:
    """Warn when another rank of this job drives the same GPU as this one.

    That happens when a node runs more ranks than the GPUs each of them sees (torchrun
    --nproc-per-node above the GPU count, srun tasks sharing fewer GPUs than there are tasks):
    the modulo in `_choose_device` then wraps around. NCCL refuses it only at the first
    collective, with "Duplicate GPU detected"; this names the cause first. Each rank counts
    itself in the job's store under its GPU's UUID (unique across machines), so nothing runs on
    the GPU that may be shared.
    """
    if device.type != "cuda":
        return
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    users = store.add(f"{_GPU_KEY_PREFIX}{uuid}", 1)
    if users > 1:
        logger.warning(
            "rank %d drives GPU %s (%s here), which %d other rank(s) of this job drive too: give "
            "each rank its own GPU (srun --gpus-per-task=1, or at most as many torchrun workers "
            "per node as it has GPUs)",
            rank,
            uuid,
            device,
            users - 1,
        )


_GPU_KEY_PREFIX = "lm1b/ranks_on_gpu/"


def _worker_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store | None:
    """Under torchrun, a store that only this attempt's workers share; None outside torchrun.

    Why: torchrun (c10d rendezvous) keeps one TCPStore server for every round of a job and
    points every attempt's workers at it, so stale keys survive a restart: a new rank could
    read the gloo/NCCL addresses of its dead predecessors ("Connection refused" in gloo's
    connectFullMesh). A prefix per TORCHELASTIC_RESTART_COUNT cannot cure that: the count is
    each agent's own, and after one node's worker dies only that node's agent counts a
    restart (the other restarts for the membership change, uncounted), so the ranks of the
    new round would look in different namespaces and wait there for 30 min.

    Instead rank 0 serves a new TCPStore (the process group's) on a free port and publishes
    where to find it and a random token in torchrun's store. Every agent stops its workers
    before the next round, so an address left by an earlier attempt belongs to a dead process:
    the other ranks retry until an address answers and the server holds the published token.
    Rank 0's host is published two ways, since neither always works: MASTER_ADDR (right when
    rank 0 runs on the rendezvous host, where its own name may resolve to a loopback address)
    and the address of the interface that routes to MASTER_ADDR (right when it runs elsewhere).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    host = os.environ["MASTER_ADDR"]
    agent_store = dist.TCPStore(
        host, int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    if rank == 0:
        token = uuid.uuid4().hex
        # The server listens on every interface; its own client reaches it over loopback
        # (MASTER_ADDR need not be this node).
        store = dist.TCPStore(
            "localhost", 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False
        )
        store.set(_TOKEN_KEY, token)
        hosts = " ".join(dict.fromkeys([host, _address_towards(host)]))
        agent_store.set(_ADDRESS_KEY, f"{store.port} {token} {hosts}")
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        # Blocks (up to `timeout`) until rank 0 of some attempt has published.
        port, token, *hosts = agent_store.get(_ADDRESS_KEY).decode().split(" ")
        for address in hosts:
            store = _connect_if_live(address, int(port), token, world_size)
            if store is not None:
                store.set_timeout(timeout)
                return store
        if time.monotonic() > deadline:
            raise TimeoutError(f"no live rank 0 store at {hosts} port {port} after {timeout}")
        time.sleep(0.2)


def _env_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """The store `init_method="env://"` would build (rank 0 serves it at MASTER_ADDR:MASTER_PORT),
    built here so that `_warn_if_gpu_shared` can use it too."""
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0,
        timeout=timeout,
    )


_ADDRESS_KEY = "lm1b/rank0_store"
_TOKEN_KEY = "lm1b/token"


def _address_towards(host: str) -> str:
    """This machine's address on the route to `host`, which the other nodes can reach."""
    family, kind, _, _, address = socket.getaddrinfo(host, 1, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind) as probe:
        probe.connect(address)  # UDP: picks the route, sends nothing
        return probe.getsockname()[0]


def _connect_if_live(host: str, port: int, token: str, world_size: int) -> dist.Store | None:
    """A client of the store at host:port if it is the one that published `token`, else None."""
    try:  # a plain probe first: a dead server refuses at once (TCPStore would retry and log)
        socket.create_connection((host, port), timeout=5).close()
        store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timedelta(seconds=5))
    except (OSError, RuntimeError):
        return None
    if not store.check([_TOKEN_KEY]) or store.get(_TOKEN_KEY).decode() != token:
        return None  # another job's store on a reused port
    return store


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
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(minutes=30)  # torch's default for both backends
        store = _worker_store(rank, world_size, timeout)
        if store is None:
            store = _env_store(rank, world_size, timeout)
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
        logger.info("rank %d/%d joined the %s group on %s", rank, world_size, backend, device)
        _warn_if_gpu_shared(store, rank, device)
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
