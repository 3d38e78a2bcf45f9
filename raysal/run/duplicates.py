"""Repeated image ids in a dataset, found by a hash shuffle in Ray tasks: only the repeats reach
the driver."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray
import ray.data
from numpy.typing import NDArray


@ray.remote(num_cpus=0.5)
def _split_ids(block: pa.Table, parts: int) -> tuple[NDArray[np.int64], ...] | NDArray[np.int64]:
    """One block's ids cut into ``parts`` by a hash of the id: equal ids land in equal parts."""
    ids = block["image_id"].to_numpy()
    part = ((ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) % np.uint64(parts)
    pieces = tuple(ids[part == p] for p in range(parts))
    return pieces if parts > 1 else pieces[0]


@ray.remote(num_cpus=0.5)
def _repeated_ids(limit: int, *pieces: NDArray[np.int64]) -> NDArray[np.int64]:
    unique, counts = np.unique(np.concatenate(pieces), return_counts=True)
    return unique[counts > 1][:limit]


def duplicate_ids(ds: ray.data.Dataset, limit: int = 5) -> list[int]:
    """Up to ``limit`` image_ids that occur more than once anywhere in ``ds``.

    A two-step hash shuffle in Ray tasks: each block's ids are cut into parts by a hash of the
    id, then each part is checked whole, so a repeat is found whichever blocks hold it; only the
    repeated ids reach the driver. (``groupby("image_id").count()`` gives the same answer but
    took 7-18 s for 3,000 ids on 2 cores, this 2 s; 2M ids take 3 s.)
    """
    blocks = ds.select_columns(["image_id"]).to_arrow_refs()
    if not blocks:
        return []
    parts = max(1, min(64, len(blocks) // 8))  # a part holds about 8 blocks' worth of ids
    split = [_split_ids.options(num_returns=parts).remote(block, parts) for block in blocks]
    pieces = [[s] for s in split] if parts == 1 else split
    found = ray.get([_repeated_ids.remote(limit, *[p[i] for p in pieces]) for i in range(parts)])
    return sorted(int(i) for i in np.concatenate(found))[:limit]
