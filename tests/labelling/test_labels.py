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


@pytest.mark.parametrize("labels", [["2.0", "0", " 1 "], [2.0, 0.0, 1.0]], ids=["float-strings", "floats"])
def test_integral_floats_are_class_indices(labels):
    """pandas writes a label column with gaps as floats (3.0): those are indices, not unknown classes."""
    table = pa.table({"image_id": [12, 10, 11], "label": labels})
    out = validate_labels(table, SELECTED, POOL, CLASSES, round_number=3).table
    assert dict(zip(out["image_id"].to_pylist(), out["label"].to_pylist(), strict=True)) == {10: 0, 11: 1, 12: 2}


def test_a_float_column_with_gaps_leaves_those_images_unlabelled():
    table = pa.table({"image_id": [10, 11, 12], "label": [0.0, float("nan"), 2.0]})
    taken = validate_labels(table, SELECTED, POOL, CLASSES, round_number=3, min_labelled=0.5)
    assert taken.table["image_id"].to_pylist() == [10, 12] and taken.unlabelled.tolist() == [11]


@pytest.mark.parametrize("bad", ["²", "١", "2.5", "1e400", "True", "-1", "3"])
def test_malformed_labels_are_refused_with_their_line(bad, tmp_path):
    """A Unicode digit, a fraction, an overflow, an index out of range: exit 2 (LabelFileError) with
    the line of the CSV, never a ValueError from int()."""
    path = tmp_path / "labels.csv"
    path.write_text(f"image_id,label\n10,cat\n11,{bad}\n12,fox\n", encoding="utf-8")
    with pytest.raises(LabelFileError) as error:
        validate_labels(read_label_file(str(path)), SELECTED, POOL, CLASSES, round_number=3)
    assert f"unknown classes [{bad!r}] on lines [3]" in str(error.value)


def test_the_csv_for_people_survives_any_file_name_and_runs_no_formula(tmp_path):
    """to_label.csv's writer: names with commas, quotes and newlines come back exact through
    Python's csv and pyarrow; a cell a spreadsheet would run as a formula is prefixed with '."""
    import csv
    import io

    import pyarrow.csv as pacsv

    from raysal.labelling.labels import people_csv

    names = ["/img/a,b.jpg", '/img/say "cheese".jpg', "/img/two\nlines.jpg", "/img/plain.jpg", "=HYPERLINK(\"x\")",
             "@SUM(A1)", "+1", "-1"]
    text = people_csv(("image_id", "uri"), [(i, n) for i, n in enumerate(names)])
    back = list(csv.DictReader(io.StringIO(text)))
    assert [r["uri"] for r in back[:4]] == names[:4]
    assert [r["uri"] for r in back[4:]] == [f"'{n}" for n in names[4:]]
    table = pacsv.read_csv(io.BytesIO(text.encode()), parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert table["uri"].to_pylist()[:4] == names[:4] and table["image_id"].to_pylist() == list(range(len(names)))
    # Labelled in place (a label column added), the file imports by image_id.
    labelled = tmp_path / "to_label.csv"
    rows = list(csv.reader(io.StringIO(text)))
    with open(labelled, "w", newline="") as f:
        csv.writer(f).writerows([rows[0] + ["label"]] + [r + [CLASSES[i % 3]] for i, r in enumerate(rows[1:])])
    assert read_label_file(str(labelled))["image_id"].to_pylist() == list(range(len(names)))
