"""topk: raysal's exact top-k selection, on a materialised dataset and from Parquet files as a
round reads the scores, against numpy, pyarrow + numpy, ``sort().limit()`` and ``read_parquet``."""

from __future__ import annotations

import os
import tempfile
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.common import PeakMemory, Row, median_seconds

PART_ROWS = 250_000  # rows per Parquet file and per block of the in-memory dataset


def sort_limit(ds: Any, k: int) -> list[dict[str, Any]]:
    """The Ray Data way: the k best rows by (score desc, image_id asc) with ``sort().limit()``."""
    return ds.sort(["score", "image_id"], descending=[True, False]).limit(k).take_all()


def select_via_read_parquet(folder: str, k: int) -> Any:
    """raysal's selection on a dataset read with Ray Data's ``read_parquet``, the read included."""
    import ray.data

    from raysal.run.topk import select_top_k

    return select_top_k(ray.data.read_parquet(folder), k)


def pyarrow_numpy(folder: str, k: int) -> tuple[pa.Table, pa.Table]:
    """One process: read the score files with pyarrow, top-k with numpy; the best rows and the
    rows that carry an error."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raysal.selection.topk import top_k_indices

    read = pq.read_table(folder, columns=["image_id", "uri", "score", "predicted", "error"])
    best = read.take(top_k_indices(read["score"].to_numpy(), read["image_id"].to_numpy(), k))
    return best, read.filter(pc.not_equal(read["error"], ""))


def topk_case(n: int, repeats: int) -> list[Row]:
    """``n`` scored rows, in memory and in Parquet files; k of 500 and of 50,000."""
    import pyarrow.parquet as pq
    import ray.data

    from raysal.run.topk import select_top_k
    from raysal.selection.topk import top_k_indices

    rows = []
    rng = np.random.default_rng(0)
    image_ids = rng.permutation(n).astype(np.int64)
    scores = np.round(rng.random(n), 4)  # ties, as real criteria produce on confident rows
    table = pa.table({"image_id": image_ids, "uri": pa.array(np.char.mod("img/%d.jpg", image_ids)),
                      "score": scores, "predicted": np.zeros(n, np.int64)})
    ds = ray.data.from_arrow([table.slice(i, PART_ROWS) for i in range(0, n, PART_ROWS)]).materialize()
    failed = rng.random(n) < 1e-4  # unreadable images: NaN score and a reason, reported as skipped
    pq_scores = np.where(failed, np.nan, scores)
    scored = table.set_column(2, "score", pa.array(pq_scores)).append_column(
        "error", pa.array(np.where(failed, "undecodable: truncated", "")))
    with tempfile.TemporaryDirectory() as folder:
        for i in range(0, n, PART_ROWS):
            pq.write_table(scored.slice(i, PART_ROWS), os.path.join(folder, f"part-{i // PART_ROWS:05d}.parquet"))
        files = f"{-(-n // PART_ROWS)} Parquet files"
        for k in (500, 50_000):
            # Each raysal timing follows one warm-up call and comes before the Ray Data baselines:
            # after a sort() or a read_parquet() the worker pool is busy for seconds (measured:
            # a 0.1 s selection took 0.5-2.3 s in the 3 s after a sort). Peak memory is taken on
            # one more call after the timed ones: its sampling thread would slow what is timed.
            t_numpy, want = median_seconds(partial(top_k_indices, scores, image_ids, k), repeats)
            select_top_k(ds, k)
            t_raysal, got = median_seconds(partial(select_top_k, ds, k), repeats)
            with PeakMemory().measure() as mem:
                select_top_k(ds, k)
            want_pq = image_ids[top_k_indices(pq_scores, image_ids, k)]
            t_single, (best, skipped) = median_seconds(partial(pyarrow_numpy, folder, k), repeats)
            select_top_k(folder, k)
            t_folder, selection = median_seconds(partial(select_top_k, folder, k), repeats)
            with PeakMemory().measure() as mem_pq:
                select_top_k(folder, k)
            t_sort, by_sort = median_seconds(partial(sort_limit, ds, k), repeats)
            t_read, via_read = median_seconds(partial(select_via_read_parquet, folder, k), 1)
            exact = bool(np.array_equal(got.rows["image_id"], image_ids[want]))
            sort_exact = [r["image_id"] for r in by_sort] == image_ids[want].tolist()
            common = {"group": "topk", "unit": "s", "raysal": round(t_raysal, 3)}
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: raysal vs sort().limit()",
                         "baseline": round(t_sort, 3), "ratio": round(t_sort / t_raysal, 2),
                         "notes": f"exact={exact}, sort exact={sort_exact}, "
                                  f"peak driver+workers {mem.peak_total / 2**20:.0f} MiB"})
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: raysal vs numpy in memory",
                         "baseline": round(t_numpy, 3), "ratio": round(t_numpy / t_raysal, 3),
                         "notes": f"exact={exact}"})

            exact_pq = bool(np.array_equal(selection.rows["image_id"], want_pq)
                            and np.array_equal(best["image_id"].to_numpy(), want_pq)
                            and np.array_equal(via_read.rows["image_id"], want_pq)
                            and len(selection.skipped["image_id"]) == skipped.num_rows == failed.sum())
            common = {"group": "topk", "unit": "s", "raysal": round(t_folder, 3)}
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: {files}, raysal vs pyarrow + numpy",
                         "baseline": round(t_single, 3), "ratio": round(t_single / t_folder, 3),
                         "notes": f"exact={exact_pq} (skipped rows too), "
                                  f"peak driver+workers {mem_pq.peak_total / 2**20:.0f} MiB"})
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: {files}, raysal vs raysal on read_parquet()",
                         "baseline": round(t_read, 3), "ratio": round(t_read / t_folder, 2),
                         "notes": f"exact={exact_pq}; the baseline ran once"})
    return rows


def run(quick: bool, repeats: int) -> list[Row]:
    """In memory: ``select_top_k`` on a materialised dataset against numpy on the same arrays and
    ``sort().limit()``. From Parquet, as a round reads the scores: files of 250k rows with an
    ``error`` column, against pyarrow + numpy in one process and against raysal on Ray Data's
    ``read_parquet`` (one run: it costs seconds per read)."""
    rows = []
    for n in ([1_000_000] if quick else [1_000_000, 10_000_000]):
        rows += topk_case(n, repeats)
    return rows
