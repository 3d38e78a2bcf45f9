"""raysal.report.metrics: balanced accuracy and macro-F1 against scikit-learn, on hand-made and
generated cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score

from raysal.report.metrics import accuracy_report, balanced_accuracy, macro_f1

CLASSES = ["cat", "dog", "fox", "owl"]


def sklearn_figures(predicted: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    present = np.union1d(labels, predicted)  # the classes macro_f1 averages over, said in its docstring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": the case is meant
        return (balanced_accuracy_score(labels, predicted),
                f1_score(labels, predicted, labels=present, average="macro", zero_division=0))


@pytest.mark.parametrize(("predicted", "labels", "balanced", "f1"), [
    # cat 2/2 (predicted 4 times), dog 2/3 (predicted twice); fox (2) never predicted: recall 0, F1 0.
    ([0, 0, 1, 0, 0, 1], [0, 0, 1, 1, 2, 1], (1 + 2 / 3 + 0) / 3, (2 * 2 / (2 + 4) + 2 * 2 / (3 + 2) + 0) / 3),
    # owl (3) predicted once, never true: out of the balanced accuracy, an F1 of 0 in the macro-F1;
    # fox (2): no example and no prediction, out of both.
    ([0, 1, 3, 1], [0, 1, 1, 1], (1 + 2 / 3) / 2, (1 + 2 * 2 / (3 + 2) + 0) / 3),
    ([2, 2, 2], [2, 2, 2], 1.0, 1.0),
])
def test_balanced_accuracy_and_macro_f1_by_hand(predicted, labels, balanced, f1):
    predicted, labels = np.array(predicted), np.array(labels)
    assert balanced_accuracy(predicted, labels) == pytest.approx(balanced)
    assert macro_f1(predicted, labels) == pytest.approx(f1)
    assert (balanced, f1) == pytest.approx(sklearn_figures(predicted, labels))


def test_an_empty_input_has_no_figures():
    empty = np.zeros(0, np.int64)
    assert balanced_accuracy(empty, empty) is None and macro_f1(empty, empty) is None
    assert accuracy_report(empty, empty, CLASSES) == {
        "accuracy": None, "balanced_accuracy": None, "macro_f1": None, "count": 0,
        "per_class": dict.fromkeys(CLASSES), "confusion": [[0] * len(CLASSES)] * len(CLASSES)}


def test_the_report_holds_the_imbalance_aware_figures():
    # 9 cats all right, one dog called a cat: accuracy 0.9, but the dog class is missed entirely.
    labels, predicted = np.array([0] * 9 + [1]), np.zeros(10, np.int64)
    report = accuracy_report(predicted, labels, CLASSES)
    assert report["accuracy"] == pytest.approx(0.9) and report["balanced_accuracy"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx((2 * 9 / 19 + 0) / 2)
    assert report["per_class"] == {"cat": 1.0, "dog": 0.0, "fox": None, "owl": None}


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)),
                                                    min_size=1, max_size=40)))
def test_balanced_accuracy_and_macro_f1_match_sklearn(pairs):
    predicted, labels = (np.array(column) for column in zip(*pairs, strict=True))
    expected = sklearn_figures(predicted, labels)
    assert (balanced_accuracy(predicted, labels), macro_f1(predicted, labels)) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_the_confusion_matrix_is_sklearns_over_the_config_classes(pairs):
    """``confusion[true][predicted]`` over every class of the config, in its order, as the
    report's heatmap reads it; a class absent from both has its row and column of zeros."""
    from sklearn.metrics import confusion_matrix

    predicted, labels = (np.array(column) for column in zip(*pairs, strict=True))
    expected = confusion_matrix(labels, predicted, labels=list(range(len(CLASSES))))
    assert accuracy_report(predicted, labels, CLASSES)["confusion"] == expected.tolist()
