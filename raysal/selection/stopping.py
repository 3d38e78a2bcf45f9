"""When to stop labelling: how much the model's predictions on a fixed sample of the pool (the
stop set) changed between rounds, as Cohen's kappa, and the signal it gives.

Bloodgood & Vijay-Shanker (2009) stop once the kappa between successive models, averaged over
a window of rounds, reaches a threshold (0.99). A round keeps its scoring model's predictions
on the stop set (``STOP_SET`` pool images of smallest ``hashing.id_keys``, found by the
selection's scan), so round r compares models r - 2 and r - 1 before its labels are bought.
Pure numpy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

STOP_SET = 10_000  # pool images whose predictions a round keeps, to compare with the next model's
STOP_WINDOW = 3  # rounds whose kappas are averaged for the stop signal, as Bloodgood & Vijay-Shanker do
AGREEMENT_FIELDS = ("kappa", "kappa_images", "kappa_mean", "stop_kappa", "stop_labelling")  # ``agreement``'s
MIN_KAPPA_IMAGES = 100  # fewer stop-set images in common give no kappa: too few to say anything


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


def agreement(now: dict[str, NDArray[np.int64]], before: dict[str, NDArray[np.int64]] | None,
              earlier_kappas: Sequence[float | None], round_number: int, threshold: float) -> dict[str, Any]:
    """How much the model's predictions changed, and whether to stop.

    Args:
        now, before: this round's and the previous round's stop sets (``image_id`` ascending,
            ``predicted``); ``before`` is None in round 1, whose model is the first to score.
        earlier_kappas: the kappas of the ``STOP_WINDOW - 1`` rounds before this one.
        threshold: ``select.stop_kappa``; 0 never stops.

    Returns:
        the round's ``AGREEMENT_FIELDS``: Cohen's kappa on the images both stop sets hold (None
        below ``MIN_KAPPA_IMAGES``), how many, the mean kappa of the last ``STOP_WINDOW``
        rounds, the threshold, and whether that mean reaches it.
    """
    kappa, common = None, 0
    if before is not None:
        _, mine, theirs = np.intersect1d(now["image_id"], before["image_id"], assume_unique=True, return_indices=True)
        common = len(mine)
        if common >= MIN_KAPPA_IMAGES:
            kappa = cohen_kappa(now["predicted"][mine], before["predicted"][theirs])
    window = [*earlier_kappas, kappa] if round_number >= STOP_WINDOW else [None]
    mean = float(np.mean(window)) if all(k is not None for k in window) else None
    return {"kappa": None if kappa is None else round(kappa, 6), "kappa_images": int(common),
            "kappa_mean": None if mean is None else round(mean, 6), "stop_kappa": threshold,
            "stop_labelling": bool(threshold and mean is not None and mean >= threshold)}


def agreement_lines(record: dict[str, Any]) -> list[str]:
    """What a round's summary (or its waiting message) says of the stopping signal."""
    if record.get("kappa") is None:
        return []
    n = record["round"]  # round n scored with model n - 1; round n - 1 with model n - 2
    lines = [f"  predictions on the pool: models {n - 2} and {n - 1} agree with kappa {record['kappa']:.4f} on "
             f"{record['kappa_images']:,} stop-set images"
             + (f" (mean of the last {STOP_WINDOW} rounds {record['kappa_mean']:.4f})"
                if record.get("kappa_mean") is not None else "")]
    if record.get("stop_labelling"):
        lines.append(f"  stop labelling: the mean kappa of the last {STOP_WINDOW} rounds, {record['kappa_mean']:.4f}, "
                     f"is >= select.stop_kappa {record['stop_kappa']:g}: the model's predictions have stabilised")
    return lines
