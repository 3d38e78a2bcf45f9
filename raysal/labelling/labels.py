"""Human labels: read a file of ``image_id,label`` and validate it against a round.

A file is CSV or Parquet with ``image_id,label`` columns (Label Studio's CSV export is one), or
Label Studio's JSON or JSON-MIN export (``raysal.labelling.labelstudio``). A row may have no label (a
skipped task): that image stays unlabelled and goes back to the pool. Nothing is applied from a
file that fails: every problem is listed in one error.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from raysal import storage
from raysal.config import LabelConfig
from raysal.errors import LabelFileError  # noqa: F401  (raised here; importable from here too)
from raysal.labelling import labelstudio


def read_label_file(path: str) -> pa.Table:
    """``image_id`` (int64) and ``label`` (a class name or index; null: unlabelled), a row per
    annotation: an image may have several, or none that chose a class."""
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type == pa.fs.FileType.NotFound:
        raise LabelFileError(f"label file {path} does not exist")
    if not path.endswith((".csv", ".parquet", ".json")):
        raise LabelFileError(f"label file {path}: expected a .csv, .parquet or .json (Label Studio export) file")
    try:
        if path.endswith(".json"):
            with fs.open_input_stream(inner) as stream:
                return labelstudio.read_annotations_json(stream.read(), path)
        if path.endswith(".parquet"):
            table = pq.read_table(inner, filesystem=fs)
        else:
            with fs.open_input_stream(inner) as stream:
                table = pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                       convert_options=pacsv.ConvertOptions(
                    column_types={"image_id": pa.int64(), "label": pa.string()}, strings_can_be_null=True,
                    null_values=[""]))  # only an empty field: "NA" or "null" may be class names
    except pa.ArrowInvalid as exc:  # e.g. an image_id that is not an integer, or not a Parquet file
        raise LabelFileError(f"label file {path} cannot be read, nothing applied: {exc}") from None
    except labelstudio.AnnotationError as exc:
        raise LabelFileError(f"label file refused, nothing applied: {exc}") from None
    missing = {"image_id", "label"} - set(table.column_names)
    if missing:
        raise LabelFileError(f"label file {path} lacks columns {sorted(missing)}; it needs image_id,label")
    if not pa.types.is_integer(table.schema.field("image_id").type):
        raise LabelFileError(f"label file {path}: image_id must be integers, got {table.schema.field('image_id').type}")
    return table


def _as_index(value: object) -> int | None:
    """A class index written as an int, an integral float (``3.0``, as pandas writes a column with
    gaps) or a string of ASCII digits, possibly ``3.0``; None for anything else (``²``, ``3.5``, ``x``)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii():  # int() takes "²"-like digits of every script, and "١" too: not an index here
            return None
        if text.isdigit():
            return int(text)
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _class_index(values: list, classes: Sequence[str]) -> tuple[list[int | None], list[int]]:
    """Class names or indices to indices, and the positions (in ``values``) of those that are neither."""
    index = {name: i for i, name in enumerate(classes)}
    out, bad = [], []
    for position, value in enumerate(values):
        i = index[value] if isinstance(value, str) and value in index else _as_index(value)
        ok = i is not None and 0 <= i < len(classes)
        out.append(i if ok else None)
        if not ok:
            bad.append(position)
    return out, bad


SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so runs as a formula in a spreadsheet


def people_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A CSV for people: quoted as needed (commas, quotes and newlines in file names survive a
    round trip through any CSV reader), and a text cell that a spreadsheet would run as a formula
    prefixed with ``'`` (OWASP's CSV-injection advice). Numbers are written as they are."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"'{cell}" if isinstance(cell, str) and cell.startswith(SPREADSHEET_FORMULA) else cell
                         for cell in row])
    return out.getvalue()


@dataclass(frozen=True)
class RoundLabels:
    """What a round takes from a label file."""

    table: pa.Table  # image_id, label (int64): the selected images that got a class
    unlabelled: NDArray[np.int64]  # selected images without one: skipped, missing, or a tie; back to the pool
    ties: NDArray[np.int64]  # of those, images whose annotators disagreed with no majority


