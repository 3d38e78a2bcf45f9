"""Files of a run's state on any ``pyarrow.fs`` filesystem, each written whole or not at all.

``Store`` reads and writes keys under a root (a local folder or a URI): single files are
written whole (``storage.write_whole``), a folder of several files is published with a marker
written last (``publish_dir``), and a key can be created only if absent (the lease's primitive).
Every change first calls ``guard`` (the lease's check), so a round that lost its lease stops
before its next write. What the keys mean is ``raysal.run.state``'s business.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import uuid
from typing import Any, Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import faults, storage
from raysal.errors import StateError, UnsafeStorage

PUBLISHED = "_published.json"  # written last into a published folder: the files it holds and their sizes


class Store:
    """Keys under a state root, on the root's filesystem."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") if storage.is_uri(root) else os.path.abspath(os.path.expanduser(root))
        self.fs, self.base = storage.resolve(self.root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.guard: Callable[[], None] | None = None  # called before every change (the lease's check)

    def uri(self, *parts: str) -> str:
        """A path Ray and pyarrow can open: a local path, or the root URI joined with parts."""
        return storage.join(self.root, *parts)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self._path(key)).type != pafs.FileType.NotFound

    def _before_change(self) -> None:
        if self.guard is not None:
            self.guard()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._before_change()
        path = self._path(key)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        storage.write_whole(self.fs, path, data)

    def read_bytes(self, key: str) -> bytes | None:
        if not self.exists(key):
            return None
        with self.fs.open_input_stream(self._path(key)) as stream:
            return stream.read()

    def write_json(self, key: str, data: Any) -> None:
        self.write_bytes(key, json.dumps(data, indent=2, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        return None if data is None else json.loads(data)

    def write_table(self, key: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(key, sink.getvalue().to_pybytes())

    def read_table(self, key: str, columns: list[str] | None = None, filters: Any = None) -> pa.Table | None:
        """A Parquet file, or a folder of them, read whole; ``filters`` (a pyarrow expression)
        keeps matching rows only, as the files stream by."""
        if not self.exists(key):
            return None
        return pq.read_table(self._path(key), filesystem=self.fs, columns=columns, filters=filters)

    def delete_dir(self, key: str) -> None:
        self._before_change()
        if self.exists(key):
            self.fs.delete_dir(self._path(key))

    def publish_dir(self, local_dir: str, key: str) -> None:
        """Publish a finished local folder as ``key``, whole or not at all, replacing what was there.

        An object store has no atomic rename, so the folder's files are copied first and
        ``PUBLISHED`` (the list of files and their sizes) is written last; readers trust a folder
        only with that marker (``is_published``). Replacing starts by deleting the old marker, so a
        crash at any point leaves a folder that readers ignore and the next run publishes again.
        """
        files = {os.path.relpath(os.path.join(d, f), local_dir): os.path.getsize(os.path.join(d, f))
                 for d, _, names in os.walk(local_dir) for f in names}
        marker = json.dumps({"files": files}, indent=2, sort_keys=True).encode()
        self._before_change()
        if self.exists(f"{key}/{PUBLISHED}"):
            self.fs.delete_file(self._path(key, PUBLISHED))
        self.delete_dir(key)
        if self.local:
            _publish_local(local_dir, self._path(key), marker)
            return
        pafs.copy_files(local_dir, self._path(key), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        faults.point("publish:files-copied")
        self.write_bytes(f"{key}/{PUBLISHED}", marker)

    def is_published(self, key: str) -> bool:
        """Whether ``key`` is a folder published whole: its marker is there and lists what is there."""
        marker = self.read_json(f"{key}/{PUBLISHED}")
        if marker is None:
            return False
        for name, size in marker["files"].items():
            info = self.fs.get_file_info(self._path(key, name))
            if info.type != pafs.FileType.File or info.size != size:
                return False
        return True

    def list_numbers(self, key: str) -> list[int]:
        if not self.exists(key):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self._path(key)))
        return sorted(int(i.base_name) for i in infos if i.type == pafs.FileType.Directory and i.base_name.isdigit())

    def list_names(self, key: str) -> list[str]:
        """The names of the files directly in folder ``key``, sorted; none for a missing folder."""
        if not self.exists(key):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self._path(key)))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    # --- the lease's primitive (raysal.run.lease) ---------------------------------------------
    def _create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it does. Atomic on local disks and S3."""
        if self.local:
            return _create_local(self._path(key), data)
        if self.root.startswith("s3://"):
            bucket, _, prefix = self.base.partition("/")
            return _create_s3(bucket, posixpath.join(prefix, key), data)
        raise StateError(f"state {self.root}: no atomic create on this filesystem, so no safe lock; "
                         "use a local path or s3://")


def _publish_local(local_dir: str, path: str, marker: bytes) -> None:
    """A local folder published by one rename, after the copy and its marker are complete."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    for left in os.listdir(parent):  # a copy that a crash left before its rename
        if left.startswith(f"{name}.tmp-"):
            shutil.rmtree(os.path.join(parent, left), ignore_errors=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(local_dir, tmp)
    with open(os.path.join(tmp, PUBLISHED), "wb") as f:
        f.write(marker)
    faults.point("publish:files-copied")
    os.replace(tmp, path)  # a local rename is atomic by itself


def _create_local(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and refused when path exists: the file appears whole or not at all
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)
    return True


_REFUSED_CODES = ("PreconditionFailed", "ConditionalRequestConflict")  # S3's answers to a create that lost
_HONOURED: set[str] = set()  # endpoints seen honouring If-None-Match, probed once per process


def _create_s3(bucket: str, key: str, data: bytes) -> bool:
    import boto3  # pyarrow has no create-if-absent: S3's conditional PUT is the atomic authority
    from botocore.exceptions import ClientError

    client = boto3.client("s3")
    _check_conditional_writes(client, bucket, posixpath.dirname(key))
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _REFUSED_CODES:
            return False
        raise
    return True


def _check_conditional_writes(client: Any, bucket: str, folder: str) -> None:
    """Refuse a store that ignores ``If-None-Match: *`` (some S3-compatible stores overwrite
    silently): there, two rounds would both "create" the same lease generation and both run.
    Probed once per endpoint: a probe object is created twice under ``folder``, then removed."""
    from botocore.exceptions import ClientError

    endpoint = client.meta.endpoint_url
    if endpoint in _HONOURED:
        return
    key = posixpath.join(folder, f".probe-{uuid.uuid4().hex}")
    client.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _REFUSED_CODES:
            raise
        _HONOURED.add(endpoint)
    finally:
        client.delete_object(Bucket=bucket, Key=key)
    if endpoint not in _HONOURED:
        raise UnsafeStorage(f"s3://{bucket}/{folder}: the object store at {endpoint} ignores conditional writes "
                            "(If-None-Match: *): a second create of the same object succeeded, so two rounds could "
                            "both take the run's lease there. Keep the state on a store that honours them (AWS S3 "
                            "does, as do recent MinIO and Ceph releases) or on a local path")
