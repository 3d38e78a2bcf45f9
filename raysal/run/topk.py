"""The exact distributed top-k: plain Ray tasks scan a round's score files (or a dataset's
blocks) where they are, and only their best rows reach the driver.

Each task runs ``raysal.selection.scan.scan`` over its share; their best k merge in tasks, 16
at a time, then on the driver. No global sort, no Ray Data job to start for the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
import ray.experimental
from numpy.typing import NDArray
from ray.data.dataset import MaterializedDataset

from raysal import storage
from raysal.model.embeddings import EMBEDDING, column_matrix
from raysal.run.cluster import cluster_cpus
from raysal.selection.scan import Keys, Scanned, best_rows, column_numpy, rank_of, scan, smallest_keys
from raysal.selection.topk import class_balanced_indices

MERGE_FAN_IN = 16  # best-k tables merged per step: the driver never holds more than 16k of them


@ray.remote(num_returns=2)
def _scan_blocks(k: int, exclude_sorted: NDArray[np.int64], columns: list[str], sample: int, keys: Keys | None,
                 quota: int, *blocks: pa.Table) -> tuple[pa.Table | None, Scanned]:
    return scan(blocks, k, exclude_sorted, columns, sample, keys, quota)


@ray.remote(num_returns=2)
def _scan_files(fs: pafs.FileSystem, paths: list[str], read: list[str], k: int, exclude_sorted: NDArray[np.int64],
                columns: list[str], sample: int, keys: Keys | None,
                quota: int) -> tuple[pa.Table | None, Scanned]:
    def parts() -> Iterable[pa.Table]:  # file by file: each keeps its own column types
        for path in paths:
            for batch in pq.ParquetFile(path, filesystem=fs).iter_batches(columns=read):
                yield pa.Table.from_batches([batch])

    return scan(parts(), k, exclude_sorted, columns, sample, keys, quota)


@ray.remote
def _merge_best(k: int, quota: int, *tables: pa.Table | None) -> pa.Table | None:
    return best_rows(list(tables), k, ordered=False, quota=quota)


def _block_groups(blocks: list[ray.ObjectRef], groups: int) -> list[list[ray.ObjectRef]]:
    """Blocks cut into about ``groups`` runs of equal bytes, each run held by one node, so that
    a task over a run starts where its blocks are (Ray places a task by its arguments' bytes)."""
    where = ray.experimental.get_object_locations(blocks)
    by_node: dict[str, list[tuple[ray.ObjectRef, int]]] = {}
    for ref in blocks:
        place = where.get(ref, {})
        node = (place.get("node_ids") or [""])[0]  # "": small enough to travel inline
        by_node.setdefault(node, []).append((ref, place.get("object_size") or 1))
    target = sum(size for refs in by_node.values() for _, size in refs) / groups
    runs: list[list[ray.ObjectRef]] = []
    for refs in by_node.values():
        run, run_bytes = [], 0
        for ref, size in refs:
            run.append(ref)
            run_bytes += size
            if run_bytes >= target:
                runs.append(run)
                run, run_bytes = [], 0
        if run:
            runs.append(run)
    return runs


def _scan_dataset(scored: ray.data.Dataset, k: int, exclude_ref: ray.ObjectRef, columns: list[str],
                  tasks: int, sample: int, keys: Keys | None,
                  quota: int) -> list[tuple[ray.ObjectRef, ray.ObjectRef]]:
    wanted = list(dict.fromkeys([*columns, *(["uri", "error"] if "error" in scored.columns() else [])]))
    if not isinstance(scored, MaterializedDataset):
        scored = scored.select_columns(wanted)  # pushed into the read; a materialised one is read as it is
    blocks = scored.to_arrow_refs()
    runs = _block_groups(blocks, tasks) if blocks else []
    return [_scan_blocks.remote(k, exclude_ref, columns, sample, keys, quota, *run) for run in runs]


def _scan_parquet(folder: str, k: int, exclude_ref: ray.ObjectRef, columns: list[str],
                  tasks: int, sample: int, keys: Keys | None,
                  quota: int) -> list[tuple[ray.ObjectRef, ray.ObjectRef]]:
    fs, path = storage.resolve(folder)
    found = pads.dataset(path, filesystem=fs, format="parquet")  # pyarrow's discovery: skips _* and .* files
    if not found.files:
        return []
    read = list(dict.fromkeys([*columns, *(["uri", "error"] if "error" in found.schema.names else [])]))
    runs = np.array_split(np.array(found.files, dtype=object), min(len(found.files), tasks))
    return [_scan_files.remote(fs, list(paths), read, k, exclude_ref, columns, sample, keys, quota)
            for paths in runs]


def score_columns(folder: str) -> list[str]:
    """The columns of the score files under ``folder`` (a path or URI)."""
    fs, path = storage.resolve(folder)
    return pads.dataset(path, filesystem=fs, format="parquet").schema.names


@dataclass(frozen=True)
class Selection:
    """The result of one pass over a round's scores."""

    rows: dict[str, NDArray]  # the top k rows, in selection order
    skipped: dict[str, NDArray]  # image_id, uri, reason of every image that could not be scored
    score_min: float | None  # over every scored image
    score_max: float | None
    rows_read: int  # every row of the scores: selectable, skipped and excluded
    stop_set: dict[str, NDArray] | None = None  # image_id (ascending), predicted: see ``select_top_k``'s sample


def select_top_k(scored: ray.data.Dataset | str, k: int, exclude_ids: NDArray[np.int64] | None = None,
                 columns: tuple[str, ...] = ("image_id", "uri", "score", "predicted"),
                 tasks: int | None = None, sample: int = 0, keys: Keys | None = None,
                 per_class: int = 0) -> Selection:
    """Exact top-k rows of ``scored`` by (score desc, image_id asc), never an excluded id.

    ``scored`` is a dataset, or the folder (path or URI) of the Parquet files scoring wrote: plain
    tasks read those files, only the columns needed. (Ray Data's ``read_parquet`` starts actors to
    read the footers on every read, ~7 s on 2 cores: more than the whole selection.) One task per
    CPU scans its blocks or files (``raysal.selection.scan.scan``); plain tasks, as Ray Data's per-task cost (~25 ms on
    2 cores) is more than a block's top-k. Their best k merge on the driver (first in tasks, 16 at
    a time, when there are many), so the driver holds ~16k rows plus the skipped ones (and, with
    ``sample``, that many rows per task; with ``per_class``, up to twice the rows).

    Args:
        tasks: how many scan tasks (about; blocks are grouped by node); default one per CPU.
        sample: also return the stop set, the id and predicted class of ``sample`` scored, not
            excluded images, a fixed pseudo-random choice by id (``hashing.id_keys``): rounds that
            keep theirs can tell how much the model's predictions changed. Needs ``predicted``.
        keys: rank by ``keys(scores, image_ids)`` (higher first, NaN never) instead of the
            scores, e.g. ``criteria.SelectionKeys``: a strategy's exact top k of its keys.
        per_class: the number of classes, for a selection with a quota of ``k // per_class``
            per predicted class (``topk.class_balanced_indices``): the scans keep each class's
            best quota besides the best k, about twice the rows. 0: none.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    columns = list(dict.fromkeys(["image_id", "score", *columns, *(["predicted"] if sample or per_class else [])]))
    exclude = np.unique(np.asarray(exclude_ids if exclude_ids is not None else [], dtype=np.int64))
    exclude_ref = ray.put(exclude)  # stored once; tasks fetch it instead of each carrying a copy
    scan_with = _scan_parquet if isinstance(scored, str) else _scan_dataset
    quota = k // per_class if per_class > 0 else 0  # 0: the plain top k (also a budget below the classes)
    scans = scan_with(scored, k, exclude_ref, columns, max(1, tasks or cluster_cpus()), sample, keys, quota)
    best_refs = [best for best, _ in scans]
    while len(best_refs) > MERGE_FAN_IN:
        best_refs = [_merge_best.remote(k, quota, *best_refs[i:i + MERGE_FAN_IN])
                     for i in range(0, len(best_refs), MERGE_FAN_IN)]
    if quota:
        candidates = best_rows(ray.get(best_refs), k, ordered=False, quota=quota)
        best = None if candidates is None else candidates.take(class_balanced_indices(
            rank_of(candidates), column_numpy(candidates["image_id"]),
            column_numpy(pc.fill_null(candidates["predicted"], -1)), k, per_class))
    else:
        best = best_rows(ray.get(best_refs), k, ordered=True)
    reports: list[Scanned] = ray.get([report for _, report in scans])
    rows = {c: (column_matrix(best[c]) if c == EMBEDDING else best[c].to_numpy(zero_copy_only=False))
            if best is not None else (np.empty((0, 0), np.float16) if c == EMBEDDING else np.empty(0))
            for c in columns}
    skipped = [r.skipped for r in reports if r.skipped is not None]
    skipped_table = pa.concat_tables(skipped, promote_options="permissive") if skipped else None
    skipped_columns = {c: (skipped_table[c].to_numpy(zero_copy_only=False) if skipped_table is not None
                           else np.empty(0, dtype=object)) for c in ("image_id", "uri", "reason")}
    lowest = min((r.lowest for r in reports), default=np.inf)
    highest = max((r.highest for r in reports), default=-np.inf)
    stop_set = None
    if sample:
        parts = [r.sample for r in reports if r.sample is not None]
        chosen = smallest_keys(pa.concat_tables(parts, promote_options="permissive"), sample) if parts else None
        ids = column_numpy(chosen["image_id"]).astype(np.int64) if chosen is not None else np.empty(0, np.int64)
        predicted = column_numpy(chosen["predicted"]).astype(np.int64) if chosen is not None else np.empty(0, np.int64)
        order = np.argsort(ids)
        stop_set = {"image_id": ids[order], "predicted": predicted[order]}
    return Selection(rows=rows, skipped=skipped_columns, score_min=None if lowest == np.inf else float(lowest),
                     score_max=None if highest == -np.inf else float(highest),
                     rows_read=sum(r.rows for r in reports), stop_set=stop_set)
