"""Uncertainty criteria: class probabilities in, one informativeness score per image out.

Every criterion has the same signature, ``criterion(probs, image_ids) -> scores``, and the same
direction: a higher score means a more informative (more uncertain) image. The uncertainty
criteria ignore ``image_ids``; the random baseline uses them so that its scores depend on the
image and the seed only, never on batch order or on which worker scored the image.

``bald`` is the one criterion of another kind (``SAMPLED``): it takes T samples of each image's
class probabilities, ``[T, n, c]`` (MC dropout passes, ``raysal.model.sampling``), not ``[n, c]``.

Pure numpy: this module never imports ``ray`` or ``tensorflow``.

References: Settles, "Active Learning Literature Survey" (2009), section 3.1; the criteria of
``seed-article.md`` (least confidence, smallest margin, entropy); Houlsby, Huszár, Ghahramani &
Lengyel, "Bayesian Active Learning for Classification and Preference Learning" (2011) and Gal,
Islam & Ghahramani (ICML 2017) for BALD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.special import xlogy

from raysal.config import CRITERION_NAMES, STRATEGY_NAMES
from raysal.hashing import as_uint64, mix64, open_unit_interval, stream, unit_interval

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


def bald(samples: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
    """BALD, the mutual information between the prediction and the model's weights, in nats:
    the entropy of the mean prediction minus the mean entropy of the T sampled predictions,
    ``H[mean_t p_t] - mean_t H[p_t]``. High where the samples are each confident but disagree;
    0 where they agree. ``samples``: ``[T, n, c]``."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"bald takes samples of shape [T, n, c], got {samples.shape}")
    _as_probs(samples[0], image_ids)
    # Image-major, so that each image's sums run in the same order in any batch: its score is
    # the same whichever worker scored it, with whichever other images.
    samples = np.ascontiguousarray(samples.transpose(1, 0, 2))  # [n, T, c]
    mean = samples.mean(axis=1)  # [n, c]
    expected_entropy = -xlogy(samples, samples).sum(axis=2).mean(axis=1)  # [n]
    return np.maximum(-xlogy(mean, mean).sum(axis=1) - expected_entropy, 0.0)  # [n]; >= 0 up to rounding


@dataclass(frozen=True)
class RandomBaseline:
    """Uniform scores in [0, 1) that depend only on (seed, image_id): the baseline to beat."""

    seed: int = 0

    def __call__(self, probs: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
        _as_probs(probs, image_ids)  # same contract as every criterion, though only ids are used
        return unit_interval(mix64(as_uint64(image_ids) ^ stream(self.seed)))  # [n]


CRITERIA: dict[str, Criterion] = {
    "least_confidence": least_confidence,
    "smallest_margin": smallest_margin,
    "entropy": entropy,
    "random": RandomBaseline(seed=0),
    "bald": bald,
}
SAMPLED = frozenset({"bald"})  # criteria of T samples [T, n, c] rather than of probabilities [n, c]
assert tuple(CRITERIA) == CRITERION_NAMES  # the config validates against the same names


def get_criterion(name: str, seed: int = 0) -> Criterion:
    """The criterion registered under ``name``; ``seed`` only affects ``random``."""
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}")
    if name == "random":
        return RandomBaseline(seed=seed)
    return CRITERIA[name]


# --- stochastic batch acquisition ------------------------------------------------------------
# Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning"
# (TMLR 2023): rather than the top k scores, which at a large budget are many near-duplicates,
# sample k images without replacement with probabilities proportional to score^beta (power) or
# exp(beta * score) (softmax). The Gumbel-top-k trick turns that sample into a top-k of
# perturbed keys, so the exact distributed top-k still does the selection.


def gumbel_noise(image_ids: NDArray[np.int64], seed: int, round_number: int) -> NDArray[np.float64]:
    """Standard Gumbel noise per image that depends on (seed, round, image_id) only."""
    u = open_unit_interval(mix64(as_uint64(image_ids) ^ stream(seed, round_number)))  # [n], never 0 or 1
    return -np.log(-np.log(u))  # [n]


@dataclass(frozen=True)
class SelectionKeys:
    """The key a strategy selects the top k of, from the scores (higher = more uncertain).

    ``top_k`` and ``class_balanced`` (whose quotas ``topk.class_balanced_indices`` applies): the
    scores. ``power``: beta * log(score) + Gumbel noise, a sample proportional to
    score^beta (scores must be >= 0, as every criterion's are; a 0 gets the lowest key but stays
    selectable). ``softmax``: beta * score + Gumbel noise. NaN scores stay NaN: never selected.
    """

    strategy: str = "top_k"
    beta: float = 1.0
    seed: int = 0
    round_number: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGY_NAMES}")
        if not (self.beta > 0 and np.isfinite(self.beta)):
            raise ValueError(f"beta must be > 0 and finite, got {self.beta}")

    @property
    def perturbs(self) -> bool:
        """Whether the keys differ from the scores (a sample), so a selection must rank by them."""
        return self.strategy in ("power", "softmax")

    def __call__(self, scores: NDArray[np.floating], image_ids: NDArray[np.int64]) -> NDArray[np.float64]:
        scores = np.asarray(scores, dtype=np.float64)  # [n]
        if not self.perturbs:
            return scores
        noise = gumbel_noise(image_ids, self.seed, self.round_number)  # [n]
        if self.strategy == "power":
            with np.errstate(divide="ignore", invalid="ignore"):
                return self.beta * np.log(np.maximum(scores, 1e-300)) + noise  # NaN stays NaN
        return self.beta * scores + noise
