"""The learning curve: test accuracy against the number of labelled images, one point per round."""

from __future__ import annotations

import io
from typing import Sequence


def learning_curve_png(labelled: Sequence[int], accuracy: Sequence[float], title: str) -> bytes:
    """PNG bytes of the curve; rendered off-screen (Agg), no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(labelled, accuracy, marker="o")
    for x, y, r in zip(labelled, accuracy, range(len(labelled))):
        ax.annotate(f"r{r}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
