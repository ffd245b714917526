"""The table's picture: validation perplexity against training time, and words/sec bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import FuncFormatter  # noqa: E402

from lm1b.benchmark.runs import VariantResult  # noqa: E402


def plot_table(
    results: list[VariantResult], title: str, path: Path, kneser_ney: float | None = None
) -> None:
    """Two panels side by side, one colour per variant in both; saved as a PNG at `path`.
    `kneser_ney`: the n-gram baseline's perplexity on the same text, drawn as a line."""
    colors = {r.name: plt.cm.tab10(index % 10) for index, r in enumerate(results)}
    fig, (curves, bars) = plt.subplots(
        1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]}
    )
    for r in results:
        if r.curve:
            minutes = [seconds / 60 for seconds, _ in r.curve]
            ppl = [value for _, value in r.curve]
            label = f"{r.name} (test {r.perplexity:.1f})"
            curves.plot(minutes, ppl, marker="o", color=colors[r.name], label=label)
    if kneser_ney is not None:
        curves.axhline(
            kneser_ney, color="black", linestyle="--", label=f"Kneser-Ney 5-gram ({kneser_ney})"
        )
    curves.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 200, not 2 x 10^2
    curves.yaxis.set_major_formatter(plain)
    curves.yaxis.set_minor_formatter(plain)
    curves.set_xlim(left=0)
    curves.set_xlabel("training wall-clock (minutes, validation excluded)")
    curves.set_ylabel("validation perplexity (log scale)")
    curves.set_title("perplexity against training time")
    curves.grid(True, which="both", alpha=0.3)
    curves.legend(fontsize=9)
    names = [r.name for r in results]
    speeds = [r.words_per_sec for r in results]
    bars.barh(names, speeds, color=[colors[n] for n in names])
    bars.invert_yaxis()  # same top-to-bottom order as the legend
    for y, speed in enumerate(speeds):
        bars.text(speed, y, f" {speed:,.0f}", va="center", fontsize=9)
    bars.set_xlim(0, max(speeds) * 1.2)
    bars.set_xlabel("training words/sec")
    bars.set_title("training speed")
    bars.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
