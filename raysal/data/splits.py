"""How ``raysal prepare`` splits labelled images: stratified by class, in proportion, seeded.

Pure arithmetic on class counts (numpy and the standard library): the seed set (data.labelled),
val and test each hold every class, in proportion to its share of the images (largest
remainders), and a seeded shuffle per class picks which images go where.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from raysal.errors import BadInput

FILL_ORDER = ("test", "val", "labelled")  # the sized splits, filled in this order; the rest is "pool" or "labelled"
SPLITS = ("labelled", "val", "test", "pool")  # as in the config's [data], and the order of the summary
SPLIT_NAMES = {"labelled": "the seed set", "val": "val", "test": "test", "pool": "the pool"}
BUDGET_SHARE, MAX_BUDGET = 0.1, 500  # a round selects a tenth of the pool, at most the article's 500

Size = int | float  # images (an int >= 1) or a share of the labelled images (a float in (0, 1))


def parse_size(text: str, option: str) -> Size:
    """'60' -> 60 images; '0.2' -> a fifth of the labelled images."""
    try:
        images = int(text)
    except ValueError:
        try:
            share = float(text)
        except ValueError:
            raise BadInput(f"{option}: {text!r} is neither a number of images (60) nor a share (0.2)") from None
        if not 0 < share < 1:
            raise BadInput(f"{option}: a share must be between 0 and 1, got {text}") from None
        return share
    if images < 1:
        raise BadInput(f"{option}: must be at least 1 image, got {images}")
    return images


def split_total(size: Size, n_images: int) -> int:
    """Images in a split of ``size`` out of ``n_images``; a share is rounded half up."""
    return size if isinstance(size, int) else math.floor(size * n_images + 0.5)


def proportional(total: int, counts: NDArray[np.int64], caps: NDArray[np.int64]) -> NDArray[np.int64]:
    """``total`` images shared among classes in proportion to ``counts``, at least 1 and at most
    ``caps`` each (largest remainders, Hamilton's method; ties to the lower class index).

    Requires ``len(counts) <= total <= caps.sum()`` and every cap >= 1.
    """
    shares = total * counts / counts.sum()  # [k]
    alloc = np.clip(np.floor(shares).astype(np.int64), 1, caps)  # [k]
    index = np.arange(len(counts))
    while (left := total - int(alloc.sum())) != 0:
        movable = alloc < caps if left > 0 else alloc > 1  # [k]
        behind = (shares - alloc) if left > 0 else (alloc - shares)  # [k], larger = moved first
        order = np.lexsort((index, -behind))
        chosen = order[movable[order]][:abs(left)]
        if not len(chosen):
            raise ValueError(f"cannot share {total} images among counts {counts.tolist()} within caps {caps.tolist()}")
        alloc[chosen] += 1 if left > 0 else -1
    return alloc


def split_counts(counts: NDArray[np.int64], classes: Sequence[str], sizes: Mapping[str, Size],
                 rest: str) -> dict[str, NDArray[np.int64]]:
    """Images of each class in each split: stratified, every class at least once in every split
    but an oracle pool.

    Args:
        counts: labelled images per class, ``[k]``.
        sizes: the sized splits (of ``FILL_ORDER``), each a number of images or a share.
        rest: the split that takes the images left over: "pool" (it may lack a class) or
            "labelled" (the seed set, beside a separate pool).
    Returns:
        ``{split: [k] images per class}``, in ``FILL_ORDER`` then ``rest``; the rows sum to ``counts``.
    Raises:
        BadInput: a class with fewer images than splits that need it (naming the class), or
            sizes that leave nothing for ``rest``.
    """
    full = [s for s in SPLITS if s in sizes or s == rest == "labelled"]  # the splits that hold every class
    needed = len(full)
    small = [f"{c!r} has {m}" for c, m in zip(classes, counts.tolist(), strict=True) if m < needed]
    if small:
        held = ", ".join(SPLIT_NAMES[s] for s in full[:-1]) + f" and {SPLIT_NAMES[full[-1]]}"
        raise BadInput(f"too few labelled images: class {', class '.join(small)}, and every class needs at least "
                       f"{needed}, one for each of {held}. Add images, or leave the class out")
    k, n = len(classes), int(counts.sum())
    totals = {split: split_total(sizes[split], n) for split in FILL_ORDER if split in sizes}
    for split, total in totals.items():
        if total < k:
            raise BadInput(f"--{split}: {sizes[split]} gives {total} images, too few for one of each of the {k} "
                           "classes")
    least_rest = k if rest == "labelled" else 1
    if n - sum(totals.values()) < least_rest:
        asked = " + ".join(f"{totals[s]} ({s})" for s in totals)
        raise BadInput(f"{asked} of the {n} labelled images leave fewer than {least_rest} for {SPLIT_NAMES[rest]}: "
                       f"make {', '.join(f'--{s}' for s in totals)} smaller")
    remaining = counts.astype(np.int64)  # a copy
    result: dict[str, NDArray[np.int64]] = {}
    later = needed
    for split, total in totals.items():
        later -= 1
        result[split] = proportional(total, counts, remaining - later)  # keep one of each class for each later split
        remaining = remaining - result[split]
    result[rest] = remaining
    return result


def assign_splits(labels: NDArray[np.int64], counts: Mapping[str, NDArray[np.int64]],
                  rng: np.random.Generator) -> NDArray[np.object_]:
    """The split of each image: per class, a shuffle of its images cut into runs of ``counts``.

    Args:
        labels: class index of each image, ``[n]``, in a stable order (image_id order).
        counts: ``{split: [k] images per class}`` as ``split_counts`` returns, summing to the classes' sizes.
    Returns:
        ``[n]`` split names.
    """
    splits = np.empty(len(labels), dtype=object)
    for c in range(len(next(iter(counts.values())))):
        members = np.flatnonzero(labels == c)  # [n_c]
        members = members[rng.permutation(len(members))]
        start = 0
        for split, per_class in counts.items():
            splits[members[start:start + per_class[c]]] = split
            start += int(per_class[c])
    return splits


def default_budget(pool_size: int) -> int:
    """Images a round selects from a pool of ``pool_size``: a tenth of it, 1 to ``MAX_BUDGET``."""
    return int(min(MAX_BUDGET, max(1, math.floor(BUDGET_SHARE * pool_size))))
