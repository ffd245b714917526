"""2-rank training equals 1-rank training on the same global batch: the dense stack's DDP
all-reduce and the vocabulary tables' sparse row exchange together give every rank the update
one process would compute (RELIABILITY.md; the trainer issue's "Done when")."""

from __future__ import annotations

import contextlib
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from wait_audit import WaitAudit, paused

from lm1b.config import compose_config
from lm1b.data.batch import Batch
from lm1b.models.language_model import build_language_model
from lm1b.training.distributed import DistContext
from lm1b.training.ema import ExponentialMovingAverage
from lm1b.training.optim import Optimizers
from lm1b.training.step import StepRunner

VOCAB, ROWS, STEPS = 64, 4, 3


def _config(optim: str, bf16_grads: bool = False):
    return compose_config(
        [
            "experiment=tiny",
            f"optim={optim}",
            "model.dropout=0",  # dropout draws differ between ranks by design
            "model.vocab_size=64",
            f"data.batch_size={ROWS}",
            # f-lm scaled embedding gradients by the per-GPU batch, which differs by topology.
            "optim.scale_embedding_grad_by_batch=false",
            f"trainer.ddp_bf16_grads={bf16_grads}",
        ]
    )


def _batches(num_steps: int) -> list[Batch]:
    generator = torch.Generator().manual_seed(123)
    ids = torch.randint(0, VOCAB, (num_steps, ROWS, 9), generator=generator)
    return [Batch(window[:, :-1].contiguous(), window[:, 1:].contiguous()) for window in ids]


def _train(
    rank: int,
    world_size: int,
    optim: str,
    bf16_grads: bool = False,
    audit: WaitAudit | None = None,
) -> dict:
    """STEPS steps of this rank's share of the global batches; the final weights. With
    `audit`, the steps after the first run under it (the dense optimizer's step left out:
    see tests/training/test_host_syncs.py)."""
    cfg = _config(optim, bf16_grads)
    torch.manual_seed(cfg.seed)
    model = build_language_model(cfg.model)
    ctx = DistContext(rank, world_size, 0, torch.device("cpu"))
    optimizers = Optimizers(model, cfg.optim)
    ema = ExponentialMovingAverage(list(model.rnn.parameters()), 0.999)
    runner = StepRunner(model, optimizers, ema, cfg, ctx)
    if audit is not None:
        optimizers.optimizers[0].step = paused(audit, optimizers.optimizers[0].step)
    share = ROWS // world_size
    for step, batch in enumerate(_batches(STEPS), start=1):
        rows = slice(rank * share, (rank + 1) * share)
        with audit if audit is not None and step > 1 else contextlib.nullcontext():
            result = runner.run(Batch(batch.inputs[rows], batch.targets[rows]), step, [0.0])
        assert not result.skipped
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["ema"] = torch.cat([s.flatten() for s in ema.shadow])
    return state


def _worker(rank: int, port: int, optim: str, bf16_grads: bool, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.save(_train(rank, 2, optim, bf16_grads), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _audited_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        audit = WaitAudit()
        _train(rank, 2, "adagrad", audit=audit)
        with open(os.path.join(out_dir, f"waits{rank}.json"), "w") as file:
            json.dump(audit.found, file)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("optim", "bf16_grads"), [("adagrad", False), ("adam", False), ("adagrad", True)]
)
def test_two_ranks_equal_one_rank_on_the_same_global_batch(tmp_path, optim, bf16_grads):
    args = (_free_port(), optim, bf16_grads, str(tmp_path))
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    single = _train(0, 1, optim)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # Up to the order of float additions; with bf16 gradients, up to their rounding too.
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if bf16_grads else {"rtol": 1e-5, "atol": 1e-6}
    for name, expected in single.items():
        # Every rank holds bitwise the same weights, vocabulary tables included ...
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0)
        # ... and they equal one process's.
        torch.testing.assert_close(ranks[0][name], expected, **tolerance, msg=name)
    if bf16_grads:  # the hook is in force: the LSTM weights carry bf16 rounding
        lstm = [n for n in single if n.startswith("rnn.")]
        worst = max((ranks[0][n] - single[n]).abs().max() / single[n].abs().max() for n in lstm)
        assert worst > 1e-4  # fp32 all-reduce stays within 1e-5 (the case above)
    untrained = _untrained(optim)
    moved = {n for n, before in untrained.items() if not torch.equal(single[n], before)}
    assert moved == set(untrained)  # the tables' sparse rows and every LSTM weight moved


def _untrained(optim: str) -> dict:
    cfg = _config(optim)
    torch.manual_seed(cfg.seed)
    return dict(build_language_model(cfg.model).state_dict())


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_two_rank_steps_never_wait_for_the_device(tmp_path):
    """With 2 ranks the step still waits only for its flags: the tables' rows are exchanged in
    sizes fixed by the batch, with no coalescing and no exchange of row counts."""
    mp.spawn(_audited_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"waits{rank}.json").read_text()) == []
