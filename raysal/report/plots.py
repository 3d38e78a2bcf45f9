"""Plots as PNG bytes: a run's learning curve, and simulated learning curves with a band over seeds."""

from __future__ import annotations

import io
from typing import Any, Sequence


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure and its axes, rendered off-screen (Agg): no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def learning_curve_png(labelled: Sequence[int], accuracy: Sequence[float], title: str) -> bytes:
    """PNG bytes of the curve."""
    fig, ax = _figure(6, 4)
    ax.plot(labelled, accuracy, marker="o")
    for x, y, r in zip(labelled, accuracy, range(len(labelled)), strict=True):
        ax.annotate(f"r{r}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def simulation_png(labelled: Sequence[int], curves: dict[str, dict[str, Sequence[float]]], title: str) -> bytes:
    """PNG bytes of simulated learning curves: per strategy its mean test accuracy over seeds,
    with a band from the lowest to the highest seed's, against the labelled images.

    Args:
        curves: strategy -> {"mean": [r], "min": [r], "max": [r]}.
    """
    fig, ax = _figure(7, 4.5)
    for name, curve in curves.items():
        (line,) = ax.plot(labelled, curve["mean"], marker="o", markersize=3, label=name)
        ax.fill_between(labelled, curve["min"], curve["max"], color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (mean; band: min-max of seeds)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)
