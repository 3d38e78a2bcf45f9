"""The files that hold the same bytes in two lists of images, found cheaply.

Sizes first, from one listing of each folder the files are in (a stat each, for a folder with
few of them): only files of a size that both lists have are opened. Then a hash of their first
``HEAD_BYTES`` (the whole file, for most compressed images), and only files whose heads match
are read to the end. Two photos rarely share a size, so a pool is mostly left unread; images of
one fixed size stored uncompressed (BMP, raw TIFF) share it, and then every head is read. A file
that cannot be listed or read (missing, no permission, a scheme no filesystem reads) is left
out: it is reported by the round that reads it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import pyarrow.fs as pafs

from raysal import storage

HEAD_BYTES = 1 << 16  # hashed first: two different images rarely share a size and their first 64 KiB
CHUNK_BYTES = 1 << 20  # a whole file is hashed a chunk at a time
STAT_ALONE = 64  # a folder with at most this many of the files gets a stat each, not a listing of it all
READ_THREADS = 16  # files listed or read at once: each waits on the disk or the network


def _folder(uri: str) -> str:
    return posixpath.dirname(uri) if storage.is_uri(uri) else os.path.dirname(uri)


def _sizes_in_folder(folder: str, uris: list[str]) -> dict[str, int]:
    """The sizes of the files ``uris``, all in ``folder``, that exist."""
    try:
        fs, _ = storage.resolve(folder)
        inner = {storage.resolve(uri)[1]: uri for uri in uris}
        if len(uris) <= STAT_ALONE:
            infos = fs.get_file_info(list(inner))
        else:
            infos = fs.get_file_info(pafs.FileSelector(storage.resolve(folder)[1], allow_not_found=True))
    except (OSError, ValueError, NotImplementedError):  # a scheme no filesystem reads, no permission
        return {}
    return {inner[i.path]: i.size for i in infos if i.type == pafs.FileType.File and i.path in inner}


def file_sizes(uris: Iterable[str]) -> dict[str, int]:
    """The size in bytes of each file of ``uris`` that exists, by uri."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for uri in uris:
        by_folder[_folder(uri)].append(uri)
    sizes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for found in pool.map(lambda item: _sizes_in_folder(*item), by_folder.items()):
            sizes.update(found)
    return sizes


def _digest(uri: str, whole: bool) -> bytes | None:
    """A hash of the file's first ``HEAD_BYTES``, or of all of it; None when it cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        fs, inner = storage.resolve(uri)
        with fs.open_input_stream(inner) as stream:
            left = None if whole else HEAD_BYTES
            while left is None or left > 0:
                chunk = stream.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                if not chunk:
                    break
                digest.update(chunk)
                left = None if left is None else left - len(chunk)
    except (OSError, ValueError, NotImplementedError):
        return None
    return digest.digest()


def _matching(firsts: Sequence[str], seconds: Sequence[str], key: dict[str, object]) -> list[tuple[str, str]]:
    """Pairs (first, second) whose ``key`` is the same (files without one left out)."""
    by_key: dict[object, list[str]] = defaultdict(list)
    for uri in firsts:
        if key.get(uri) is not None:
            by_key[key[uri]].append(uri)
    return [(first, second) for second in seconds if key.get(second) is not None
            for first in by_key.get(key[second], [])]


def same_files(firsts: Sequence[str], seconds: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (a file of ``firsts``, a file of ``seconds``) with the same bytes, sorted; empty
    files left out (no image is empty; a round reports them)."""
    sizes = file_sizes([*firsts, *seconds])
    shared = {sizes[u] for u in firsts if sizes.get(u)} & {sizes[u] for u in seconds if sizes.get(u)}
    firsts = [u for u in dict.fromkeys(firsts) if sizes.get(u) in shared]
    seconds = [u for u in dict.fromkeys(seconds) if sizes.get(u) in shared]
    if not firsts:
        return []
    candidates = list(dict.fromkeys([*firsts, *seconds]))
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        heads = dict(zip(candidates, pool.map(lambda u: _digest(u, whole=False), candidates), strict=True))
        keys: dict[str, object] = {u: None if heads[u] is None else (sizes[u], heads[u]) for u in candidates}
        pairs = [(a, b) for a, b in _matching(firsts, seconds, keys) if a != b]
        longer = list(dict.fromkeys(u for pair in pairs for u in pair if sizes[u] > HEAD_BYTES))
        wholes = dict(zip(longer, pool.map(lambda u: _digest(u, whole=True), longer), strict=True))
    return sorted((a, b) for a, b in pairs if sizes[a] <= HEAD_BYTES or (wholes[a] is not None
                                                                          and wholes[a] == wholes[b]))
