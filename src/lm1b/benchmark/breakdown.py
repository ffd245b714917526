"""The step-time accounting: every millisecond of a variant's training step in one part.

A few more steps of the variant run with their ranges timed (`lm1b.models.scopes`: the code
marks them; `timed_ranges` times them, on a CPU by the clock, on CUDA by events on the stream),
which gives each range's inclusive time per step; `account` turns the ranges into disjoint parts
that add up to the timed step:

    LSTM per-step products     the recurrent side, each time step: h_{t-1} W_hh, m_t P and
                               their backward products
    LSTM window products       over all T*B rows at once: the input side x W_ih and every
                               weight gradient
    cell math                  the pointwise cell math, forward and backward
    time-loop overhead         the rest of the time loops: Python, dispatch, per-step copies
    LSTM other                 the rest of the layers: buffers, transposed copies
    sampler, softmax forward   the sample set; the sampled (or full) softmax loss's forward
    other backward             the backward outside the LSTM: softmax, embedding, dropout
    tables                     the tables' gradients (exchange, scaling, checks) and optimizer
    clip, optimizer, EMA       clipping, the LSTM weights' optimizer, the EMA
    rest                       the step outside all of these: embedding and dropout forward,
                               loss bookkeeping, the host sync, zero_grad

With CUDA graphs the LSTM's layers replay as graphs, their inner ranges do not run, and the
layers' time falls under `rest` and `other backward`. The cuDNN baseline's nn.LSTM is one
opaque call: its forward counts as `LSTM other`, its backward under `other backward`.
"""

from __future__ import annotations

import torch

from lm1b.benchmark.candidates import Candidate
from lm1b.benchmark.timing import synchronize
from lm1b.models import scopes

PARTS = {
    "step_products": "LSTM per-step products",
    "window_products": "LSTM window products",
    "cell": "cell math",
    "loop_overhead": "time-loop overhead",
    "lstm_other": "LSTM other",
    "sampler": "sampler",
    "softmax": "softmax forward",
    "other_backward": "other backward",
    "tables": "tables",
    "clip": "clip",
    "optimizer": "optimizer",
    "ema": "EMA",
    "rest": "rest",
}
RANGES = (
    scopes.LSTM_FORWARD,
    scopes.LSTM_BACKWARD,
    scopes.TIME_LOOP,
    scopes.STEP_PRODUCTS,
    scopes.WINDOW_PRODUCTS,
    scopes.CELL,
    scopes.SAMPLER,
    scopes.SOFTMAX,
    scopes.BACKWARD,
    scopes.TABLES,
    scopes.CLIP,
    scopes.OPTIMIZER,
    scopes.EMA,
    scopes.STEP,
)


def account(ranges: dict[str, float]) -> dict[str, float]:
    """The parts (PARTS' keys, in its order) from each range's time per step (ms; a range that
    never ran counts 0). The per-step products and the cell run inside the time loops; the
    loops and the window products inside the layers; the layers' backward inside the backward."""
    r = {name: ranges.get(name, 0.0) for name in RANGES}
    lstm = r[scopes.LSTM_FORWARD] + r[scopes.LSTM_BACKWARD]
    parts = {
        "step_products": r[scopes.STEP_PRODUCTS],
        "window_products": r[scopes.WINDOW_PRODUCTS],
        "cell": r[scopes.CELL],
        "loop_overhead": r[scopes.TIME_LOOP] - r[scopes.STEP_PRODUCTS] - r[scopes.CELL],
        "lstm_other": lstm - r[scopes.TIME_LOOP] - r[scopes.WINDOW_PRODUCTS],
        "sampler": r[scopes.SAMPLER],
        "softmax": r[scopes.SOFTMAX],
        "other_backward": r[scopes.BACKWARD] - r[scopes.LSTM_BACKWARD],
        "tables": r[scopes.TABLES],
        "clip": r[scopes.CLIP],
        "optimizer": r[scopes.OPTIMIZER],
        "ema": r[scopes.EMA],
    }
    parts["rest"] = r[scopes.STEP] - sum(parts.values())
    return parts


def time_accounting(candidate: Candidate, num_steps: int, device: torch.device) -> None:
    """Time the ranges of `num_steps` more steps of the candidate; their accounting (ms per
    step per part) into candidate.accounting_ms."""
    synchronize(device)
    with scopes.timed_ranges(device) as clock:
        for _ in range(num_steps):
            candidate.train_step()
        seconds = clock.seconds()
    candidate.accounting_ms = account({k: 1e3 * v / num_steps for k, v in seconds.items()})
