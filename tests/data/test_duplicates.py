"""raysal.data.duplicates: files with the same bytes in two lists, read only where sizes match."""

from __future__ import annotations

import numpy as np
import pytest

from raysal import storage
from raysal.data import duplicates

BIG = np.random.default_rng(0).integers(0, 256, duplicates.HEAD_BYTES + 5_000, dtype=np.uint8).tobytes()
FILES = {  # name: bytes; "a/" is one list, "b/" the other
    "a/small.png": b"small image",
    "a/big.png": BIG,
    "a/empty.png": b"",
    "a/alone.png": b"no file of this size in b",
    "b/small-copy.png": b"small image",
    "b/small-other.png": b"other image",  # the same size, other bytes
    "b/big-copy.png": BIG,
    "b/big-same-head.png": BIG[:-1] + b"\x00" if BIG[-1] else BIG[:-1] + b"\x01",  # differs past the head
    "b/empty.png": b"",  # no image is empty: not a copy
}


def _write(root: str) -> tuple[list[str], list[str]]:
    fs, inner = storage.resolve(root)
    for name, data in FILES.items():
        fs.create_dir(storage.resolve(storage.join(root, name.split("/")[0]))[1], recursive=True)
        with fs.open_output_stream(f"{inner}/{name}") as out:
            out.write(data)
    uris = {side: [storage.join(root, name) for name in FILES if name.startswith(side)] for side in ("a/", "b/")}
    return uris["a/"], uris["b/"] + [storage.join(root, "b/missing.png"), "http://example.com/a.png"]


@pytest.mark.parametrize("stat_alone", [duplicates.STAT_ALONE, 0])  # a stat per file, or a listing of the folder
def test_same_files_finds_copies_and_only_copies(tmp_path, monkeypatch, stat_alone):
    monkeypatch.setattr(duplicates, "STAT_ALONE", stat_alone)
    root = str(tmp_path)
    firsts, seconds = _write(root)
    assert duplicates.same_files(firsts, seconds) == [(f"{root}/a/big.png", f"{root}/b/big-copy.png"),
                                                      (f"{root}/a/small.png", f"{root}/b/small-copy.png")]


def test_only_files_of_a_shared_size_are_read(tmp_path, monkeypatch):
    """Heads of the files whose size the other list has; whole files only past the head, where heads match."""
    read = []
    digest = duplicates._digest
    monkeypatch.setattr(duplicates, "_digest", lambda uri, whole: read.append((uri, whole)) or digest(uri, whole))
    firsts, seconds = _write(str(tmp_path))
    duplicates.same_files(firsts, seconds)
    heads = ["a/big.png", "a/small.png", "b/big-copy.png", "b/big-same-head.png", "b/small-copy.png",
             "b/small-other.png"]
    wholes = ["a/big.png", "b/big-copy.png", "b/big-same-head.png"]
    assert sorted(read) == sorted([(f"{tmp_path}/{name}", False) for name in heads]
                                  + [(f"{tmp_path}/{name}", True) for name in wholes])


def test_same_files_on_object_storage(s3):
    root = "s3://raysal-test/duplicates"  # conftest's s3 fixture makes the bucket
    firsts, seconds = _write(root)
    assert duplicates.same_files(firsts, seconds) == [(f"{root}/a/big.png", f"{root}/b/big-copy.png"),
                                                      (f"{root}/a/small.png", f"{root}/b/small-copy.png")]
