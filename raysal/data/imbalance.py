"""A long-tailed subsample of a labelled set: how a strategy does on skewed data. Pure numpy.

The profile is exponential over the classes, ordered by a seeded permutation: the class of rank
k of C keeps ``n_max * ratio ** (-k / (C - 1))`` images (rounded), so the largest class keeps
``ratio`` times the images of the smallest, and the classes in between fall off evenly on a log
scale, as in the long-tailed CIFAR of Cui et al., "Class-Balanced Loss Based on Effective
Number of Samples" (CVPR 2019). ``n_max`` is the smallest class's count in the set, so that
every class can meet its share.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from raysal.errors import ConfigError


def long_tail_counts(available: NDArray[np.integer], ratio: float, seed: int) -> NDArray[np.int64]:
    """Images to keep per class for a largest-to-smallest ``ratio``.

    Args:
        available: [c] images of each class in the set.
        ratio: the largest class's count over the smallest's; 1 keeps ``min(available)`` of each.
        seed: orders the classes from the largest share to the smallest (numpy's rng(seed)).

    Returns:
        [c] images to keep, each at least 1 and at most its class's available count.
    """
    available = np.asarray(available, np.int64)  # [c]
    if not math.isfinite(ratio) or ratio < 1:
        raise ConfigError(f"imbalance: --imbalance {ratio} must be a finite number >= 1 (1: the pool as it is)")
    n_max = int(available.min()) if len(available) else 0
    if n_max < ratio:
        raise ConfigError(f"imbalance: --imbalance {ratio:g} needs at least {math.ceil(ratio)} images of every class, "
                          f"and the smallest class has {n_max}")
    n_classes = len(available)
    rank = np.empty(n_classes, np.int64)  # [c] 0: the largest share
    rank[np.random.default_rng(seed).permutation(n_classes)] = np.arange(n_classes)
    exponent = rank / max(n_classes - 1, 1)  # [c] in [0, 1]
    return np.maximum(1, np.rint(n_max * ratio ** -exponent)).astype(np.int64)


def long_tail_rows(labels: NDArray[np.integer], n_classes: int, ratio: float, seed: int) -> NDArray[np.intp]:
    """Rows of a long-tailed subsample of a set with these ``labels`` [n] (``long_tail_counts``),
    sorted; within a class the rows are drawn with numpy's rng(seed)."""
    labels = np.asarray(labels, np.int64)  # [n]
    keep = long_tail_counts(np.bincount(labels, minlength=n_classes), ratio, seed)  # [c]
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(labels == c), keep[c], replace=False) for c in range(n_classes)]
    return np.sort(np.concatenate(rows))
