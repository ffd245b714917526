"""From timed candidates to the benchmark's records (bench.json) and its printed table.

Speed-ups are medians over passes of per-pass ratios to the faster of the two BIGLSTM
implementations in that same pass: on a shared machine a slow pass slows every variant alike,
so the ratio survives noise that the absolute times do not. With neither BIGLSTM in the run
(not asked for, or failed) the ratios are None and print as "-". `vs cuDNN` is the same ratio
to the cuDNN BIGLSTM alone: the baseline issue 8's targets (the paper's ratios) are set against.

When the variants are timed in groups (lm1b.benchmark.session), both BIGLSTMs are timed in
every pass of every group and each other variant in its own group's passes only: a variant's
ratios are taken when its group ends, against the BIGLSTMs' latest passes, which are its own.
"""

from __future__ import annotations

import statistics

from lm1b.benchmark.breakdown import PARTS
from lm1b.benchmark.candidates import Candidate
from lm1b.benchmark.timing import PHASES
from lm1b.models.acceleration import fast_path_status

BASELINES = ("biglstm", "biglstm_cudnn")
CUDNN = "biglstm_cudnn"
# The paper's (v3) words/sec ratios over BIGLSTM on 4x V100 (docs/models.md).
PAPER_RATIOS = {"flstm_r512": 1.67, "glstm_k2": 1.39, "glstm_k4": 1.66, "glstm_k8": 1.73}


def baseline_seconds(
    candidates: list[Candidate], names: tuple[str, ...] = BASELINES
) -> list[float] | None:
    """Per pass, the step time of the fastest of `names` (default: the faster BIGLSTM); None
    when none of them was run."""
    times = [c.seconds for c in candidates if c.name in names]
    if not times:
        return None
    return [min(per_pass) for per_pass in zip(*times, strict=True)]


def ratio_to_baseline(candidate: Candidate, baseline: list[float] | None) -> float | None:
    """Median over the candidate's passes of (faster BIGLSTM's step time in the same pass /
    this variant's step time). The baseline is timed in every pass; the candidate's passes
    are its latest ones (see the module's docstring)."""
    if baseline is None:
        return None
    own_passes = baseline[len(baseline) - len(candidate.seconds) :]
    return statistics.median(b / s for b, s in zip(own_passes, candidate.seconds, strict=True))


def memory_bytes(candidate: Candidate) -> int:
    """State bytes, plus on CUDA the median peak allocated above them during its steps."""
    transient = statistics.median(candidate.transient_bytes) if candidate.transient_bytes else 0
    return candidate.state_bytes() + int(transient)


def breakdown_ms(candidate: Candidate) -> dict[str, float] | None:
    """Median ms of each phase of the breakdown's steps; None before the breakdown ran."""
    if not candidate.phase_seconds:
        return None
    return {phase: 1e3 * statistics.median(s) for phase, s in candidate.phase_seconds.items()}


def variant_record(
    candidate: Candidate,
    baselines: tuple[list[float] | None, list[float] | None],
    biglstm_flops: float | None,
) -> dict:
    """One variant's entry of bench.json's `variants` list, but its `peak_fraction` (see
    with_peak_fractions); `baselines`: the per-pass step times of the faster BIGLSTM and of the
    cuDNN BIGLSTM."""
    faster_biglstm, cudnn = baselines
    model = candidate.cfg.model
    seconds = statistics.median(candidate.seconds)
    words_per_sec = candidate.words_per_step / seconds
    tflops = candidate.flops_per_word * words_per_sec / 1e12
    return {
        "name": candidate.name,
        "model_type": model.type,
        "factor_rank": model.factor_rank if model.type == "flstm" else None,
        "num_groups": model.groups_per_layer(),
        "rnn_params": candidate.rnn_params,
        "precision": candidate.precision,
        "seconds_per_step": seconds,
        "pass_seconds_per_step": candidate.seconds,
        "words_per_sec": words_per_sec,
        "ratio_to_biglstm": ratio_to_baseline(candidate, faster_biglstm),
        "ratio_to_cudnn": ratio_to_baseline(candidate, cudnn),
        "paper_ratio": PAPER_RATIOS.get(candidate.name),
        "flops_per_word": candidate.flops_per_word,
        "flop_ratio": None if biglstm_flops is None else biglstm_flops / candidate.flops_per_word,
        "tflops": tflops,
        "memory_bytes": memory_bytes(candidate),
        "breakdown_ms": breakdown_ms(candidate),
        "accounting_ms": candidate.accounting_ms,
        "skipped_steps": candidate.skipped_steps,
        "host_syncs_per_step": candidate.host_syncs,
        "fast_paths": candidate.fast_paths,  # switched on at build
        "fast_paths_engaged": fast_path_status(candidate.model),  # still on after the steps
        "build_seconds": candidate.build_seconds,
        "warmup_seconds": candidate.warmup_seconds,
    }


