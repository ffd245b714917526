"""A training step waits for the device once, to read its flags, loss and norm (step.py).

On a GPU every other wait stalls the launch queue. Checked here on the CPU: every operation a
step dispatches is recorded, and none may be one that waits for a CUDA device: a value read to
the host (.item(), int(t), bool(t)), an output whose size depends on the data (unique, nonzero,
masked_select, boolean indexing, sparse coalesce) or a tensor made from host data
(torch.tensor / new_tensor: on a GPU a blocking copy from pageable memory). The one intended
read, `.tolist()` of the flags, dispatches nothing on the CPU. The dense LSTM optimizer (torch's
foreach Adagrad or Adam) is left out: it reads its step counters, which live on the host even
for CUDA parameters. The GPU check counts the waits on a real device too (lm1b.commands.bench).
"""

from __future__ import annotations

import pytest
import torch
from wait_audit import WaitAudit, paused

from lm1b.benchmark.candidates import build_candidate, compose_variant_config
from lm1b.config.bench import PRESETS


@pytest.mark.parametrize("variant", ["biglstm", "flstm_r512", "glstm_k2"])
@pytest.mark.parametrize("optim", ["adagrad", "adam"])
def test_a_training_step_never_waits_for_the_device(variant, optim):
    """Forward with the sampled softmax, backward, the tables' gradients, clipping, the flags
    with the loop's votes, the table optimizer and the EMA: nothing that waits."""
    cfg = compose_variant_config(variant, PRESETS["tiny"], "fp32", [f"optim={optim}"])
    candidate = build_candidate(variant, cfg, torch.device("cpu"), seed=0)
    runner = candidate.runner
    runner.run(candidate.batches[0], 1, [0.0, 0.0])  # optimizer state and carried state exist
    audit = WaitAudit()
    dense = runner.optimizers.optimizers[0]
    dense.step = paused(audit, dense.step)
    with audit:
        for step in (2, 3):
            result = runner.run(candidate.batches[step], step, [0.0, 1.0])
    assert audit.found == []
    assert not result.skipped and result.votes == (0.0, 1.0)  # the steps were taken


def test_the_audit_sees_each_kind_of_wait():
    """The audit is not blind: each kind of waiting operation is recorded."""
    x = torch.arange(6.0)
    sparse = torch.sparse_coo_tensor(torch.tensor([[1, 1]]), torch.ones(2, 2), (4, 2))
    cases = {
        "item": lambda: x.sum().item(),
        "unique": lambda: torch.unique(x),
        "mask": lambda: x[x > 2],
        "new_tensor": lambda: x.new_tensor(3),
        "coalesce": lambda: sparse.coalesce(),
        "nonzero": lambda: x.nonzero(),
    }
    for name, case in cases.items():
        audit = WaitAudit()
        with audit:
            case()
        assert audit.found, name
