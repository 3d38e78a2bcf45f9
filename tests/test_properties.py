"""Property tests (hypothesis): whatever a user hands raysal — a label file, a manifest, a
``--set`` override — it gives a result or refuses with a message and exit 2, never a traceback.

Each test feeds generated input to the function the command calls and allows exactly that:
a result, or a raysal error whose exit code is 2 (``raysal.errors``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raysal.config import ConfigError, load_config, parse_override
from raysal.data.manifest import read_manifest_table
from raysal.errors import EXIT_CONFIG, RaysalError
from raysal.labelling.labels import read_label_file, validate_labels

CLASSES = ("cat", "dog", "fox")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused_with_2(exc: BaseException) -> bool:
    return isinstance(exc, RaysalError) and exc.exit_code == EXIT_CONFIG and bool(str(exc))


# --- label files ---------------------------------------------------------------------------------

CELLS = st.one_of(st.integers(-3, 10**20).map(str), st.sampled_from([*CLASSES, "", "3.0", "2.5", "1e400", "²", "nan",
                                                                     "=1+2", '"', "a,b", "x\ny", "-1", "0x10"]),
                  st.text(max_size=8))


@st.composite
def label_csvs(draw) -> str:
    header = draw(st.sampled_from(["image_id,label", "label,image_id", "image_id", "id,label", "image_id,label,extra"]))
    rows = draw(st.lists(st.lists(CELLS, min_size=1, max_size=3), max_size=8))
    quote = lambda cell: '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n') else cell  # noqa: E731
    return "\n".join([header, *(",".join(map(quote, row)) for row in rows)]) + draw(st.sampled_from(["", "\n"]))


@SETTINGS
@given(text=st.one_of(label_csvs(), st.text(max_size=200)))
def test_any_label_csv_is_read_or_refused_with_2(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_text(text)
        check_labels(str(path))


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["data", "image_id", "annotations", "result", "value", "choices", "was_cancelled", "id",
                         "label", "from_name"]), inner, max_size=4)), max_leaves=12).map(
    lambda value: json.dumps(value).encode())))
@example(data=b'[{"data": true}]')  # found in CI: a task's data not an object
@example(data=b'[{"annotations": [{"result": [{"value": {"choices": 5}}]}]}]')
@example(data=b'[{"image_id": 1e400}]')
@example(data=b'[null]')
def test_any_label_studio_export_is_read_or_refused_with_2(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.json"
        path.write_bytes(data)
        check_labels(str(path))


def check_labels(path: str) -> None:
    try:
        table = read_label_file(path)
        validate_labels(table, np.arange(5, dtype=np.int64), np.arange(10, dtype=np.int64), CLASSES, 1)
    except Exception as exc:  # noqa: BLE001  (the property: only a refusal with exit 2)
        assert refused_with_2(exc), repr(exc)


# --- manifests -----------------------------------------------------------------------------------

LABELS = st.one_of(st.none(), st.integers(-2, 5), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([*CLASSES, "bird", ""]))


@st.composite
def manifests(draw) -> pa.Table:
    n = draw(st.integers(0, 6))
    columns = {}
    if draw(st.booleans()):
        columns["image_id"] = draw(st.one_of(
            st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n).map(
                lambda v: pa.array(v, pa.int64())),
            st.lists(st.text(max_size=4), min_size=n, max_size=n).map(pa.array),
            st.lists(st.floats(allow_nan=True), min_size=n, max_size=n).map(pa.array)))
    if draw(st.booleans()):
        columns["uri"] = pa.array(draw(st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=n, max_size=n)),
                                  pa.string())
    if draw(st.booleans()):
        values = draw(st.lists(LABELS, min_size=n, max_size=n))
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) <= 1:  # a Parquet column has one type
            columns["label"] = pa.array(values)
    if draw(st.booleans()):
        columns["image_bytes"] = pa.array(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), pa.binary())
    return pa.table(columns) if columns else pa.table({"other": pa.array(range(n))})


@SETTINGS
@given(table=manifests())
def test_any_manifest_is_read_or_refused_with_2(table: pa.Table) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pool.parquet"
        pq.write_table(table, path)
        try:
            read_manifest_table(str(path), CLASSES, "data.pool")
        except Exception as exc:  # noqa: BLE001  (the property: only a refusal with exit 2)
            assert refused_with_2(exc), repr(exc)


# --- --set overrides -----------------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["select.budget", "select.criterion", "train.num_workers", "score.batch_size",
                                  "data.classes", "data.pool.rows", "model.kind", "select", "select.budget.x",
                                  "label.presign_expiry_s", "score.gpus_per_actor", "seed", "", ".", "a..b",
                                  "train.resource_timeout_s", "data.pool", "model.input_size"]),
                 st.text(alphabet="abcdelst._", max_size=20))
VALUES = st.one_of(st.sampled_from(["100", "-1", "0", "1e400", "nan", "inf", "true", '"text"', "[1, 2]", '["a"]',
                                    "{a = 1}", "2.5", "", "[", "0.5", '"least_confidence"']), st.text(max_size=10))


@SETTINGS
@given(assignments=st.lists(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=12),
                            max_size=4))
def test_any_set_override_gives_a_config_or_refuses_with_2(assignments: list[str]) -> None:
    try:
        load_config("demo", dict(parse_override(a) for a in assignments))
    except Exception as exc:  # noqa: BLE001  (the property: only a refusal with exit 2)
        assert isinstance(exc, ConfigError) and refused_with_2(exc), repr(exc)


def test_a_refusal_is_what_the_properties_allow() -> None:
    """The properties' own check: a refusal passes, anything else fails."""
    with pytest.raises(ConfigError) as refused:
        load_config("demo", {"select.budget": -1})
    assert refused_with_2(refused.value) and not refused_with_2(ValueError("bug"))
