"""Diverse batches: k-center greedy over the most uncertain candidates' embeddings.

At a large budget, the top k by uncertainty holds many near-duplicates: images the model is
unsure about for the same reason. The ``diversity`` strategy ranks the pool by the criterion as
``top_k`` does, keeps the best ``select.candidates x budget`` (a candidate set found by the exact
distributed top-k, never the whole pool), and picks the budget among them by k-center greedy
(farthest-first traversal; Sener & Savarese 2018) on the images' penultimate-layer embeddings:
the most uncertain candidate first, then again and again the candidate farthest from every one
picked so far. It is the "k-center greedy over the top m by margin" variant of Citovsky et al.,
"Batch Active Learning at Scale" (2021), whose Cluster-Margin clusters where this picks centers.

Deterministic: no randomness, and ties go to the better-ranked candidate. Pure numpy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

CHUNK = 4096  # candidates whose distances to a new center are computed at once


def k_center_greedy(embeddings: NDArray[np.floating], k: int) -> NDArray[np.intp]:
    """Indices of ``k`` rows of ``embeddings`` picked by farthest-first traversal, in pick order.

    Rows are candidates in rank order (most uncertain first): the first pick is row 0, each next
    one the row whose Euclidean distance to its nearest pick is largest (the lowest row among
    equals). Rows with a non-finite value are never picked. ``k`` larger than the finite rows
    gives all of them.

    Args:
        embeddings: ``[m, d]`` (float16 is computed in float32).
        k: how many to pick, >= 0.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape [m, d], got {x.shape}")
    usable = np.isfinite(x).all(axis=1)  # [m]
    x = np.where(usable[:, None], x, 0.0)  # never picked; zeros keep the arithmetic quiet
    k = min(k, int(usable.sum()))
    if k == 0:
        return np.empty(0, np.intp)
    squared = np.einsum("ij,ij->i", x, x)  # [m]
    nearest = np.where(usable, np.inf, -np.inf)  # [m] squared distance to the nearest pick; -inf: never
    picks = np.empty(k, np.intp)
    pick = int(np.argmax(usable))  # the best-ranked usable row
    for n in range(k):
        picks[n] = pick
        for start in range(0, len(x), CHUNK):  # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, a chunk at a time
            rows = slice(start, start + CHUNK)
            d2 = np.maximum(squared[rows] + squared[pick] - 2.0 * (x[rows] @ x[pick]), 0.0)
            np.minimum(nearest[rows], np.where(usable[rows], d2, -np.inf), out=nearest[rows])
        nearest[pick] = -np.inf  # picked: never again (its distance is 0 anyway)
        pick = int(np.argmax(nearest))  # the first of equals: the better-ranked candidate
    return picks
