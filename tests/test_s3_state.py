"""The run state on S3: a local S3-compatible server (moto) on loopback, real pyarrow.fs and boto3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _jobs import FAST, kill_at, run_job

BUCKET = "raysal-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env() -> dict[str, str]:
    """Start moto's S3 server; the environment that points pyarrow, boto3 and Ray workers at it."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto S3 server did not start")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield env
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture()
def s3(s3_env, monkeypatch) -> dict[str, str]:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    from raysal import storage

    storage._filesystem.cache_clear()  # filesystems read the endpoint when created
    return s3_env


@pytest.mark.timeout(120)
def test_lock_on_s3_is_exclusive_and_stale_locks_are_taken_over(s3):
    from raysal.state import Locked, RunState

    state = RunState(f"s3://{BUCKET}/lock-test")
    with state.lock():
        assert state.read_json("lock.json")["pid"] == os.getpid()
        with pytest.raises(Locked, match="locked by pid"):
            with RunState(f"s3://{BUCKET}/lock-test").lock():
                pass
    assert not state.exists("lock.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.write_json("lock.json", {"pid": dead.pid, "host": socket.gethostname(), "since": 0})
    with state.lock():  # the holder is dead: taken over
        assert state.read_json("lock.json")["pid"] == os.getpid()


def upload_pool(tmp_path: Path) -> str:
    """The demo's pool images and a manifest of their s3:// URIs, uploaded to the bucket."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysal import sources, storage

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
def test_round_with_pool_and_state_on_s3_survives_a_kill_and_resumes(s3, tmp_path):
    from raysal import rounds
    from raysal.state import RunState

    root = f"s3://{BUCKET}/run"
    pool = upload_pool(tmp_path)
    args = ["--state", root, "--set", f"data.root=\"{tmp_path / 'data'}\"", "--set", "data.pool.kind=\"manifest\"",
            "--set", f"data.pool.path=\"{pool}\"", "--set", "data.pool.rows=\"\"", *FAST]
    kill_at(args, "stage score: started", delay=1.5, env=s3)
    state = RunState(root)
    assert state.exists("lock.json") and state.exists("models/0000/weights.h5")
    assert state.next_stage(1) == "score"

    code, out = run_job(*args, env=s3)
    assert code == 0, out[-3000:]
    report = rounds.status(root)
    assert [(r["round"], r["state"], r["selected"], r["labelled_total"]) for r in report["rounds"]] == [
        (1, "done", 40, 340)]
    selection = state.read_table("rounds/0001/selection.parquet")
    labels = state.read_table("rounds/0001/labels.parquet")
    assert selection.num_rows == 40 and sorted(labels["image_id"].to_pylist()) == sorted(
        selection["image_id"].to_pylist())
    assert all(uri.startswith(f"s3://{BUCKET}/pool/images/") for uri in selection["uri"].to_pylist())
    assert state.exists("models/0001/weights.h5") and state.exists("learning_curve.png")
    assert json.loads(state.read_bytes("history.json"))[0]["round"] == 1
    assert not state.exists("lock.json")
    assert not Path("s3:").exists()  # nothing written to a local folder named after the URI
