"""Storage a command cannot use is refused before any work, and never waited on for long: an
object store that does not answer exits 3 within the probe's wait, naming the field and the URI;
a URI no filesystem reads exits 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from _jobs import REPO, run_job

pytestmark = pytest.mark.timeout(300)
WAIT_S = 3  # the probe's wait in these tests (RAYSAL_STORAGE_TIMEOUT_S); 30 s by default


@pytest.fixture()
def silent_store() -> Iterator[dict[str, str]]:
    """An S3 endpoint that accepts connections and never answers (a firewall that drops, a hung
    proxy), and the environment that points boto3 and pyarrow at it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.getsockname()[1]}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "RAYSAL_STORAGE_TIMEOUT_S": str(WAIT_S)}
    finally:
        server.close()


@pytest.mark.parametrize(("args", "field", "uri"), [
    (["--state", "s3://raysal-test/run"], "--state", "s3://raysal-test/run"),
    (["--set", 'data.root="s3://raysal-test/data"'], "data.root", "s3://raysal-test/data"),
], ids=["state", "data"])
def test_a_store_that_does_not_answer_exits_3_within_the_wait(silent_store, tmp_path, args, field, uri):
    ray_tmp = tmp_path / "ray-session"
    started = time.monotonic()
    code, out = run_job(*(["--state", str(tmp_path / "state")] if field != "--state" else []), *args,
                        env={**silent_store, "RAY_TMPDIR": str(ray_tmp)}, timeout=120)
    took = time.monotonic() - started
    print(f"{field}: exit {code} after {took:.1f} s")  # for the notes
    assert code == 3, out[-3000:]
    assert f"{field}: {uri} did not answer within {WAIT_S} s" in out and "Traceback" not in out
    assert not ray_tmp.exists() and not (tmp_path / "state").exists()  # before Ray, nothing written


def test_status_of_a_state_that_does_not_answer_exits_3(silent_store):
    raysal = Path(sys.executable).parent / "raysal"
    done = subprocess.run([str(raysal), "status", "--state", "s3://raysal-test/run"], capture_output=True, text=True,
                          env={**os.environ, **silent_store}, cwd=REPO, timeout=120)
    assert done.returncode == 3, done.stderr
    assert f"--state: s3://raysal-test/run did not answer within {WAIT_S} s" in done.stderr


@pytest.mark.parametrize("uri", ["foo://bucket/run", "ftp://host/run"])
def test_a_uri_no_filesystem_reads_exits_2(tmp_path, uri):
    code, out = run_job("--state", uri, env={"RAY_TMPDIR": str(tmp_path / "ray-session")}, timeout=120)
    assert code == 2, out[-3000:]
    assert f"--state: {uri}: no filesystem reads {uri.split('://')[0]}:// URIs" in out
    assert not (tmp_path / "ray-session").exists()


def test_a_store_that_refuses_the_connection_is_unavailable_at_once_saying_why(monkeypatch):
    from raysal import storage
    from raysal.errors import Unavailable

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"--state: s3://raysal-test/run cannot be read: OSError: .*connect"):
            storage.probe({"--state": "s3://raysal-test/run"}, 20)
        assert time.monotonic() - started < 20  # the answer, not the wait
    finally:
        closed.close()
