"""From timed candidates to the benchmark's records (bench.json) and its printed table.

Speed-ups are medians over passes of per-pass ratios to the faster of the two BIGLSTM
implementations in that same pass: on a shared machine a slow pass slows every variant alike,
so the ratio survives noise that the absolute times do not.
"""

from __future__ import annotations

import statistics

from lm1b.benchmark.candidates import Candidate

BASELINES = ("biglstm", "biglstm_cudnn")
# The paper's (v3) words/sec ratios over BIGLSTM on 4x V100 (REFERENCE.md).
PAPER_RATIOS = {"flstm_r512": 1.67, "glstm_k2": 1.39, "glstm_k4": 1.66, "glstm_k8": 1.73}


def baseline_seconds(candidates: list[Candidate]) -> list[float] | None:
    """Per pass, the step time of the faster BIGLSTM; None when neither baseline was run."""
    times = [c.seconds for c in candidates if c.name in BASELINES]
    if not times:
        return None
    return [min(per_pass) for per_pass in zip(*times, strict=True)]


def ratio_to_baseline(candidate: Candidate, baseline: list[float] | None) -> float | None:
    """Median over passes of (faster BIGLSTM's step time / this variant's step time)."""
    if baseline is None:
        return None
    return statistics.median(b / s for b, s in zip(baseline, candidate.seconds, strict=True))


def memory_bytes(candidate: Candidate) -> int:
    """State bytes, plus on CUDA the median peak allocated above them during its steps."""
    transient = statistics.median(candidate.transient_bytes) if candidate.transient_bytes else 0
    return candidate.state_bytes() + int(transient)


def variant_record(
    candidate: Candidate, baseline: list[float] | None, biglstm_flops: float | None, ceiling: float
) -> dict:
    """One variant's entry of bench.json's `variants` list."""
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
        "seconds_per_step": seconds,
        "pass_seconds_per_step": candidate.seconds,
        "words_per_sec": words_per_sec,
        "ratio_to_biglstm": ratio_to_baseline(candidate, baseline),
        "paper_ratio": PAPER_RATIOS.get(candidate.name),
        "flops_per_word": candidate.flops_per_word,
        "flop_ratio": None if biglstm_flops is None else biglstm_flops / candidate.flops_per_word,
        "tflops": tflops,
        "peak_fraction": tflops / ceiling,
        "memory_bytes": memory_bytes(candidate),
    }


def variant_records(candidates: list[Candidate], ceiling_tflops: float) -> list[dict]:
    """bench.json's `variants`: one record per candidate, in the order they ran."""
    baseline = baseline_seconds(candidates)
    dense = [c.flops_per_word for c in candidates if c.name == "biglstm"]
    return [
        variant_record(c, baseline, dense[0] if dense else None, ceiling_tflops) for c in candidates
    ]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(records: list[dict]) -> str:
    """The records as a fixed-width table, one line per variant."""
    lines = [
        f"{'variant':<14} {'RNN params':>11} {'ms/step':>9} {'words/sec':>10} {'vs BIG':>7} "
        f"{'paper':>6} {'FLOPs':>6} {'GFLOP/w':>8} {'TFLOP/s':>8} {'% peak':>7} {'mem MB':>8}"
    ]
    for r in records:
        lines.append(
            f"{r['name']:<14} {r['rnn_params']:>11,} {r['seconds_per_step'] * 1e3:>9.1f} "
            f"{r['words_per_sec']:>10,.0f} {_ratio(r['ratio_to_biglstm']):>7} "
            f"{_ratio(r['paper_ratio']):>6} {_ratio(r['flop_ratio']):>6} "
            f"{r['flops_per_word'] / 1e9:>8.3g} {r['tflops']:>8.3g} "
            f"{100 * r['peak_fraction']:>6.1f}% {r['memory_bytes'] / 2**20:>8,.1f}"
        )
    return "\n".join(lines)
