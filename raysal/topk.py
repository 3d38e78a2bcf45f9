"""Exact top-k selection with a stated tie rule, in plain numpy.

Order: higher score first; among equal scores the smaller ``image_id`` first. The rule is total,
so the selected set and its order do not depend on row order, block boundaries or worker
count: a rerun selects the same ids. NaN scores are never selected.

``block_top_k`` is what each block of a distributed dataset keeps; ``merge_top_k`` combines any
number of such survivors. Because each block keeps every row that could be in the global top-k
under the total order, the merge is exact. No global sort: ``argpartition`` is O(n).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def top_k_indices(
    scores: NDArray[np.floating],
    image_ids: NDArray[np.int64],
    k: int,
    exclude_ids: NDArray[np.int64] | None = None,
) -> NDArray[np.intp]:
    """Indices of the k best rows in selection order (see module docstring).

    Args:
        scores: [n] higher = better; NaN rows are skipped.
        image_ids: [n] unique ids, the tie-breaker.
        k: how many to keep; fewer are returned when fewer rows are eligible.
        exclude_ids: ids that must never be selected (already labelled or pending).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores = np.asarray(scores, dtype=np.float64)  # [n]
    image_ids = np.asarray(image_ids, dtype=np.int64)  # [n]
    if scores.shape != image_ids.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and image_ids {image_ids.shape} must be equal 1-d shapes")
    eligible = ~np.isnan(scores)  # [n]
    if exclude_ids is not None and len(exclude_ids):
        eligible &= ~np.isin(image_ids, np.asarray(exclude_ids, dtype=np.int64))
    candidates = np.flatnonzero(eligible)  # [m]
    if k == 0 or candidates.size == 0:
        return np.empty(0, dtype=np.intp)
    if candidates.size > k:
        cand_scores = scores[candidates]
        # The k-th largest score; every row scoring above it is in, ties at it are decided by id.
        kth = np.partition(cand_scores, cand_scores.size - k)[cand_scores.size - k]
        candidates = candidates[cand_scores >= kth]
    order = np.lexsort((image_ids[candidates], -scores[candidates]))  # score desc, then id asc
    return candidates[order[:k]]


def merge_top_k(
    parts: list[dict[str, NDArray]], k: int, score_column: str = "score", id_column: str = "image_id"
) -> dict[str, NDArray]:
    """Top k rows of the concatenation of column dicts, all columns kept, in selection order."""
    parts = [p for p in parts if len(p[id_column])]
    if not parts:
        return {}
    columns = parts[0].keys()
    merged = {c: np.concatenate([p[c] for p in parts]) for c in columns}
    keep = top_k_indices(merged[score_column], merged[id_column], k)
    return {c: v[keep] for c, v in merged.items()}
