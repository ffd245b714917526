"""`python -m lm1b.plan [size=paper|cpu|tiny] [max_rnn_params=N] [max_params=N]
[min_words_per_sec=X bench=bench.json]`: which F-LSTM ranks and G-LSTM group counts fit a
budget (the automatic choice the paper leaves to future work).

The sizes (n, p, V, S) come from `size=` exactly as for training (configs/size/); a size that
leaves V to the data needs `model.vocab_size=<V>` (or a data.vocab_file that exists). For every
candidate (BIGLSTM; F-LSTM at each power-of-two rank with fewer parameters than the dense map;
G-LSTM at every
power-of-two k up to 16 that divides n and p, the same k in every layer or, hierarchically,
more groups in deeper layers) the table gives:

- parameters, counted on a meta-device build (`lm1b.models.counts.count_parameters`, no weights
  allocated, so paper size costs milliseconds);
- training FLOPs per word (forward + backward), analytically: a weight matrix element is one
  multiply-add per token in the forward pass and two in the backward (input gradient and weight
  gradient), so FLOPs = 6 * (elements of the LSTM stack's weight matrices) + 6 * (S + 1) * p for
  the sampled softmax (S sampled logits plus the true one, width p). Biases, gate nonlinearities,
  the embedding lookup and the optimizer are not counted (under 0.1% at paper size). This gives
  0.956 / 0.365 / 0.554 / 0.352 / 0.252 GFLOP for BIGLSTM / F512 / G2 / G4 / G8 against
  docs/performance.md's 0.96 / 0.37 / 0.56 / 0.35 / 0.25;
- words/sec: measured when the benchmark's bench.json has the variant (same name), otherwise
  predicted as the measured BIGLSTM speed times the FLOP ratio BIGLSTM / variant. The
  prediction is optimistic: it assumes the step time is all arithmetic (docs/performance.md: the
  measured speed-ups were far below the FLOP ratios when launch overhead dominated).

- memory per GPU, from the memory model (`lm1b.training.memory`): the fixed part (weights,
  gradients, optimizer state, EMA) and the activations of `rows_per_gpu` sequences in
  `precision`, and the most sequences per GPU that fit each of `gpu_memory_gb` (2 GB kept for
  the CUDA context and workspaces).

Rows are sorted by RNN parameters, largest first: among the variants that fit, the largest is
listed first as the suggestion (more recurrent parameters gave lower perplexity in the paper).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.errors import HydraException

from lm1b.config import ConfigError
from lm1b.config.compose import compose_schema
from lm1b.config.data import DataConfig
from lm1b.config.model import ModelConfig
from lm1b.config.optim import OptimConfig
from lm1b.config.trainer import RESOLVED_PRECISIONS
from lm1b.models.counts import count_parameters, train_flops_per_word
from lm1b.models.language_model import build_language_model
from lm1b.tokenizer import resolve_vocab_size
from lm1b.training.memory import MemoryEstimate, estimate_training_memory

logger = logging.getLogger(__name__)

MIN_RANK = 8
MAX_GROUPS = 16


@dataclass
class PlanConfig:
    """Options of `python -m lm1b.plan` (configs/plan.yaml)."""

    # Set by the `size` group (configs/size/): n, p, V, S of every candidate; data is unused
    # here but the size files set its batch shape too.
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    max_rnn_params: int | None = None  # budget on the LSTM stack's parameters
    max_params: int | None = None  # budget on the whole model's parameters
    min_words_per_sec: float | None = None  # budget on training speed (needs `bench`)
    bench: str | None = None  # bench.json written by `python -m lm1b.bench` on this device
    ranks: list[int] | None = None  # F-LSTM ranks to try (null: powers of two, 8 .. 2p)
    groups: list[int] | None = None  # G-LSTM k to try (null: powers of two dividing n and p)
    per_layer_groups: bool = True  # also try more groups in deeper layers (e.g. [2, 4])
    output: str | None = None  # also write the table as JSON here
    # The memory columns: sequences per GPU, their precision, and the GPU sizes to fit.
    rows_per_gpu: int = 128
    precision: str = "bf16"
    gpu_memory_gb: list[float] = field(default_factory=lambda: [80.0, 141.0])


@dataclass
class Candidate:
    """One variant with its counts; words_per_sec is None without a benchmark."""

    name: str
    model: ModelConfig
    rnn_params: int = 0
    total_params: int = 0
    train_flops_per_word: float = 0.0
    words_per_sec: float | None = None
    speed_source: str = field(default="none")  # "measured", "predicted" or "none"
    memory: MemoryEstimate | None = None


def default_ranks(model: ModelConfig) -> list[int]:
    """Powers of two r >= MIN_RANK for which W1 (2p, r) and W2 (r, 4n) together are smaller
    than the dense (2p, 4n) map: r < 2p * 4n / (2p + 4n)."""
    two_p, four_n = 2 * model.projection_size, 4 * model.state_size
    ranks, rank = [], MIN_RANK
    while rank * (two_p + four_n) < two_p * four_n:
        ranks.append(rank)
        rank *= 2
    return ranks


def default_groups(model: ModelConfig) -> list[int]:
    """Powers of two k > 1 up to MAX_GROUPS that divide both n and p."""
    return [
        k
        for k in (2**e for e in range(1, MAX_GROUPS.bit_length()))
        if model.state_size % k == 0 and model.projection_size % k == 0
    ]


def candidate_models(base: ModelConfig, plan: PlanConfig) -> list[tuple[str, ModelConfig]]:
    """(name, model config) of BIGLSTM and every F-LSTM / G-LSTM candidate, named as the
    benchmark names them (flstm_r128, glstm_k4, hglstm_k2_k4)."""
    dense = dataclasses.replace(base, type="biglstm", factor_rank=None, num_groups=1)
    found = [("biglstm", dense)]
    for rank in plan.ranks or default_ranks(base):
        found.append((f"flstm_r{rank}", dataclasses.replace(dense, type="flstm", factor_rank=rank)))
    groups = plan.groups or default_groups(base)
    for k in groups:
        found.append((f"glstm_k{k}", dataclasses.replace(dense, type="glstm", num_groups=k)))
    if plan.per_layer_groups and base.num_layers > 1:
        for combo in itertools.combinations_with_replacement(sorted(groups), base.num_layers):
            if len(set(combo)) > 1:  # non-decreasing k: more groups in deeper layers
                name = "hglstm_" + "_".join(f"k{k}" for k in combo)
                found.append(
                    (name, dataclasses.replace(dense, type="glstm", num_groups=list(combo)))
                )
    return found


def measure(name: str, cfg: ModelConfig, vocab_size: int, plan: PlanConfig) -> Candidate:
    """Parameter counts, FLOPs and memory of one candidate, from a meta-device build."""
    with torch.device("meta"):
        model = build_language_model(cfg, vocab_size=vocab_size)
    counts = count_parameters(model)
    memory = estimate_training_memory(
        cfg,
        OptimConfig(),  # the recipe's
        vocab_size=vocab_size,
        rows=plan.rows_per_gpu,
        num_steps=plan.data.num_steps,
        precision=plan.precision,
        world_size=2,  # DDP's bucket copy counted: the plan is for several GPUs
    )
    return Candidate(
        name=name,
        model=cfg,
        rnn_params=counts["rnn"],
        total_params=counts["total"],
        train_flops_per_word=train_flops_per_word(model, cfg.num_sampled),
        memory=memory,
    )


def load_bench(path: str, vocab_size: int) -> dict[str, float]:
    """variant name -> measured words/sec, from the benchmark's bench.json; a warning when it
    measured another vocabulary size (its speeds then belong to other models)."""
    report = json.loads(Path(path).read_text())
    if report.get("vocab_size") not in (None, vocab_size):
        logger.warning(
            "%s measured V=%s but the plan uses V=%d: pass the size and model.vocab_size the "
            "benchmark ran with",
            path,
            report["vocab_size"],
            vocab_size,
        )
    return {v["name"]: float(v["words_per_sec"]) for v in report["variants"]}


def add_speeds(candidates: list[Candidate], measured: dict[str, float]) -> None:
    """Measured words/sec where the benchmark has the variant, else predicted from BIGLSTM's
    measured speed scaled by the FLOP ratio; nothing without a BIGLSTM measurement."""
    flops = {c.name: c.train_flops_per_word for c in candidates}
    baseline = measured.get("biglstm")
    for c in candidates:
        if c.name in measured:
            c.words_per_sec, c.speed_source = measured[c.name], "measured"
        elif baseline is not None:
            c.words_per_sec = baseline * flops["biglstm"] / c.train_flops_per_word
            c.speed_source = "predicted"


def fits(c: Candidate, plan: PlanConfig) -> bool:
    """True when the candidate meets every budget that is set."""
    if plan.max_rnn_params is not None and c.rnn_params > plan.max_rnn_params:
        return False
    if plan.max_params is not None and c.total_params > plan.max_params:
        return False
    if plan.min_words_per_sec is not None:
        return c.words_per_sec is not None and c.words_per_sec >= plan.min_words_per_sec
    return True


def make_plan(plan: PlanConfig) -> list[Candidate]:
    """Every candidate that fits the budget, largest RNN first."""
    if plan.min_words_per_sec is not None and plan.bench is None:
        raise ConfigError(
            f"min_words_per_sec={plan.min_words_per_sec} needs bench=<bench.json> "
            "(run `python -m lm1b.bench` on this device first)"
        )
    if plan.precision not in RESOLVED_PRECISIONS or plan.rows_per_gpu < 1:
        raise ConfigError(
            f"precision={plan.precision!r} and rows_per_gpu={plan.rows_per_gpu} must be one of "
            f"{list(RESOLVED_PRECISIONS)} and at least 1"
        )
    vocab_size = resolve_vocab_size(plan)
    candidates = [measure(n, m, vocab_size, plan) for n, m in candidate_models(plan.model, plan)]
    add_speeds(candidates, load_bench(plan.bench, vocab_size) if plan.bench else {})
    chosen = [c for c in candidates if fits(c, plan)]
    return sorted(chosen, key=lambda c: (-c.rnn_params, c.name))


def format_plan(candidates: list[Candidate], plan: PlanConfig) -> str:
    """The plan as a fixed-width table, with a line saying what the memory columns assume."""
    gpus = [f"{gb:g}GB" for gb in plan.gpu_memory_gb]
    lines = [
        f"{'variant':<16} {'RNN params':>13} {'total params':>15} {'GFLOP/word':>10} "
        f"{'words/sec':>11} {'speed':>9} {'fixed GB':>8} {'act GB':>7} "
        + " ".join(f"{'rows@' + g:>11}" for g in gpus)
    ]
    for c in candidates:
        speed = "-" if c.words_per_sec is None else f"{c.words_per_sec:,.0f}"
        fits_in = [c.memory.largest_batch(gb * 1e9) for gb in plan.gpu_memory_gb]
        lines.append(
            f"{c.name:<16} {c.rnn_params:>13,} {c.total_params:>15,} "
            f"{c.train_flops_per_word / 1e9:>10.3f} {speed:>11} {c.speed_source:>9} "
            f"{c.memory.fixed / 1e9:>8.1f} {c.memory.activations / 1e9:>7.2f} "
            + " ".join(f"{rows:>11,}" for rows in fits_in)
        )
    lines.append(
        f"memory per GPU (lm1b.training.memory): fixed = weights, gradients, optimizer state, "
        f"EMA; act = activations of {plan.rows_per_gpu} sequences x {plan.data.num_steps} "
        f"tokens in {plan.precision}; rows@ = most sequences per GPU that fit (2 GB reserved)"
    )
    return "\n".join(lines)


def plan_records(candidates: list[Candidate], plan: PlanConfig) -> list[dict]:
    """The plan as JSON-ready records."""
    return [
        {
            "name": c.name,
            "type": c.model.type,
            "factor_rank": c.model.factor_rank,
            "num_groups": c.model.groups_per_layer(),
            "rnn_params": c.rnn_params,
            "total_params": c.total_params,
            "train_flops_per_word": c.train_flops_per_word,
            "words_per_sec": c.words_per_sec,
            "speed_source": c.speed_source,
            "memory_fixed_bytes": c.memory.fixed,
            "memory_activation_bytes_per_row": c.memory.activations_per_row,
            "rows_per_gpu_that_fit": {
                f"{gb:g}GB": c.memory.largest_batch(gb * 1e9) for gb in plan.gpu_memory_gb
            },
        }
        for c in candidates
    ]


def main(argv: list[str] | None = None) -> None:
    try:
        plan = compose_schema("plan", PlanConfig, sys.argv[1:] if argv is None else argv)
        candidates = make_plan(plan)
    except (ConfigError, HydraException, FileNotFoundError, KeyError) as error:
        sys.exit(f"lm1b.plan: {error}")
    if plan.output:
        Path(plan.output).write_text(json.dumps(plan_records(candidates, plan), indent=2) + "\n")
    if not candidates:
        print("no variant fits the budget")
        return
    print(format_plan(candidates, plan))


if __name__ == "__main__":
    main()
