"""Human labels: read a CSV or Parquet file of ``image_id,label`` and validate it against a round.

Nothing is applied from a file that fails: every problem is listed in one error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raysal import storage


class LabelFileError(ValueError):
    """A label file that must not be applied; the message lists what is wrong."""


def read_label_file(path: str) -> pa.Table:
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type == pa.fs.FileType.NotFound:
        raise LabelFileError(f"label file {path} does not exist")
    if not path.endswith((".csv", ".parquet")):
        raise LabelFileError(f"label file {path}: expected a .csv or .parquet file")
    try:
        if path.endswith(".parquet"):
            table = pq.read_table(inner, filesystem=fs)
        else:
            with fs.open_input_stream(inner) as stream:
                table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                    column_types={"image_id": pa.int64(), "label": pa.string()}))
    except pa.ArrowInvalid as exc:  # e.g. an image_id that is not an integer, or not a Parquet file
        raise LabelFileError(f"label file {path} cannot be read, nothing applied: {exc}") from None
    missing = {"image_id", "label"} - set(table.column_names)
    if missing:
        raise LabelFileError(f"label file {path} lacks columns {sorted(missing)}; it needs image_id,label")
    if not pa.types.is_integer(table.schema.field("image_id").type):
        raise LabelFileError(f"label file {path}: image_id must be integers, got {table.schema.field('image_id').type}")
    return table


def _class_index(values: list, classes: Sequence[str]) -> tuple[list[int | None], list]:
    """Class names or indices (as ints or digit strings) to indices; also the values that are neither."""
    index = {name: i for i, name in enumerate(classes)}
    out, bad = [], []
    for value in values:
        if value in index:
            out.append(index[value])
        elif isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
            i = int(value)
            out.append(i if 0 <= i < len(classes) else None)
            if not 0 <= i < len(classes):
                bad.append(value)
        else:
            out.append(None)
            bad.append(value)
    return out, bad


def validate_labels(table: pa.Table, selected_ids: np.ndarray, pool_ids: np.ndarray | None,
                    classes: Sequence[str], round_number: int) -> pa.Table:
    """``image_id, label`` (int64) for exactly this round's selection, or LabelFileError listing problems.

    Args:
        selected_ids: the round's selection; every one must be labelled, nothing else.
        pool_ids: every id the round scored, to tell unknown ids from ids not selected.
    """
    ids = table["image_id"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    values = table["label"].to_pylist()
    problems = []
    if table["image_id"].null_count or any(v is None for v in values):
        problems.append("rows with an empty image_id or label")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(f"duplicate image_ids {unique[counts > 1][:10].tolist()}")
    not_selected = np.setdiff1d(unique, selected_ids)
    if len(not_selected):
        unknown = not_selected if pool_ids is None else np.setdiff1d(not_selected, pool_ids)
        if len(unknown):
            problems.append(f"unknown image_ids {unknown[:10].tolist()}")
        other = np.setdiff1d(not_selected, unknown)
        if len(other):
            problems.append(f"image_ids not selected in round {round_number}: {other[:10].tolist()}")
    labels, bad = _class_index([v for v in values if v is not None], classes)
    if bad:
        problems.append(f"unknown classes {sorted(set(map(str, bad)))[:10]} (classes: {list(classes)})")
    missing = np.setdiff1d(selected_ids, unique)
    if len(missing):
        problems.append(f"{len(missing)} selected images have no label, e.g. {missing[:10].tolist()}")
    if problems:
        raise LabelFileError("label file refused, nothing applied: " + "; ".join(problems))
    return pa.table({"image_id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.int64())})
