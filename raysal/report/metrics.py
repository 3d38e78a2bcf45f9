"""Accuracy figures of a round, from predicted and true class indices. Pure numpy."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

TEST_METRICS_FILE = "test_metrics.json"  # a model's accuracy on the test split, kept in its folder


def accuracy_report(predicted: NDArray[np.integer], labels: NDArray[np.integer],
                    classes: Sequence[str]) -> dict[str, object]:
    """Overall accuracy, per-class accuracy (recall) and the count behind each.

    Classes with no example get ``None`` rather than a made-up number.
    """
    predicted = np.asarray(predicted, dtype=np.int64)  # [n]
    labels = np.asarray(labels, dtype=np.int64)  # [n]
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ in shape")
    correct = predicted == labels  # [n]
    per_class = {}
    for index, name in enumerate(classes):
        mask = labels == index
        per_class[name] = float(correct[mask].mean()) if mask.any() else None
    return {"accuracy": float(correct.mean()) if len(labels) else None, "count": int(len(labels)),
            "per_class": per_class}
