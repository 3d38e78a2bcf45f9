"""Plots as PNG bytes: a run's learning curve, and simulated learning curves with a band over seeds."""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, list[Any]]:
    """A figure and its axes, side by side, rendered off-screen (Agg): no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(width, height), dpi=100, squeeze=False)
    return fig, list(axes[0])


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def learning_curve_png(labelled: Sequence[int], curves: Mapping[str, Sequence[float | None]], title: str) -> bytes:
    """PNG bytes of a run's learning curves, each round's point labelled on the first curve.

    Args:
        curves: label -> [r] test figure per point, the first one accuracy; None (a round
            recorded before that figure was measured) leaves a gap.
    """
    fig, (ax,) = _figure(6, 4)
    for i, (label, values) in enumerate(curves.items()):
        ys = [math.nan if v is None else v for v in values]  # [r]
        ax.plot(labelled, ys, marker="o" if i == 0 else ".", linestyle="-" if i == 0 else "--", label=label)
        if i == 0:
            for x, y, r in zip(labelled, ys, range(len(labelled)), strict=True):
                ax.annotate(f"r{r}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("on the test split")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def simulation_png(labelled: Sequence[int], curves: Mapping[str, Mapping[str, Any]], title: str) -> bytes:
    """PNG bytes of simulated learning curves: per strategy its mean test accuracy over seeds,
    with a band from the lowest to the highest seed's, against the labelled images; and beside
    it the same of the balanced accuracy, where the curves have it.

    Args:
        curves: strategy -> {"mean": [r], "min": [r], "max": [r]}, optionally with
            "balanced_accuracy": the same three of the balanced accuracy.
    """
    panels = [("test accuracy", lambda curve: curve)]
    if all("balanced_accuracy" in curve for curve in curves.values()):
        panels.append(("test balanced accuracy", lambda curve: curve["balanced_accuracy"]))
    fig, axes = _figure(5.5 * len(panels) + 1.5, 4.5, len(panels))
    for ax, (ylabel, pick) in zip(axes, panels, strict=True):
        for name, curve in curves.items():
            figure = pick(curve)
            (line,) = ax.plot(labelled, figure["mean"], marker="o", markersize=3, label=name)
            ax.fill_between(labelled, figure["min"], figure["max"], color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("labelled images")
        ax.set_ylabel(ylabel)
        ax.set_title("mean over seeds; band: min-max of seeds", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    return _png(fig)


def heatmap_png(values: Sequence[Sequence[float | None]], rows: Sequence[str], columns: Sequence[str], title: str,
                xlabel: str, ylabel: str, number_format: str = "{:.2f}", vmax: float | None = None) -> bytes:
    """PNG bytes of a matrix as a heatmap, each cell written in it; None leaves a blank cell.

    Args:
        values: [row][column]; e.g. per-class accuracy [class][round], or a confusion matrix
            [true][predicted].
        vmax: the top of the colour scale; None: the largest value.
    """
    import numpy as np

    matrix = np.array([[math.nan if v is None else float(v) for v in row] for row in values], dtype=np.float64)
    height = max(2.5, 0.35 * len(rows) + 1.5)
    width = max(6.0, 0.5 * len(columns) + 3.0)
    fig, (ax,) = _figure(min(width, 16), min(height, 16))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", aspect="auto", vmin=0,
                      vmax=vmax if vmax is not None else (np.nanmax(matrix) if np.isfinite(matrix).any() else 1))
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=90 if len(columns) > 12 else 0)
    ax.set_yticks(range(len(rows)), labels=list(rows))
    if matrix.size <= 400:  # the numbers, where they still fit
        top = image.norm.vmax or 1
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, number_format.format(v), ha="center", va="center", fontsize=7,
                        color="black" if v > 0.6 * top else "white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return _png(fig)


def kappa_png(rounds: Sequence[int], kappas: Sequence[float | None], threshold: float) -> bytes:
    """PNG bytes of the stopping signal: each round's kappa between its predictions on the stop
    set and the previous round's, against the threshold (``select.stop_kappa``; 0: none)."""
    fig, (ax,) = _figure(6, 3.5)
    ax.plot(rounds, [math.nan if k is None else k for k in kappas], marker="o", label="kappa")
    if threshold > 0:
        ax.axhline(threshold, color="tab:red", linestyle="--", label=f"stop_kappa {threshold:g}")
    ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    ax.set_xticks(list(rounds)[::math.ceil(len(rounds) / 20)])  # whole rounds, at most 20 labels
    ax.set_xlabel("round")
    ax.set_ylabel("agreement with the previous round")
    ax.set_ylim(min([0.0, *[k for k in kappas if k is not None]]), 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)