def _majority(ids: NDArray[np.int64], labels: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64],
                                                                            NDArray[np.int64]]:
    """Per image, its most frequent label; (ids, labels, tied ids), the tied ones left out."""
    if not len(ids):
        return ids, labels, ids
    pairs, counts = np.unique(np.stack([ids, labels], axis=1), axis=0, return_counts=True)  # [p, 2], [p]
    order = np.lexsort((-counts, pairs[:, 0]))  # by image, then most votes first
    pairs, counts = pairs[order], counts[order]
    first = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])  # each image's top label
    runner_up = first + 1
    tied = (runner_up < len(pairs)) & (pairs[np.minimum(runner_up, len(pairs) - 1), 0] == pairs[first, 0]) & \
        (counts[np.minimum(runner_up, len(pairs) - 1)] == counts[first])
    return pairs[first[~tied], 0], pairs[first[~tied], 1], pairs[first[tied], 0]


def validate_labels(table: pa.Table, selected_ids: NDArray[np.int64], pool_ids: NDArray[np.int64] | None,
                    classes: Sequence[str], round_number: int, min_labelled: float = LabelConfig.min_labelled,
                    multiple: str = LabelConfig.multiple) -> RoundLabels:
    """The labels a round takes from ``table`` (``read_label_file``), or LabelFileError listing
    every problem.

    A selected image without a label (no row, or rows whose label is empty: skipped) stays
    unlabelled; the file is refused if fewer than ``min_labelled`` of the selection are labelled.
    An image with several labels takes the most frequent (``multiple = "majority"``, a plurality;
    a tie leaves it unlabelled) or refuses the file (``"refuse"``). Ids that are unknown or were not selected,
    empty ids, and unknown classes refuse the file.

    Args:
        selected_ids: the round's selection: only these may be labelled.
        pool_ids: every id the round scored, to tell unknown ids from ids not selected.
    """
    ids = table["image_id"].cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    values = [None if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))
              else v for v in table["label"].to_pylist()]  # empty, or NaN as pandas writes a gap: skipped
    problems = []
    if table["image_id"].null_count:
        problems.append(f"{table['image_id'].null_count} rows with an empty image_id")
    named = np.array([v is not None for v in values], dtype=bool)  # [n] rows that chose a class
    unique = np.unique(ids[ids >= 0])
    not_selected = np.setdiff1d(unique, selected_ids)
    if len(not_selected):
        unknown = not_selected if pool_ids is None else np.setdiff1d(not_selected, pool_ids)
        if len(unknown):
            problems.append(f"unknown image_ids {unknown[:10].tolist()}")
        other = np.setdiff1d(not_selected, unknown)
        if len(other):
            problems.append(f"image_ids not selected in round {round_number}: {other[:10].tolist()}")
    rows = [row for row, v in enumerate(values) if v is not None]  # [rows with a label] in the file
    indices, bad = _class_index([values[row] for row in rows], classes)
    if bad:
        lines = [rows[b] + 2 for b in bad]  # 1-based, after a header line: a CSV's line numbers
        problems.append(f"unknown classes {sorted({str(values[rows[b]]) for b in bad})[:10]} on lines "
                        f"{lines[:10]}{' ...' if len(lines) > 10 else ''} (a CSV's lines, the header being line 1; "
                        f"classes: {list(classes)}, or their indices 0-{len(classes) - 1})")
    labelled_ids = ids[named]
    repeated, counts = np.unique(labelled_ids, return_counts=True)
    if multiple == "refuse" and (counts > 1).any():
        problems.append(f"image_ids labelled more than once {repeated[counts > 1][:10].tolist()} "
                        "(label.multiple = 'refuse'; 'majority' takes the most frequent label)")
    index = np.array([-1 if i is None else i for i in indices], np.int64)  # [rows with a label]
    valid = (index >= 0) & np.isin(labelled_ids, selected_ids)  # what the round may take
    chosen, chosen_labels, ties = _majority(labelled_ids[valid].astype(np.int64), index[valid])
    unlabelled = np.setdiff1d(selected_ids, chosen).astype(np.int64)
    required = math.ceil(round(min_labelled * len(selected_ids), 9))  # 0.07 x 100 is 7.000000000000001
    if len(chosen) < required:
        problems.append(f"{len(chosen)} of {len(selected_ids)} selected images are labelled, fewer than the "
                        f"{required} that label.min_labelled = {min_labelled:g} asks; without a label: "
                        f"{unlabelled[:10].tolist()}{' ...' if len(unlabelled) > 10 else ''}"
                        + (f" ({len(ties)} with tied annotations, e.g. {ties[:5].tolist()})" if len(ties) else ""))
    if problems:
        raise LabelFileError("label file refused, nothing applied: " + "; ".join(problems))
    table = pa.table({"image_id": pa.array(chosen, pa.int64()), "label": pa.array(chosen_labels, pa.int64())})
    return RoundLabels(table, unlabelled, ties)
