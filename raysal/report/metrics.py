"""Accuracy figures of a round, from predicted and true class indices, and the agreement of two
models' predictions. Pure numpy."""

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


def cohen_kappa(a: NDArray[np.integer], b: NDArray[np.integer]) -> float | None:
    """Cohen's kappa between two models' predicted classes for the same images.

    1 when they agree on every image, 0 when they agree only as often as chance would (their
    class frequencies alone); negative below that. None when it is undefined: both models put
    every image in the same single class, so chance alone agrees on all of them. (Computed
    here rather than by scikit-learn, whose import costs a round 1.6 s; the tests compare both.)
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)  # [n], [n]
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equal, non-empty vectors of classes, got shapes {a.shape} and {b.shape}")
    classes, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
    share_a = np.bincount(codes[: len(a)], minlength=len(classes)) / len(a)  # [c]
    share_b = np.bincount(codes[len(a):], minlength=len(classes)) / len(b)  # [c]
    expected = float(share_a @ share_b)  # chance agreement from the two models' class frequencies
    if expected >= 1.0:
        return None
    return (float(np.mean(a == b)) - expected) / (1.0 - expected)
