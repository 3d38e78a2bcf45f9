"""The report's parts that a browser does not see: thumbnails made on Ray from packed Parquet
shards and cached, ``raysal report`` on a state on S3, and its refusals."""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raysal.cli import main as raysal_main
from raysal.config import SourceConfig, load_config
from raysal.data import pack
from raysal.data.manifest import read_manifest_table
from raysal.run import thumbnails
from raysal.run.state import RunState

from _jobs import copy_state, round_file

BUCKET = "raysal-test"


@pytest.mark.timeout(300)
def test_thumbnails_of_a_packed_pool_are_made_on_ray_once(ray_session, image_folder, tmp_path):
    """A pool packed into Parquet shards has no file to read by URI: its selection's thumbnails
    come from the shards' bytes, on Ray; an unreadable image gets its reason instead. The second
    call reads them from the round's cache, even with the pool gone."""
    folder, outcomes = image_folder
    packed = str(tmp_path / "packed")
    pack.pack(folder, packed)
    cfg = load_config("demo")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, classes=("a", "b", "c"), pool=SourceConfig(kind="manifest", path=packed, where="data.pool")))
    selection = read_manifest_table(packed, cfg.data.classes, "data.pool").select(["image_id", "uri"])
    state = RunState(str(tmp_path / "state"))
    gone = pa.table({"image_id": pa.array([987654321], pa.int64()), "uri": ["/removed/since.jpg"]})
    made = thumbnails.thumbnails(state, cfg, 3, pa.concat_tables([selection, gone]))
    assert made.pop(987654321) == (None, thumbnails.GONE)  # kept with its reason: the pool is not read for it again
    by_name = {Path(uri).relative_to(folder).as_posix(): made[i]
               for i, uri in zip(selection["image_id"].to_pylist(), selection["uri"].to_pylist(), strict=True)}
    assert set(by_name) == {name for name in outcomes if not name.endswith(".txt")}  # what a pack takes
    for name, (jpeg, error) in by_name.items():
        outcome = outcomes[name]
        if outcome == "ok":
            assert error == "" and Image.open(io.BytesIO(jpeg)).size == (thumbnails.SIDE, thumbnails.SIDE), name
        else:
            assert jpeg is None and outcome in error, (name, error)
    assert (tmp_path / "state" / "rounds" / "0003" / thumbnails.FILE).exists()
    shutil.rmtree(packed)
    assert thumbnails.thumbnails(state, cfg, 3, selection) == made  # from the cache: the pool is not read
    assert thumbnails.thumbnails(state, cfg, 3, gone) == {987654321: (None, thumbnails.GONE)}


@pytest.mark.timeout(300)
def test_raysal_report_of_a_state_on_s3(waiting_state, tmp_path, s3, capsys):
    """A run's state on S3 (round 1 waiting for labels) reported into a local folder, reading the
    state only: round 1's selection as thumbnails, the round-0 model's confusion matrix; then into
    the state, where the thumbnails are kept."""
    local = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    (local / "rounds" / "0001" / thumbnails.FILE).unlink(missing_ok=True)
    shutil.rmtree(local / "report", ignore_errors=True)
    fs = pafs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"], scheme="http", region="us-east-1")
    pafs.copy_files(str(local), f"{BUCKET}/report-run", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    out = tmp_path / "out"
    assert raysal_main(["report", "--state", f"s3://{BUCKET}/report-run", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "report of 1 round(s) written in" in said and str(out / "index.html") in said
    page = (out / "index.html").read_text()
    chosen = pq.read_table(round_file(local, 1, "selection.parquet"))["image_id"].to_pylist()
    assert page.count('data-image-id="') == len(chosen) == 40
    assert "waiting for labels" in page and "Confusion matrix of model 0 on the test split" in page
    cached = f"{BUCKET}/report-run/rounds/0001/{thumbnails.FILE}"
    assert fs.get_file_info(cached).type == pafs.FileType.NotFound  # --out: the state is only read

    assert raysal_main(["report", "--state", f"s3://{BUCKET}/report-run"]) == 0  # into the state itself
    assert f"s3://{BUCKET}/report-run/report/index.html" in capsys.readouterr().out
    with fs.open_input_stream(f"{BUCKET}/report-run/report/index.html") as f:
        assert f.read().decode().count('data-image-id="') == 40
    assert fs.get_file_info(cached).type == pafs.FileType.File  # made once, kept for the next report


def test_raysal_report_refuses_a_state_with_no_round(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert raysal_main(["report", "--state", str(tmp_path / "empty")]) == 2
    assert "no round has run in this state, so there is nothing to report" in capsys.readouterr().err


def test_the_report_of_a_cold_starts_round_0_shows_its_selection_with_no_model(tmp_path):
    """Round 0 of a cold start has no model: its selection's cards say so, its scores hold
    features alone, and no figure is drawn; a selected image gone from the pool says so too."""
    import numpy as np
    import pyarrow as pa

    from raysal.run import report

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 80 * i, np.uint8)).save(pool / f"{i}.png")
    cfg = load_config("demo", {"data.pool.kind": "folder", "data.pool.path": str(pool)})
    state = RunState(str(tmp_path / "state"))
    files = state.files(0)
    state.write_json(files.config, cfg.to_dict())
    uris = [str(pool / f"{i}.png") for i in range(3)] + [str(pool / "deleted.png")]
    state.write_table(files.selection, pa.table({"image_id": pa.array([10, 11, 12, 13], pa.int64()), "uri": uris,
                                                 "score": [1.0, 0.9, 0.8, 0.7],
                                                 "predicted": pa.nulls(4, pa.int64()), "rank": [1, 2, 3, 4]}))
    state.write_table(f"{files.scores}/part-0.parquet", pa.table({"image_id": pa.array([10, 11, 12, 13], pa.int64()),
                                                                   "embedding": [[0.0, 1.0]] * 4}))
    for stage in ("score", "select"):
        state.write_json(files.stage(stage), {"stage": stage})
    state.write_json(files.record, {"round": 0, "cold_start": True, "selected": 4, "labelled": 4})
    index = report.write(state)
    page = Path(index).read_text()
    assert page.count("no model yet") == 4 and page.count("data:image/jpeg;base64,") == 3
    assert "unreadable" in page and "done (cold start)" in page and "No round has trained a model yet." in page
