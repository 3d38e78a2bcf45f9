"""Reading bytes from local paths and ``pyarrow.fs`` URIs (``s3://``, ``gs://``, ``file://``)."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from typing import Iterator

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A URI as it is; a local path made absolute (``~`` expanded)."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def join(root: str, *parts: str) -> str:
    """``root`` joined with ``parts``: with "/" for a URI, the local way for a path."""
    return posixpath.join(root, *parts) if is_uri(root) else os.path.join(root, *parts)


# Object stores answer within these or are retried a bounded number of times: a store that is
# down or unreachable fails a request in about a minute, never retries for ever.
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, ATTEMPTS, GCS_RETRY_S = 10.0, 60.0, 4, 60


@lru_cache(maxsize=16)
def _filesystem(scheme_and_host: str) -> pafs.FileSystem:
    return _bounded(scheme_and_host, CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, ATTEMPTS, GCS_RETRY_S)


def _bounded(scheme_and_host: str, connect_s: float, request_s: float, attempts: int,
             gcs_retry_s: float) -> pafs.FileSystem:
    """The filesystem of an ``s3://`` or ``gs://`` bucket with bounded timeouts and retries; any
    other scheme as ``FileSystem.from_uri`` makes it."""
    scheme, bucket = scheme_and_host.split("://", 1)
    if scheme == "s3":
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or \
            pafs.resolve_s3_region(bucket)  # as FileSystem.from_uri finds it
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None  # as from_uri
        return pafs.S3FileSystem(region=region, endpoint_override=endpoint, connect_timeout=connect_s,
                                 request_timeout=request_s,
                                 retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=gcs_retry_s))
    return pafs.FileSystem.from_uri(scheme_and_host)[0]


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it); local paths are made absolute. Filesystems are cached."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    scheme, rest = path.split("://", 1)
    host = rest.split("/", 1)[0]
    if scheme == "file":
        return pafs.LocalFileSystem(), rest
    if scheme in ("s3", "gs", "gcs"):
        return _filesystem(f"{scheme}://{host}"), rest  # bucket/key: no per-call filesystem set-up
    return pafs.FileSystem.from_uri(path)


SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "viewfs", "abfs", "abfss")  # what pyarrow.fs reads
PROBE_TIMEOUT_S = 30.0  # how long storage may take to answer its first request
PROBE_TIMEOUT_ENV = "RAYSAL_STORAGE_TIMEOUT_S"


def probe(uris: dict[str, str], timeout_s: float | None = None) -> None:
    """Refuse, before any work, storage a command could not use: a URI of a scheme no filesystem
    reads (``Refused``, exit 2), and storage that does not answer one request within
    ``timeout_s`` (``Unavailable``, exit 3: a bucket behind a firewall, a GCS client retrying
    for minutes without credentials), naming the field and the URI. ``uris``: field -> URI;
    local paths are left to the callers' own checks.

    Each request runs at once in a child process (``python -m raysal.storage URI``), killed at
    the wait's end: a request left in flight in this process would be cut by pyarrow's S3
    finalizer at exit, which aborts the process (SIGABRT) instead of exiting 3. Ctrl-C ends the
    wait and the children."""
    from raysal.errors import Refused, Unavailable

    if timeout_s is None:
        timeout_s = float(os.environ.get(PROBE_TIMEOUT_ENV, PROBE_TIMEOUT_S))
    remote = {field: uri for field, uri in uris.items() if is_uri(uri)}
    for field, uri in remote.items():
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise Refused(f"{field}: {uri}: no filesystem reads {scheme}:// URIs; use one of "
                          f"{', '.join(f'{s}://' for s in SCHEMES)} or a local path")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # raysal's parent: importable there
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    children = {field: subprocess.Popen([sys.executable, "-m", "raysal.storage", uri, str(timeout_s + 1)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env=env)
                for field, uri in remote.items()}
    try:
        deadline = time.monotonic() + timeout_s
        for child in children.values():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for field, uri in remote.items():
            child = children[field]
            if child.returncode is None:
                raise Unavailable(f"{field}: {uri} did not answer within {timeout_s:g} s: is the storage reachable "
                                  f"from here (its endpoint, a proxy, a firewall), and are its credentials set? "
                                  f"({PROBE_TIMEOUT_ENV} sets the wait)")
            if child.returncode != 0:
                said = child.stderr.read().strip().splitlines() or [f"the probe exited {child.returncode}"]
                raise Unavailable(f"{field}: {uri} cannot be read: {said[-1]}")
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stderr.close()


def _answer(uri: str, limit_s: float) -> int:
    """One request to ``uri`` on a filesystem of its own that gives up after ``limit_s`` (the
    child of ``probe``): 0 when the storage answered (a missing path is an answer too: the state
    of a new run), 1 with the reason on stderr when it refused."""
    scheme, rest = uri.split("://", 1)
    try:
        if scheme in ("s3", "gs", "gcs"):
            fs, path = _bounded(f"{scheme}://{rest.split('/', 1)[0]}", limit_s, limit_s, 1, limit_s), rest
        else:
            fs, path = resolve(uri)
        fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001  (the reason is the parent's message)
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


def write_whole(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``path`` (inside ``fs``) whole or not at all: temp file, fsync and rename on a local
    disk; a single PUT, atomic by itself, on an object store."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path with the contents of ``uri``, a folder or a single file, for the ``with``
    block: the path itself when local, else a download into a temp folder that is removed when
    the block ends (a file keeps its name there, so its extension still says its format)."""
    if not is_uri(uri) or uri.startswith("file://"):
        yield resolve(uri)[1]
        return
    fs, inner = resolve(uri)
    kind = fs.get_file_info(inner).type
    if kind not in (pafs.FileType.Directory, pafs.FileType.File):
        raise FileNotFoundError(f"{uri} does not exist")
    target = tempfile.mkdtemp(prefix="raysal-")
    local = os.path.join(target, posixpath.basename(inner.rstrip("/"))) if kind == pafs.FileType.File else target
    try:
        pafs.copy_files(inner, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield local
    finally:
        shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":  # probe's child: python -m raysal.storage URI LIMIT_S
    sys.exit(_answer(sys.argv[1], float(sys.argv[2])))