def variant_records(candidates: list[Candidate]) -> list[dict]:
    """One record per candidate (variant_record), in the order they ran."""
    baselines = baseline_seconds(candidates), baseline_seconds(candidates, (CUDNN,))
    dense = [c.flops_per_word for c in candidates if c.name == "biglstm"]
    return [variant_record(c, baselines, dense[0] if dense else None) for c in candidates]


def with_peak_fractions(records: list[dict], ceiling_tflops: float) -> list[dict]:
    """The records with each one's achieved TFLOP/s as a share of the matmul ceiling, taken at
    write time: the ceiling is a median over the whole run, records of a freed group included."""
    return [{**r, "peak_fraction": r["tflops"] / ceiling_tflops} for r in records]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _phases(breakdown: dict[str, float] | None) -> str:
    """The breakdown's columns: forward, backward and optimizer ms ("-" before it ran)."""
    if breakdown is None:
        return " ".join(f"{'-':>7}" for _ in PHASES)
    return " ".join(f"{breakdown[phase]:>7.1f}" for phase in PHASES)


def mixed_precision(records: list[dict], precision: str) -> bool:
    """Whether a variant runs in another precision than the run's (the header's)."""
    return any(r["precision"] != precision for r in records)


def format_table(records: list[dict], precision: str) -> str:
    """The records as a fixed-width table, one line per variant; with a `prec` column of each
    variant's precision when one differs from the run's `precision` (the header's)."""
    mixed = mixed_precision(records, precision)
    lines = [
        f"{'variant':<14} {'RNN params':>11} {'ms/step':>9} {'words/sec':>10} {'vs BIG':>7} "
        f"{'vs cuDNN':>8} {'paper':>6} {'FLOPs':>6} {'GFLOP/w':>8} {'TFLOP/s':>8} {'% peak':>7} {'mem MB':>8} "
        f"{'fwd ms':>7} {'bwd ms':>7} {'opt ms':>7} {'syncs':>5}"
        + (f" {'prec':>5}" if mixed else "")
    ]
    for r in records:
        lines.append(
            f"{r['name']:<14} {r['rnn_params']:>11,} {r['seconds_per_step'] * 1e3:>9.1f} "
            f"{r['words_per_sec']:>10,.0f} {_ratio(r['ratio_to_biglstm']):>7} "
            f"{_ratio(r['ratio_to_cudnn']):>8} {_ratio(r['paper_ratio']):>6} {_ratio(r['flop_ratio']):>6} "
            f"{r['flops_per_word'] / 1e9:>8.3g} {r['tflops']:>8.3g} "
            f"{100 * r['peak_fraction']:>6.1f}% {r['memory_bytes'] / 2**20:>8,.1f} "
            f"{_phases(r['breakdown_ms'])} {_count(r['host_syncs_per_step']):>5}"
            + (f" {r['precision']:>5}" if mixed else "")
        )
    return "\n".join(lines)


def format_accounting(records: list[dict]) -> str:
    """The step-time accounting (lm1b.benchmark.breakdown) as a table: one line per part, ms
    per step and its share, one column per variant that has one."""
    records = [r for r in records if r.get("accounting_ms")]
    if not records:
        return ""
    header = f"{'part':<24}" + "".join(f"{r['name']:>17}" for r in records)
    lines = [header]
    totals = [sum(r["accounting_ms"].values()) for r in records]
    for part, label in PARTS.items():
        cells = [
            f"{r['accounting_ms'][part]:>9.1f} {100 * r['accounting_ms'][part] / total:>5.1f}%"
            for r, total in zip(records, totals, strict=True)
        ]
        lines.append(f"{label:<24}" + "".join(f"{cell:>17}" for cell in cells))
    lines.append(f"{'step':<24}" + "".join(f"{total:>9.1f}{'':>8}" for total in totals))
    return "\n".join(lines)
