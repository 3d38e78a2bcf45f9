"""TypiClust over a pool on Ray: a cold start's seed set (``raysal.selection.typical``, whose
docstring gives the algorithm), block by block, for pools too large for the driver.

The driver holds the centres, per-cluster sums, the image ids and a bounded sample (the rows
that start k-means, and up to ``typical.CANDIDATES`` candidates per cluster); every pass over
the features is a Ray Data job whose blocks return sums. Given the same rows, it selects what
``typical.typical_indices`` selects in memory (up to float sums added in another order).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray.data
from numpy.typing import NDArray

from raysal.model.embeddings import EMBEDDING
from raysal.selection import typical
from raysal.selection.typical import Pca

log = logging.getLogger(__name__)

FEATURE = "feature"  # float32 [d]


def _usable(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    features = np.asarray(batch[EMBEDDING], np.float32)
    keep = (batch["error"] == "") & np.isfinite(features).all(axis=1)
    return {"image_id": batch["image_id"][keep].astype(np.int64), FEATURE: features[keep]}


def usable_features(rows: ray.data.Dataset) -> ray.data.Dataset:
    """Score files' rows (``image_id``, ``error``, ``embedding``) as ``image_id, feature``: the
    images that were read and whose features are finite."""
    return rows.map_batches(_usable, batch_format="numpy")


def _moments(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    count, total, outer = typical.moments(batch[FEATURE])
    return {"count": np.array([count]), "total": total[None], "outer": outer[None]}


def pca_fit(ds: ray.data.Dataset, dims: int = typical.PCA_DIMS) -> Pca:
    """The features' principal components, from per-block moments summed on the driver."""
    count, total, outer = 0, 0.0, 0.0
    for part in ds.map_batches(_moments, batch_format="numpy").iter_batches(batch_format="numpy", batch_size=16):
        count += int(part["count"].sum())
        total = total + part["total"].sum(axis=0)
        outer = outer + part["outer"].sum(axis=0)
    return Pca.fit(count, np.asarray(total), np.asarray(outer), dims)


def _project(batch: dict[str, NDArray], pca: Pca) -> dict[str, NDArray]:
    return {"image_id": batch["image_id"], FEATURE: pca.project(batch[FEATURE])}


def project(ds: ray.data.Dataset, pca: Pca) -> ray.data.Dataset:
    return ds.map_batches(_project, fn_kwargs={"pca": pca}, batch_format="numpy")


def _sample(batch: dict[str, NDArray], seed: int, share: float) -> dict[str, NDArray]:
    keep = typical.sample_keys(batch["image_id"], seed) < share
    return {"image_id": batch["image_id"][keep], FEATURE: batch[FEATURE][keep]}


def _step(batch: dict[str, NDArray], centres: NDArray[np.float32]) -> dict[str, NDArray]:
    _, sums, counts = typical.assign(batch[FEATURE], centres)
    return {"sums": sums[None], "counts": counts[None]}


def _candidates(batch: dict[str, NDArray], centres: NDArray[np.float32], sizes: NDArray[np.int64],
                seed: int) -> dict[str, NDArray]:
    labels, _, _ = typical.assign(batch[FEATURE], centres)
    take = typical.candidates(typical.sample_keys(batch["image_id"], seed), labels, sizes)
    return {"image_id": batch["image_id"][take], "label": labels[take], FEATURE: batch[FEATURE][take]}


def _collect(ds: ray.data.Dataset, columns: tuple[str, ...]) -> dict[str, NDArray]:
    parts = [b for b in ds.iter_batches(batch_format="numpy", batch_size=None) if len(b[columns[0]])]
    return {c: np.concatenate([p[c] for p in parts]) for c in columns} if parts else {}


def _sums(ds: ray.data.Dataset, centres: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    k, d = centres.shape
    sums, counts = np.zeros((k, d)), np.zeros(k, np.int64)
    for part in ds.map_batches(_step, fn_kwargs={"centres": centres}, batch_format="numpy").iter_batches(
            batch_format="numpy", batch_size=16):
        sums += part["sums"].sum(axis=0)
        counts += part["counts"].sum(axis=0)
    return sums, counts


def typical_ids(ds: ray.data.Dataset, budget: int, seed: int, board: Any = None) -> NDArray[np.int64]:
    """The image ids TypiClust selects from ``ds`` (``image_id``, ``feature``: reduced features,
    e.g. by ``pca_fit``/``project``), ``budget`` of them (all when there are no more), in pick order."""
    ds = ds.materialize()  # read once; every pass below reads the object store
    ids = np.sort(np.concatenate([b["image_id"] for b in ds.select_columns(["image_id"]).iter_batches(
        batch_format="numpy", batch_size=None)] or [np.zeros(0, np.int64)]).astype(np.int64))
    if budget >= len(ids):
        return ids
    if budget <= 0:
        return ids[:0]
    sample = _collect(ds.map_batches(_sample, fn_kwargs={"seed": seed, "share": typical.sample_share(len(ids), budget)},
                                     batch_format="numpy"), ("image_id", FEATURE))
    order = np.argsort(sample["image_id"], kind="stable")
    centres = typical.init_centres(sample[FEATURE][order], budget, seed)
    scale = float(np.sqrt((sample[FEATURE].astype(np.float64) ** 2).sum(axis=1).mean()))
    log.info("cold start: k-means of %d images into %d clusters (started from %d of them)", len(ids), budget,
             len(order))
    for iteration in range(1, typical.ITERATIONS + 1):
        sums, counts = _sums(ds, centres)
        centres, settled = typical.update(centres, sums, counts, scale)
        log.info("cold start: k-means iteration %d/%d%s", iteration, typical.ITERATIONS,
                 ": settled" if settled else "")
        if settled:
            break
    _, sizes = _sums(ds, centres)
    found = _collect(ds.map_batches(_candidates, fn_kwargs={"centres": centres, "sizes": sizes, "seed": seed},
                                    batch_format="numpy"), ("image_id", "label", FEATURE))
    chosen = typical.pick(found["image_id"].astype(np.int64), found[FEATURE], found["label"], sizes)
    return typical.fill(ids, typical.sample_keys(ids, seed), chosen, budget)
