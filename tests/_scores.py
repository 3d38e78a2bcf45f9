"""Score tables as a scoring pass writes them, and the sources ``select_top_k`` reads them from."""

from __future__ import annotations

import numpy as np


def score_source(kind: str, table, n_parts: int, folder):
    """``table`` cut into ``n_parts`` in-memory blocks, a lazy dataset over them, or Parquet files."""
    import pyarrow.parquet as pq
    import ray.data

    bounds = np.linspace(0, table.num_rows, n_parts + 1).astype(int)
    parts = [table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    if kind == "parquet":
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            pq.write_table(part, folder / f"part-{i:04d}.parquet")
        return str(folder)
    ds = ray.data.from_arrow(parts)
    return ds if kind == "blocks" else ds.map_batches(lambda batch: batch, batch_format="pyarrow")


def scores_table(image_ids, scores, errors, predicted=None):
    import pyarrow as pa

    ids = np.array(image_ids, dtype=np.int64)
    return pa.table({"image_id": ids, "uri": [f"img/{i}.jpg" for i in ids], "score": np.array(scores, np.float64),
                     "predicted": ids % 3 if predicted is None else np.asarray(predicted, np.int64),
                     "error": errors})


def random_pool(seed: int, n: int, unscored: int, excluded: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pool's scores as a round would select from: ``n`` distinct ids (not in order), scores in
    [0, 1) with ``unscored`` NaN among them, and ``excluded`` of the ids already selected."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(4 * n)[:n].astype(np.int64)
    scores = rng.random(n)
    scores[rng.choice(n, unscored, replace=False)] = np.nan
    return ids, scores, rng.choice(ids, excluded, replace=False)
