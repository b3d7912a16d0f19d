"""A training run's curves as a PNG: reward mean ± spread per step and the eval score, drawn with
matplotlib's Agg backend (imported on first use, so a server that never draws never pays for it)."""

from __future__ import annotations

import io
from collections.abc import Sequence


def training_chart(
    title: str,
    rewards: Sequence[tuple[int, float, float]],  # (step, mean, std)
    evals: Sequence[tuple[int, float]],  # (step, score)
    best_step: int | None = None,
    total_steps: int | None = None,
) -> bytes:
    """The chart as PNG bytes. Blocking (tens of milliseconds): call it from a worker thread."""
    # The object API with a canvas of our own: no pyplot, so no global figure state shared by threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if rewards:
        steps = [s for s, _, _ in rewards]
        means = [m for _, m, _ in rewards]
        low = [m - d for _, m, d in rewards]
        high = [m + d for _, m, d in rewards]
        axes.fill_between(steps, low, high, color="tab:blue", alpha=0.15, linewidth=0, label="reward ± std")
        axes.plot(
            steps, means, color="tab:blue", marker="o" if len(steps) <= 40 else None, markersize=3, label="reward mean"
        )
    if evals:
        axes.plot(
            [s for s, _ in evals],
            [v for _, v in evals],
            color="tab:orange",
            marker="s",
            markersize=4,
            label="eval score",
        )
        best = [(s, v) for s, v in evals if s == best_step]
        if best:
            axes.scatter(
                [best[0][0]],
                [best[0][1]],
                s=90,
                facecolors="none",
                edgecolors="tab:red",
                zorder=3,
                label="best checkpoint",
            )
    if total_steps:
        axes.set_xlim(0, max(total_steps, 1) + 0.5)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("step")
    axes.set_ylabel("reward / score (0-1)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    if rewards or evals:
        axes.legend(loc="lower right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
