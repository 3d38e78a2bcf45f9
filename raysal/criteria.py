"""Uncertainty criteria: class probabilities in, one informativeness score per image out.

Every criterion has the same signature, ``criterion(probs, image_ids) -> scores``, and the same
direction: a higher score means a more informative (more uncertain) image. The uncertainty
criteria ignore ``image_ids``; the random baseline uses them so that its scores depend on the
image and the seed only, never on batch order or on which worker scored the image.

Pure numpy: this module never imports ``ray`` or ``tensorflow``.

References: Settles, "Active Learning Literature Survey" (2009), section 3.1; the criteria of
``seed-article.md`` (least confidence, smallest margin, entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.special import xlogy

Criterion = Callable[[NDArray[np.floating], NDArray[np.int64]], NDArray[np.float64]]


def _as_probs(probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape [n, c] with c >= 2, got {probs.shape}")
    if np.shape(image_ids) != probs.shape[:1]:
        raise ValueError(f"image_ids must have shape [{probs.shape[0]}], got {np.shape(image_ids)}")
    return probs


def least_confidence(probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
    """1 - max_c p(c): high when even the most likely class is unlikely."""
    probs = _as_probs(probs, image_ids)  # [n, c]
    return 1.0 - probs.max(axis=1)  # [n]


def smallest_margin(probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
    """1 - (p(top1) - p(top2)): high when the two best classes are close."""
    probs = _as_probs(probs, image_ids)  # [n, c]
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]  # [n, 2], ascending
    return 1.0 - (top2[:, 1] - top2[:, 0])  # [n]


def entropy(probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
    """Shannon entropy -sum_c p(c) log p(c), in nats; 0 log 0 counts as 0."""
    probs = _as_probs(probs, image_ids)  # [n, c]
    return -xlogy(probs, probs).sum(axis=1)  # [n]


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # splitmix64 finaliser: a bijective mix, so distinct ids give distinct, well-spread values.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class RandomBaseline:
    """Uniform scores in [0, 1) that depend only on (seed, image_id): the baseline to beat."""

    seed: int = 0

    def __call__(self, probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
        _as_probs(probs, image_ids)  # same contract as every criterion, though only ids are used
        ids = np.asarray(image_ids, dtype=np.int64).astype(np.uint64)  # [n]
        with np.errstate(over="ignore"):
            mixed = _mix64(ids ^ _mix64(np.array([self.seed], dtype=np.uint64)))  # [n]
        return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # [n]


CRITERIA: dict[str, Criterion] = {
    "least_confidence": least_confidence,
    "smallest_margin": smallest_margin,
    "entropy": entropy,
    "random": RandomBaseline(seed=0),
}


def get_criterion(name: str, seed: int = 0) -> Criterion:
    """The criterion registered under ``name``; ``seed`` only affects ``random``."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}")
    if name == "random":
        return RandomBaseline(seed=seed)
    return CRITERIA[name]
