"""Reading bytes from local paths and ``pyarrow.fs`` URIs (``s3://``, ``gs://``, ``file://``)."""

from __future__ import annotations

import os
from functools import lru_cache

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


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


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def localize_dir(uri: str) -> str:
    """A local folder with the contents of ``uri``: the path itself when local, else a download."""
    if not is_uri(uri) or uri.startswith("file://"):
        return resolve(uri)[1]
    import tempfile

    fs, inner = resolve(uri)
    target = tempfile.mkdtemp(prefix="raysal-")
    pafs.copy_files(inner, target, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return target
