"""Accuracy reports and human label validation: pure functions, exact answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raysal.labelling.labels import LabelFileError, read_label_file, validate_labels
from raysal.report.metrics import accuracy_report

CLASSES = ["cat", "dog", "fox"]


def test_accuracy_report_per_class_and_empty_classes():
    report = accuracy_report(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), CLASSES)
    assert report["accuracy"] == pytest.approx(3 / 5) and report["count"] == 5
    assert report["per_class"] == {"cat": 0.5, "dog": pytest.approx(2 / 3), "fox": None}


def test_accuracy_report_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy_report(np.array([0, 1]), np.array([0]), CLASSES)


SELECTED = np.array([10, 11, 12])
POOL = np.array([10, 11, 12, 13, 14])


@pytest.mark.parametrize("labels", [["fox", "cat", "dog"], ["2", "0", "1"], [2, 0, 1]], ids=["names", "digits", "ints"])
def test_labels_by_name_or_index(labels):
    table = pa.table({"image_id": [12, 10, 11], "label": labels})
    out = validate_labels(table, SELECTED, POOL, CLASSES, round_number=3).table
    assert dict(zip(out["image_id"].to_pylist(), out["label"].to_pylist(), strict=True)) == {10: 0, 11: 1, 12: 2}


@pytest.mark.parametrize(("rows", "message"), [
    ([(10, "cat"), (11, "dog"), (12, "fox"), (99, "cat")], "unknown image_ids [99]"),
    ([(10, "cat"), (11, "dog"), (12, "fox"), (13, "cat")], "image_ids not selected in round 3: [13]"),
    ([(10, "cat"), (11, "wolf"), (12, "fox")], "unknown classes ['wolf']"),
    ([(10, "cat"), (11, "7"), (12, "fox")], "unknown classes ['7']"),
    ([(10, "cat"), (10, "dog"), (11, "dog"), (12, "fox")],
     "2 of 3 selected images are labelled, fewer than the 3 that label.min_labelled = 0.9 asks; without a label: "
     "[10] (1 with tied annotations, e.g. [10])"),
    ([(10, "cat"), (11, "dog")], "without a label: [12]"),
    ([(10, "cat"), (11, None), (12, "fox")], "without a label: [11]"),
])
def test_bad_label_files_are_refused_naming_the_problem(rows, message):
    table = pa.table({"image_id": pa.array([r[0] for r in rows], pa.int64()),
                      "label": pa.array([r[1] for r in rows], pa.string())})
    with pytest.raises(LabelFileError, match="nothing applied") as error:
        validate_labels(table, SELECTED, POOL, CLASSES, round_number=3)
    assert message in str(error.value)


def test_label_files_read_from_csv_and_parquet(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,label\n10,cat\n11,1\n12,fox\n")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_id": [10, 11, 12], "label": ["cat", "dog", "fox"]}), tmp_path / "labels.parquet")
    for path in (csv, tmp_path / "labels.parquet"):
        out = validate_labels(read_label_file(str(path)), SELECTED, POOL, CLASSES, round_number=1)
        assert out.table["label"].to_pylist() == [0, 1, 2] and out.unlabelled.tolist() == []
    with pytest.raises(LabelFileError, match="does not exist"):
        read_label_file(str(tmp_path / "missing.csv"))
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(LabelFileError, match=r"expected a .csv, .parquet or .json \(Label Studio export\)"):
        read_label_file(str(tmp_path / "labels.txt"))
    (tmp_path / "cols.csv").write_text("id,label\n1,cat\n")
    with pytest.raises(LabelFileError, match=r"lacks columns \['image_id'\]"):
        read_label_file(str(tmp_path / "cols.csv"))
