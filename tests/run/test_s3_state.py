"""The run state on S3: a local S3-compatible server (moto) on loopback, real pyarrow.fs and boto3."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _jobs import FAST, run_job, run_until_killed

BUCKET = "raysal-test"  # created by the s3_env fixture (conftest.py)


def upload_pool(tmp_path: Path) -> str:
    """The demo's pool images and a manifest of their s3:// URIs, uploaded to the bucket."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysal import storage
    from raysal.data import sources

    local = pq.read_table(sources.ensure_digits(str(tmp_path / "data" / "digits"))).slice(900)
    fs, _ = storage.resolve(f"s3://{BUCKET}")
    uris = []
    for path in local["uri"].to_pylist():
        key = f"{BUCKET}/pool/images/{os.path.basename(path)}"
        with fs.open_output_stream(key) as out:
            out.write(Path(path).read_bytes())
        uris.append(f"s3://{key}")
    manifest = pa.table({"image_id": local["image_id"], "uri": pa.array(uris), "label": local["label"]})
    pq.write_table(manifest, f"{BUCKET}/pool/manifest.parquet", filesystem=fs)
    return f"s3://{BUCKET}/pool/manifest.parquet"


@pytest.mark.timeout(600)
def test_round_on_s3_killed_while_publishing_a_model_publishes_it_again(s3, tmp_path):
    from raysal.run import lease, rounds
    from raysal.run.state import RunState

    root = f"s3://{BUCKET}/run"
    pool = upload_pool(tmp_path)
    args = ["--state", root, "--set", f"data.root=\"{tmp_path / 'data'}\"", "--set", "data.pool.kind=\"manifest\"",
            "--set", f"data.pool.path=\"{pool}\"", "--set", "data.pool.rows=\"\"", *FAST]
    # Killed while publishing the round-0 model: its files are on S3, its marker is not.
    run_until_killed(args, point="publish:files-copied", env=s3)
    state = RunState(root)
    assert state.exists("models/0000/weights.h5") and not state.exists("models/0000/_published.json")
    assert state.latest_model() is None and lease.current(state) is not None  # the dead driver's lease is left

    code, out = run_job(*args, env=s3)
    assert code == 0, out[-3000:]
    report = rounds.status(root)
    assert [(r["round"], r["state"], r["selected"], r["labelled_total"]) for r in report["rounds"]] == [
        (1, "done", 40, 340)]
    selection = state.read_table(state.files(1).selection)
    labels = state.read_table(state.files(1).labels)
    assert selection.num_rows == 40 and sorted(labels["image_id"].to_pylist()) == sorted(
        selection["image_id"].to_pylist())
    assert all(uri.startswith(f"s3://{BUCKET}/pool/images/") for uri in selection["uri"].to_pylist())
    assert state.exists("models/0001/weights.h5") and state.exists("learning_curve.png")
    assert json.loads(state.read_bytes("history.json"))[0]["round"] == 1
    assert lease.current(state) is None and state.is_published("models/0000")
    assert "stage bootstrap: started" in out  # the half-published model was trained and published again
    assert not Path("s3:").exists()  # nothing written to a local folder named after the URI


@pytest.mark.timeout(120)
def test_a_model_is_published_whole_or_ignored(s3, tmp_path):
    from raysal.run.state import RunState

    local = tmp_path / "model"
    local.mkdir()
    (local / "model.json").write_text("{}")
    (local / "weights.h5").write_bytes(b"w" * 1000)
    state = RunState(f"s3://{BUCKET}/publish")
    state.publish_dir(str(local), "models/0000")
    assert state.is_published("models/0000") and state.latest_model() == 0

    state.write_bytes("models/0000/weights.h5", b"w" * 10)  # a copy cut short
    assert not state.is_published("models/0000") and state.latest_model() is None
    state.publish_dir(str(local), "models/0000")  # published again over the broken copy
    assert state.is_published("models/0000")
    state.fs.delete_file(f"{BUCKET}/publish/models/0000/_published.json")  # files copied, marker not yet
    assert state.latest_model() is None


@pytest.mark.timeout(120)
def test_a_downloaded_model_folder_is_removed_after_use(s3, tmp_path):
    from raysal import storage

    fs, _ = storage.resolve(f"s3://{BUCKET}")
    with fs.open_output_stream(f"{BUCKET}/dl/model/weights.h5") as out:
        out.write(b"weights")
    with storage.local_copy(f"s3://{BUCKET}/dl/model") as folder:
        assert Path(folder, "weights.h5").read_bytes() == b"weights"
    assert not Path(folder).exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with storage.local_copy(f"s3://{BUCKET}/dl/absent"):
            pass
