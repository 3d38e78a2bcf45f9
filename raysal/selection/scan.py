"""The exact top-k scan of score tables: pure pyarrow and numpy, what each scan task runs.

A scan keeps, from a stream of parts, only the rows that can still be among the best k (and,
with a quota, among each predicted class's best), merging as it goes; ``best_rows`` merges the
kept rows of several scans. The Ray fan-out over blocks and files is ``raysal.run.topk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from raysal.hashing import id_keys
from raysal.selection.topk import candidate_rows, is_in_sorted, top_k_indices, top_k_unordered

RANK = "_rank"  # the column a scan ranks by when a strategy's keys are not the scores
Keys = Callable[[NDArray[np.floating], NDArray[np.int64]], NDArray[np.floating]]


def column_numpy(column: pa.ChunkedArray) -> NDArray:
    """A column as numpy: zero-copy for one chunk without nulls; null scores become NaN."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return array.to_numpy(zero_copy_only=False)


def rank_of(table: pa.Table) -> NDArray[np.floating]:
    """What the rows are ranked by: a strategy's keys where a scan added them, else the scores."""
    return column_numpy(table[RANK if RANK in table.column_names else "score"])


def best_rows(tables: list[pa.Table | None], k: int, ordered: bool, quota: int = 0) -> pa.Table | None:
    """The top k rows of the tables together; in selection order when ``ordered``. With a
    ``quota``, also the top ``quota`` of each predicted class, each row once (in no set order):
    every row that ``topk.class_balanced_indices`` can choose."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    merged = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    scores, ids = rank_of(merged), column_numpy(merged["image_id"])
    if quota:
        _, first = np.unique(ids, return_index=True)  # a row kept both among all and in its class: once
        if len(first) < merged.num_rows:
            merged, scores, ids = merged.take(first), scores[first], ids[first]
        chosen = [top_k_unordered(scores, ids, n) if rows is None else rows[top_k_unordered(scores[rows], ids[rows], n)]
                  for _, rows, n in groups(merged, k, quota)]
        return merged.take(np.unique(np.concatenate(chosen)))
    return merged.take(top_k_indices(scores, ids, k) if ordered else top_k_unordered(scores, ids, k))


@dataclass(frozen=True)
class Scanned:
    """What a scan reports besides its best rows."""

    skipped: pa.Table | None  # image_id, uri, reason of the rows with a non-empty ``error``
    lowest: float  # the lowest score; inf when every score was NaN
    highest: float  # the highest score; -inf when every score was NaN
    rows: int
    sample: pa.Table | None = None  # image_id, predicted of the scanned stop-set candidates


def smallest_keys(table: pa.Table, n: int) -> pa.Table:
    """The ``n`` rows of ``table`` whose image ids have the smallest ``id_keys``, in no set order.

    The stop set is the pool's images with the smallest keys: a uniform sample, the same images
    from round to round but for those selected since, found by a scan that needs no pool size.
    Keys are a bijection of ids (no ties), so the n smallest of parts' n smallest are exact.
    """
    if table.num_rows <= n:
        return table
    keys = id_keys(column_numpy(table["image_id"]))
    return table.take(np.argpartition(keys, n - 1)[:n])


def scan(parts: Iterable[pa.Table], k: int, exclude_sorted: NDArray[np.int64], columns: list[str],
          sample: int = 0, keys: Keys | None = None, quota: int = 0) -> tuple[pa.Table | None, Scanned]:
    """The best k rows of a stream of parts (in no set order), and what else the round reports.

    Only candidates leave a part (``candidate_rows``: at most k, none below the best k's lowest
    score seen so far), and they merge when they pass 2k, so a scan holds ~3k rows plus one part.
    ``sample``: also keep the id and predicted class of the ``sample`` scored, not excluded
    images with the smallest ``hashing.id_keys`` (the stop set), held the same way. ``keys``: rank by
    ``keys(scores, ids)`` instead of the scores (a strategy's), carried in a ``RANK`` column.
    ``quota``: also the best ``quota`` of each predicted class, each kept the same way (about
    3 x quota rows more per class).
    """
    kept: dict[str, list[pa.Table]] = {}  # by group: "all", and each class with a quota
    n_kept: dict[str, int] = {}
    threshold: dict[str, float] = {}
    skipped: list[pa.Table] = []
    sampled: list[pa.Table] = []
    lowest, highest, rows = np.inf, -np.inf, 0
    for part in parts:
        scores, ids = column_numpy(part["score"]), column_numpy(part["image_id"])  # [n], [n]
        rank = keys(scores, ids) if keys is not None else scores  # [n]
        rows += len(scores)
        if sample:
            scored = np.flatnonzero(~np.isnan(scores) & ~is_in_sorted(ids, exclude_sorted))
            sampled.append(smallest_keys(part.select(["image_id", "predicted"]).take(scored), sample))
            if sum(t.num_rows for t in sampled) > 2 * sample:
                sampled = [smallest_keys(pa.concat_tables(sampled, promote_options="permissive"), sample)]
        low = np.fmin.reduce(scores) if len(scores) else np.nan  # fmin skips NaN
        high = np.fmax.reduce(scores) if len(scores) else np.nan
        if low < lowest:
            lowest = float(low)
        if high > highest:
            highest = float(high)
        if "error" in part.column_names and not pa.types.is_null(part.schema.field("error").type):
            bad = np.flatnonzero(column_numpy(pc.binary_length(part["error"]).fill_null(0)))  # null: no error
            if bad.size:
                rows_bad = part.take(bad)
                skipped.append(pa.table({"image_id": rows_bad["image_id"], "uri": rows_bad["uri"],
                                         "reason": rows_bad["error"]}))
        for group, members, n in groups(part, k, quota):
            if members is None:  # the whole part: no copy
                keep = candidate_rows(rank, ids, n, threshold.get(group, -np.inf), exclude_sorted)
            else:
                keep = members[candidate_rows(rank[members], ids[members], n, threshold.get(group, -np.inf),
                                              exclude_sorted)]
            if not keep.size:
                continue
            if keep.size == n:  # n rows of this part rank at least their lowest: nothing below it can win
                threshold[group] = max(threshold.get(group, -np.inf), float(rank[keep].min()))
            chosen = part.select(columns).take(keep)
            kept.setdefault(group, []).append(chosen.append_column(RANK, pa.array(rank[keep]))
                                              if keys is not None else chosen)
            n_kept[group] = n_kept.get(group, 0) + keep.size
            if n_kept[group] > 2 * n:
                best = best_rows(kept[group], n, ordered=False)
                kept[group], n_kept[group] = [best], best.num_rows
                threshold[group] = max(threshold.get(group, -np.inf), float(rank_of(best).min()))  # n rows
    skipped_table = pa.concat_tables(skipped, promote_options="permissive") if skipped else None
    sample_table = smallest_keys(pa.concat_tables(sampled, promote_options="permissive"), sample) if sampled else None
    best = best_rows([t for tables in kept.values() for t in tables], k, ordered=False, quota=quota)
    return best, Scanned(skipped_table, lowest, highest, rows, sample_table)


def groups(part: pa.Table, k: int, quota: int) -> list[tuple[str, NDArray[np.intp] | None, int]]:
    """The groups a scan keeps the best of: (name, rows (None: all), how many). All rows, k of
    them; with a quota, also each predicted class (a null class counts as -1), ``quota`` of each."""
    groups: list[tuple[str, NDArray[np.intp] | None, int]] = [("all", None, k)]
    if quota:
        classes = column_numpy(pc.fill_null(part["predicted"], -1)).astype(np.int64)  # [n]
        order = np.argsort(classes, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(classes[order])) + 1)
        groups += [(f"class {classes[rows[0]]}", rows, quota) for rows in runs if rows.size]
    return groups
