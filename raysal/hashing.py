"""Fixed pseudo-random functions of image ids: an image gets the same value on any worker, in any
batch, in any order. splitmix64 (Steele, Lea & Flood, 2014). Pure numpy."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment
MASK = (1 << 64) - 1


def mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser: a bijective mix, so distinct ids give distinct, well-spread values."""
    with np.errstate(over="ignore"):  # uint64 products wrap, as they should
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def as_uint64(values: NDArray[np.integer] | int) -> NDArray[np.uint64]:
    """int64 ids (or a seed), negative ones included, as the uint64 of the same bits."""
    if isinstance(values, int):
        return np.array([values & MASK], dtype=np.uint64)
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


def stream(seed: int, *more: int) -> np.uint64:
    """A 64-bit value from a seed and more integers (a round number): what ids are mixed with."""
    value = int(mix64(as_uint64(seed))[0])
    for part in more:
        value = int(mix64(np.array([value ^ ((part * GOLDEN_GAMMA) & MASK)], dtype=np.uint64))[0])
    return np.uint64(value)


def id_keys(image_ids: NDArray[np.integer]) -> NDArray[np.uint64]:
    """One key per id, the same for every run: splitmix64's output for the id as its state."""
    with np.errstate(over="ignore"):
        return mix64(as_uint64(image_ids) + np.uint64(GOLDEN_GAMMA))


def unit_interval(mixed: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Uniform in [0, 1): the top 53 bits."""
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def open_unit_interval(mixed: NDArray[np.uint64]) -> NDArray[np.float64]:
    """Uniform in the open interval (0, 1), exactly: 52 bits and a half-step offset."""
    return ((mixed >> np.uint64(12)).astype(np.float64) + 0.5) / float(1 << 52)
