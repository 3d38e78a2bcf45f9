"""Reading bytes from local paths and ``pyarrow.fs`` URIs (``s3://``, ``gs://``, ``file://``)."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import uuid
from contextlib import contextmanager
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


@lru_cache(maxsize=16)
def _filesystem(scheme_and_host: str) -> pafs.FileSystem:
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
