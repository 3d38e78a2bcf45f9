"""Typical and diverse: the seed set of a cold start, chosen before any model exists (TypiClust,
Hacohen, Dekel & Weinshall, "Active Learning on a Budget", ICML 2022).

The pool's features are reduced by PCA (``Pca``), clustered by k-means into as many clusters
as images to select, and each cluster gives its most *typical* image: the one whose nearest
neighbours within the cluster are closest, ``typicality(x) = 1 / mean distance to its K = 20
nearest neighbours`` (fewer in a smaller cluster). The clusters are taken largest first, so a
cut of the list keeps the pool's largest modes. A random first batch spends labels on the
common classes and on near-duplicates; one typical image per cluster covers the pool's modes.

Every step is a function of sums over rows, or of a bounded sample, so that
``raysal.run.seeding`` runs the same algorithm over a pool on Ray, block by block:

1. ``sample_keys``: a key in [0, 1) per image id and seed; the rows whose key is below
   ``SAMPLE_PER_CLUSTER x budget / n`` start k-means (k-means++ on them, ``init_centres``);
2. Lloyd's iterations over every row (``assign``: labels and per-cluster sums), until the
   centres move less than ``TOLERANCE`` of the features' scale (the RMS norm of the sample's
   rows), or ``ITERATIONS``;
3. per cluster, the members whose key is below ``CANDIDATES / size`` (all of a cluster of up
   to ``CANDIDATES``: exact) are the candidates whose typicality is computed (``pick``).

``typical_indices`` is all of it in memory. Deterministic for a seed; pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from raysal.hashing import id_keys, mix64, stream, unit_interval

NEIGHBOURS = 20  # K of the typicality, as TypiClust
SAMPLE_PER_CLUSTER = 20  # rows per cluster that start k-means
ITERATIONS = 30  # Lloyd's iterations at most
TOLERANCE = 1e-4  # stop once no centre moves more than this x the features' RMS norm
CANDIDATES = 1000  # rows per cluster whose typicality is computed; a larger cluster is sampled
PCA_DIMS = 50  # the features' dimensions kept
SAMPLE_STREAM = 0x5EED  # the keys' stream, apart from other uses of the seed


def pixel_features(images: NDArray[np.uint8], side: int = 8) -> NDArray[np.float32]:
    """``[n, s, s, ch]`` images as ``[n, side * side * ch]`` features in [0, 1]: each image
    downsampled by area averaging to ``side x side`` (a side of s not divisible by ``side``
    gives cells of floor and ceil sizes, the same for every image)."""
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    n, s = x.shape[0], x.shape[1]
    side = min(side, s)
    edges = (np.arange(side) * s) // side  # [side] first pixel of each cell
    sizes = np.diff(np.append(edges, s)).astype(np.float32)  # [side]
    cells = np.add.reduceat(np.add.reduceat(x, edges, axis=1), edges, axis=2)  # [n, side, side, ch]
    cells /= sizes[None, :, None, None] * sizes[None, None, :, None]
    return (cells / 255.0).reshape(n, -1)


def moments(x: NDArray[np.floating]) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    """(rows, sum ``[d]``, sum of outer products ``[d, d]``): what ``Pca.fit`` needs, summed over blocks."""
    x = np.asarray(x, np.float64)
    return len(x), x.sum(axis=0), x.T @ x


@dataclass(frozen=True)
class Pca:
    """Principal components: ``project(x) = (x - mean) @ components.T``."""

    mean: NDArray[np.float64]  # [d]
    components: NDArray[np.float64]  # [k, d], by decreasing variance

    @classmethod
    def fit(cls, count: int, total: NDArray[np.float64], outer: NDArray[np.float64], dims: int = PCA_DIMS) -> Pca:
        """From ``moments`` summed over every row; ``min(dims, d)`` components, each signed so
        that its largest entry is positive (the same components from the same rows)."""
        if count < 1:
            raise ValueError("PCA of no rows")
        mean = total / count
        covariance = outer / count - np.outer(mean, mean)  # [d, d]
        values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
        top = vectors[:, np.argsort(values)[::-1][:min(dims, len(mean))]].T  # [k, d]
        signs = np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])
        return cls(mean, top * np.where(signs == 0, 1.0, signs)[:, None])

    def project(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        return ((np.asarray(x, np.float64) - self.mean) @ self.components.T).astype(np.float32)


def sample_keys(image_ids: NDArray[np.integer], seed: int) -> NDArray[np.float64]:
    """A key in [0, 1) per image id, for the seed: which rows start k-means and which are a large
    cluster's candidates; the same in any block, in any order."""
    return unit_interval(mix64(id_keys(image_ids) ^ stream(seed, SAMPLE_STREAM)))


def sample_share(n: int, budget: int) -> float:
    """The share of rows that start k-means: ``SAMPLE_PER_CLUSTER`` per cluster, at most all."""
    return min(1.0, SAMPLE_PER_CLUSTER * budget / max(n, 1))


def _squared_distances(x: NDArray[np.float32], centres: NDArray[np.float32]) -> NDArray[np.float32]:
    d2 = np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :] - 2.0 * (x @ centres.T)
    return np.maximum(d2, 0.0)  # [n, k]


def init_centres(x: NDArray[np.floating], k: int, seed: int) -> NDArray[np.float32]:
    """k-means++ (Arthur & Vassilvitskii 2007) on the rows ``x`` (in image_id order), with
    ``default_rng(seed)``: ``k`` distinct rows as the first centres (fewer when ``x`` has fewer
    distinct rows)."""
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    centres = [int(rng.integers(len(x)))]
    nearest = _squared_distances(x, x[centres])[:, 0]  # [n]
    while len(centres) < k and nearest.max() > 0:
        pick = int(rng.choice(len(x), p=nearest / nearest.sum()))
        centres.append(pick)
        nearest = np.minimum(nearest, _squared_distances(x, x[[pick]])[:, 0])
    return x[centres]


