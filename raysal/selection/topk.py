"""Exact top-k selection with a stated tie rule, in plain numpy.

Order: higher score first; among equal scores the smaller ``image_id`` first. The rule is total,
so the selected set and its order do not depend on row order, block boundaries or worker
count: a rerun selects the same ids. NaN scores are never selected.

A distributed scan reads its parts (blocks, Parquet batches) one by one: ``candidate_rows`` is
what a part may add to the best k found so far, and ``top_k_unordered`` (``top_k_indices`` for
the final order) merges such survivors. Because a part keeps every row that could be in the
global top-k under the total order, the merge is exact. No global sort: ``partition`` is O(n); only the
final k are sorted.
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


def top_k_unordered(scores: NDArray[np.floating], image_ids: NDArray[np.int64], k: int) -> NDArray[np.intp]:
    """The rows ``top_k_indices`` selects (no exclusions), in no set order: O(n), nothing sorted.

    Rows above the k-th best score are in; of the rows tied at it, the smallest ids fill what is
    left (ids are unique, so a partition on them decides exactly).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    candidates = np.flatnonzero(~np.isnan(scores))  # [m]
    if candidates.size <= k:
        return candidates
    if k == 0:
        return np.empty(0, dtype=np.intp)
    cand_scores = scores[candidates]
    kth = np.partition(cand_scores, cand_scores.size - k)[cand_scores.size - k]
    above, tied = candidates[cand_scores > kth], candidates[cand_scores == kth]
    need = k - above.size
    if tied.size > need:
        tied = tied[np.argpartition(image_ids[tied], need - 1)[:need]]
    return np.concatenate([above, tied])


def is_in_sorted(values: NDArray[np.int64], sorted_set: NDArray[np.int64]) -> NDArray[np.bool_]:
    """``np.isin`` for a set already sorted: a binary search per value, the set is not re-sorted."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def candidate_rows(
    scores: NDArray[np.floating],
    image_ids: NDArray[np.int64],
    k: int,
    threshold: float = -np.inf,
    exclude_sorted: NDArray[np.int64] | None = None,
) -> NDArray[np.intp]:
    """Rows of one part that can still be among the best k, at most k of them, in no set order.

    Args:
        scores: [n] the part's scores; NaN rows never qualify.
        image_ids: [n] the part's ids.
        k: how many the whole scan keeps.
        threshold: a score some k already-seen rows reach (the k-th best so far): a row below it
            cannot enter; a row equal to it still can, by a smaller id.
        exclude_sorted: sorted ids that must never be selected.
    """
    keep = np.flatnonzero(scores >= threshold)  # [m]; NaN >= x is False
    if exclude_sorted is not None and len(exclude_sorted) and keep.size:
        keep = keep[~is_in_sorted(image_ids[keep], exclude_sorted)]
    if keep.size > k:
        keep = keep[top_k_unordered(scores[keep], image_ids[keep], k)]
    return keep



def class_balanced_indices(
    scores: NDArray[np.floating],
    image_ids: NDArray[np.int64],
    classes: NDArray[np.integer],
    k: int,
    n_classes: int,
    exclude_ids: NDArray[np.int64] | None = None,
) -> NDArray[np.intp]:
    """Indices of k rows chosen with a quota per class, in selection order (Emam et al. 2021).

    Each class gets its best ``k // n_classes`` rows, or all of them where it has fewer; what is
    left of the budget goes to the best rows left, whatever their class. "Best" is the module's
    order; so is the result's. A chosen row is among its class's best ``k // n_classes`` or among
    the best k of all (every row better than one chosen from what was left is chosen too): a
    distributed scan that keeps those two (``candidate_rows``) loses nothing. With k below
    ``n_classes`` there is no quota: the best k.

    Args:
        classes: [n] each row's class (the predicted one), in ``[0, n_classes)``.
        n_classes: how many classes share the budget, including those with no row here.
    """
    if n_classes < 1 or k < 0:
        raise ValueError(f"n_classes must be >= 1 and k >= 0, got {n_classes} and {k}")
    scores = np.asarray(scores, dtype=np.float64)  # [n]
    image_ids = np.asarray(image_ids, dtype=np.int64)  # [n]
    classes = np.asarray(classes, dtype=np.int64)  # [n]
    eligible = top_k_indices(scores, image_ids, len(scores), exclude_ids)  # [m], every selectable row, in order
    outside = eligible[(classes[eligible] < 0) | (classes[eligible] >= n_classes)]
    if outside.size:
        raise ValueError(f"{outside.size} rows have a class outside [0, {n_classes}), e.g. image "
                         f"{image_ids[outside[0]]} with class {classes[outside[0]]}")
    quota = k // n_classes
    chosen = np.zeros(len(scores), dtype=bool)  # [n]
    if quota:
        ranked_classes = classes[eligible]  # [m]
        for c in np.unique(ranked_classes):
            chosen[eligible[ranked_classes == c][:quota]] = True  # eligible is in order: its first are its best
    left = eligible[~chosen[eligible]]  # [m'], in order
    chosen[left[: max(0, k - int(chosen.sum()))]] = True
    return eligible[chosen[eligible]]
