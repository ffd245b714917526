"""What `lm1b.bench` prints from bench.json's content: the run's header lines, the table
(lm1b.benchmark.report), the groups, fast paths, failures and warnings, the column notes and
the step-time accounting."""

from __future__ import annotations

from lm1b.benchmark.report import format_accounting, format_table, mixed_precision
from lm1b.benchmark.session import GIB


def _count(number: int, noun: str) -> str:
    """'1 thread', '2 threads', '10 passes'."""
    plural = "es" if noun.endswith("s") else "s"
    return f"{number} {noun}{plural * (number != 1)}"


def paths_on(paths: dict[str, bool]) -> str:
    """'cuda_graphs+fused_cell': the fast paths that are on."""
    return "+".join(path for path, on in paths.items() if on)


def _numerics(report: dict) -> str:
    """'bf16', or on CUDA 'bf16, TF32 on'."""
    if report["tf32"] is None:  # a CPU: no TF32
        return report["precision"]
    return f"{report['precision']}, TF32 {'on' if report['tf32'] else 'off'}"


def _groups(plan: dict) -> list[str]:
    """The line naming the groups the variants were timed in, when there were several."""
    if len(plan["groups"]) == 1:
        return []
    groups = " | ".join(f"{i}: {' '.join(g)}" for i, g in enumerate(plan["groups"], 1))
    return [
        f"timed in {len(plan['groups'])} groups to fit {plan['free_bytes'] / GIB:.1f} GiB free less "
        f"{plan['margin_bytes'] / GIB:g} GiB (memory model, peak {plan['peak_estimated_bytes'] / GIB:.1f} "
        f"GiB): {groups}; each variant's ratios are to the BIGLSTMs of its own group's passes"
    ]


def format_report(report: dict) -> str:
    """The header lines, the table, the failures and the column notes that the command prints."""
    machine = f"{report['device_name']} ({report['device']}"
    if report["device_memory_bytes"] is not None:
        machine += f", {report['device_memory_bytes'] / GIB:.0f} GiB"
    versions = f"torch {report['torch']}, CUDA {report['cuda']}, cuDNN {report['cudnn']}"
    shape = (
        f"size {report['size']}, V {report['vocab_size']:,}, B {report['batch_size']}, "
        f"T {report['num_steps']}, S {report['num_sampled']:,}, {_numerics(report)}"
    )
    overrides = f" {' '.join(report['overrides'])}" if report["overrides"] else ""
    lines = [
        f"{report['date']} | {machine}), {_count(report['threads'], 'thread')} | {versions}",
        f"preset {report['preset']}{overrides}: {shape} | {_count(report['passes'], 'pass')} of "
        f"{_count(report['steps_per_pass'], 'step')} after {report['warmup_steps']} warm-up "
        f"steps | matmul ceiling {report['ceiling_tflops']:.3f} TFLOP/s, copy ceiling "
        f"{report['copy_ceiling_gbps']:,.1f} GB/s",
        *_groups(report["memory_plan"]),
        format_table(report["variants"], report["precision"]),
    ]
    fast = [
        f"{r['name']} {paths_on(r['fast_paths'])} (engaged: {paths_on(r['fast_paths_engaged']) or 'none'})"
        for r in report["variants"]
        if any(r["fast_paths"].values())
    ]
    if fast:
        lines.append(f"fast paths: {', '.join(fast)}")
    lines += [f"FAILED {name}: {error}" for name, error in report["failed"].items()]
    lines += [
        f"WARNING {r['name']}: {r['skipped_steps']} steps skipped as non-finite (no update)"
        for r in report["variants"]
        if r["skipped_steps"]
    ]
    lines.append(
        "vs BIG: median over passes of (faster BIGLSTM's step time / this one's); vs cuDNN: the "
        "same against the cuDNN BIGLSTM; paper: v3 on 4x V100; FLOPs: BIGLSTM's FLOPs / this one's; GFLOP/w: forward + backward per word "
        "(LSTM stack + sampled softmax); % peak: of the matmul ceiling; mem: "
        f"{report['memory']}; fwd/bwd/opt: median ms of each phase over "
        f"{report['breakdown_steps']} steps synchronised between phases; syncs: times one step "
        "waited for the GPU (CUDA's sync debug mode)"
    )
    if mixed_precision(report["variants"], report["precision"]):
        lines[-1] += f"; prec: the variant's precision where they are not all {report['precision']}"
    accounting = format_accounting(report["variants"])
    if accounting:
        lines += [
            f"\nwhere the step's time goes (ms per step and share, {report['breakdown_steps']} "
            "steps with their ranges timed; lm1b.benchmark.breakdown says what each part holds):",
            accounting,
        ]
    return "\n".join(lines)