def assign(x: NDArray[np.floating], centres: NDArray[np.floating]) -> tuple[NDArray[np.intp], NDArray[np.float64],
                                                                          NDArray[np.int64]]:
    """Each row's nearest centre (the lowest index among equals), and per centre the sum of its
    rows ``[k, d]`` and their count ``[k]``: one Lloyd step's work on one block."""
    x = np.asarray(x, np.float32)
    labels = _squared_distances(x, np.asarray(centres, np.float32)).argmin(axis=1) if len(x) else \
        np.zeros(0, np.intp)
    k = len(centres)
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, labels, x)
    return labels, sums, np.bincount(labels, minlength=k).astype(np.int64)


def update(centres: NDArray[np.floating], sums: NDArray[np.float64], counts: NDArray[np.int64],
           scale: float) -> tuple[NDArray[np.float32], bool]:
    """The next centres from a step's sums (an empty cluster keeps its centre), and whether they
    have settled: no centre moved more than ``TOLERANCE x scale``."""
    moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres).astype(np.float32)
    shift = float(np.sqrt(((moved - centres) ** 2).sum(axis=1)).max()) if len(centres) else 0.0
    return moved, shift <= TOLERANCE * max(scale, 1e-12)


def typicality(x: NDArray[np.floating], neighbours: int = NEIGHBOURS) -> NDArray[np.float64]:
    """``1 / (mean Euclidean distance to the row's nearest neighbours among the rows)``, with
    ``min(neighbours, n - 1)`` neighbours; a single row is typical (inf)."""
    x = np.asarray(x, np.float32)
    n = len(x)
    if n < 2:
        return np.full(n, np.inf)
    k = min(neighbours, n - 1)
    d = np.sqrt(_squared_distances(x, x)).astype(np.float64)  # [n, n]
    np.fill_diagonal(d, np.inf)
    mean = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)  # [n]
    return 1.0 / np.maximum(mean, 1e-12)


def candidates(keys: NDArray[np.float64], labels: NDArray[np.intp], sizes: NDArray[np.int64]) -> NDArray[np.bool_]:
    """The rows whose typicality is computed: all of a cluster of up to ``CANDIDATES``, else
    those of its rows whose key is below ``CANDIDATES / size``."""
    return keys < CANDIDATES / np.maximum(sizes[labels], 1)


def pick(image_ids: NDArray[np.int64], features: NDArray[np.floating], labels: NDArray[np.intp],
         sizes: NDArray[np.int64]) -> NDArray[np.int64]:
    """The image ids selected, in pick order: per cluster (largest first; the lower index among
    equals) its candidate of highest typicality (the lower image_id among equals). ``image_ids``,
    ``features``, ``labels``: the candidates'; ``sizes``: every cluster's size."""
    chosen = []
    for cluster in np.lexsort((np.arange(len(sizes)), -sizes)):
        members = np.flatnonzero(labels == cluster)
        if not len(members):
            continue
        members = members[np.argsort(image_ids[members], kind="stable")]
        chosen.append(int(image_ids[members[int(np.argmax(typicality(features[members])))]]))
    return np.asarray(chosen, np.int64)


def fill(image_ids: NDArray[np.int64], keys: NDArray[np.float64], chosen: NDArray[np.int64],
         budget: int) -> NDArray[np.int64]:
    """``chosen``, then, while fewer than ``budget`` (fewer distinct clusters than asked: a pool
    of duplicates), the other ids in the order of their keys: a seeded sample of the rest."""
    if len(chosen) >= budget:
        return chosen
    rest = np.flatnonzero(~np.isin(image_ids, chosen))
    rest = rest[np.lexsort((image_ids[rest], keys[rest]))][:budget - len(chosen)]
    return np.concatenate([chosen, np.asarray(image_ids, np.int64)[rest]])


def typical_indices(x: NDArray[np.floating], budget: int, seed: int,
                    image_ids: NDArray[np.integer] | None = None) -> NDArray[np.intp]:
    """The rows of ``x`` ``[n, d]`` (already reduced, e.g. by ``Pca``) that TypiClust selects,
    ``budget`` of them (all finite rows when there are no more), in pick order.

    ``image_ids`` (default: the row numbers) key the sample that starts k-means and the
    candidates of large clusters, as ``raysal.run.seeding`` keys them. Rows with a non-finite
    value are never selected.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    x = np.asarray(x, np.float32)
    ids = np.arange(len(x), dtype=np.int64) if image_ids is None else np.asarray(image_ids, np.int64)
    finite = np.flatnonzero(np.isfinite(x).all(axis=1))
    order = finite[np.argsort(ids[finite], kind="stable")]  # image_id order: the same in any row order
    x, ids = x[order], ids[order]
    if budget >= len(x):
        return order
    if budget == 0:
        return order[:0]
    keys = sample_keys(ids, seed)
    start = x[keys < sample_share(len(x), budget)]
    centres = init_centres(start, budget, seed)
    scale = float(np.sqrt((start.astype(np.float64) ** 2).sum(axis=1).mean()))  # the tolerance's unit
    for _ in range(ITERATIONS):
        _, sums, counts = assign(x, centres)
        centres, settled = update(centres, sums, counts, scale)
        if settled:
            break
    labels, _, sizes = assign(x, centres)
    take = candidates(keys, labels, sizes)
    chosen = fill(ids, keys, pick(ids[take], x[take], labels[take], sizes), budget)
    row_of = dict(zip(ids.tolist(), order.tolist(), strict=True))
    return np.asarray([row_of[int(i)] for i in chosen], np.intp)
