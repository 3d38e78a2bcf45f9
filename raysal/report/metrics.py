"""Accuracy figures of a round, from predicted and true class indices. Pure numpy.

Beside plain accuracy, two figures that a skewed test split or pool does not flatter:
balanced accuracy (every class's recall counts the same) and macro-F1 (every class's F1 counts
the same), so a model that ignores a rare class shows it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

TEST_METRICS_FILE = "test_metrics.json"  # a model's accuracy on the test split, kept in its folder
BALANCED_FIGURES = ("balanced_accuracy", "macro_f1")  # in a report beside "accuracy"
# The keys of a round's record (and its evaluate stage) that hold them, beside test_accuracy_before/after;
# a round recorded before they were measured has none of them.
ROUND_FIGURES = tuple(f"test_{figure}_{when}" for figure in BALANCED_FIGURES for when in ("before", "after"))


def _counts(predicted: NDArray[np.integer], labels: NDArray[np.integer]) -> tuple[NDArray, NDArray, NDArray]:
    """Per class index 0..max: true positives, true examples (tp + fn), predictions (tp + fp)."""
    size = int(max(predicted.max(initial=-1), labels.max(initial=-1))) + 1
    hits = np.bincount(labels[predicted == labels], minlength=size)  # [k]
    return hits, np.bincount(labels, minlength=size), np.bincount(predicted, minlength=size)  # [k] each


def balanced_accuracy(predicted: NDArray[np.integer], labels: NDArray[np.integer]) -> float | None:
    """The mean recall over the classes that have an example in ``labels``; None for no example.

    A class that is only predicted, never true, has no recall and is left out, as scikit-learn's
    ``balanced_accuracy_score`` leaves it out (with a warning there).
    """
    predicted, labels = np.asarray(predicted, np.int64), np.asarray(labels, np.int64)  # [n], [n]
    if not len(labels):
        return None
    hits, true, _ = _counts(predicted, labels)
    present = true > 0
    return float(np.mean(hits[present] / true[present]))


def macro_f1(predicted: NDArray[np.integer], labels: NDArray[np.integer]) -> float | None:
    """The mean F1 over the classes present in ``labels`` or in ``predicted``; None for no example.

    A class that is true but never predicted, or predicted but never true, has F1 0 and counts;
    a class that is neither true nor predicted says nothing about the model and is left out.
    This is scikit-learn's ``f1_score(labels, predicted, average="macro")``, whose default class
    list is that union (rather than every class of the config, which would add a 0 or an
    undefined F1 per class absent from the test split).
    """
    predicted, labels = np.asarray(predicted, np.int64), np.asarray(labels, np.int64)  # [n], [n]
    if not len(labels):
        return None
    hits, true, guessed = _counts(predicted, labels)
    present = (true + guessed) > 0
    return float(np.mean(2 * hits[present] / (true[present] + guessed[present])))  # 2tp / (2tp + fp + fn)


def accuracy_report(predicted: NDArray[np.integer], labels: NDArray[np.integer],
                    classes: Sequence[str]) -> dict[str, object]:
    """Overall accuracy, balanced accuracy, macro-F1, per-class accuracy (recall), the confusion
    matrix (``confusion[true][predicted]``, counts, in the order of ``classes``) and the count
    behind them.

    Classes with no example get ``None`` rather than a made-up number, and so do the figures of
    an empty input.
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
    k = len(classes)
    known = (labels >= 0) & (labels < k) & (predicted >= 0) & (predicted < k)
    confusion = np.bincount(labels[known] * k + predicted[known], minlength=k * k).reshape(k, k)  # [k, k]
    return {"accuracy": float(correct.mean()) if len(labels) else None,
            "balanced_accuracy": balanced_accuracy(predicted, labels), "macro_f1": macro_f1(predicted, labels),
            "count": int(len(labels)), "per_class": per_class, "confusion": confusion.tolist()}
