"""The images of a folder or a CSV/Parquet manifest, listed once for every reader of them.

A folder's images are its files named as images (hidden ones aside), sorted by their path inside
it; the first part of that path (a class subfolder) is their label, and a stable hash of it their
id. A manifest's images are its rows, as written: ``uri`` (relative to the manifest's folder),
``image_id`` (else a stable hash of the uri as written) and ``label`` where it has one. The same
image gets the same id from ``raysal prepare``, ``raysal pack`` and a round's folder source.
Only names are read: no image is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import NDArray

from raysal import storage
from raysal.errors import BadInput, MissingInput

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")  # the shards of a manifest folder or glob
LISTED_COLUMNS = ("image_id", "uri", "label")  # what a listing reads of a manifest: never its image_bytes
# A folder ``raysal pack`` wrote: each pack's shards in a folder of its own, and the pointer that
# names the shards of the current one, written last (see ``folder_shards``).
PACK_POINTER = "_pack.json"
PACK_FOLDER = re.compile(r"pack-\d{8}T\d{6}-[0-9a-f]{6}")  # pack-<UTC time>-<random>


def stable_id(key: str, namespace: str = "") -> int:
    """A non-negative int64 id from a string key (a relative path, a TFDS example id); with a
    ``namespace``, from both: the same key in two namespaces gets two ids (a NUL byte, which no
    path holds, parts them, so no key of one namespace is a key of another)."""
    key = f"{namespace}\0{key}" if namespace else key
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def resolve_path(path: str, root: str) -> str:
    """``path`` as it is when absolute or a URI, else joined to ``root``."""
    if storage.is_uri(path) or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return posixpath.join(root, path) if storage.is_uri(root) else os.path.join(root, path)


def manifest_base(path: str) -> str:
    """The folder a manifest's relative ``uri`` values are relative to: the manifest's own."""
    return posixpath.dirname(path) if storage.is_uri(path) else os.path.dirname(os.path.abspath(path))


def whole_numbers(labels: pa.Array) -> pa.Array | None:
    """Float labels that are all whole numbers (pandas writes an integer column with nulls as
    float) as int64; None when some are fractional. Other types as they are."""
    if not pa.types.is_floating(labels.type):
        return labels
    return labels.cast(pa.int64()) if pc.all(pc.fill_null(pc.equal(labels, pc.floor(labels)), True)).as_py() else None


def class_names(labels: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """Labels as class names: strings as they are, whole numbers (pandas writes floats) as '0', '1'."""
    labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    whole = whole_numbers(labels)
    labels = labels if whole is None else whole
    names = labels.cast(pa.string()).to_pylist()
    return [None if n is None or not n.strip() else n.strip() for n in names]


def is_shard(rel_path: str) -> bool:
    """A data file of a Parquet folder: not hidden, not a marker (``_SUCCESS``, ``_metadata``)."""
    return rel_path.lower().endswith(PARQUET_SUFFIXES) and not any(p[:1] in "._" for p in rel_path.split("/"))


def in_pack_folder(rel_path: str) -> bool:
    """A file inside the folder of one pack's shards (``PACK_FOLDER``), directly under the folder listed."""
    return "/" in rel_path and PACK_FOLDER.fullmatch(rel_path.split("/", 1)[0]) is not None


def pack_pointer(fs: pafs.FileSystem, inner: str) -> list[str] | None:
    """The shards that the pack pointer of the folder ``inner`` names, as paths relative to it;
    None when the folder has no pointer. ``BadInput`` for a pointer that is not one pack wrote."""
    path = posixpath.join(inner, PACK_POINTER)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        text = stream.read()
    try:
        shards = json.loads(text)["shards"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path} is not the pointer raysal pack writes (a JSON object with \"shards\"): "
                       f"{exc!r}") from None
    if (not isinstance(shards, list) or not shards
            or not all(isinstance(r, str) and in_pack_folder(r) and ".." not in r.split("/") for r in shards)):
        raise BadInput(f"{path} names no shards of a pack folder inside it ({PACK_FOLDER.pattern}/...), got "
                       f"{examples(shards if isinstance(shards, list) else [shards])}")
    return shards


def folder_shards(fs: pafs.FileSystem, inner: str) -> list[str]:
    """The data files of the Parquet folder ``inner``, as paths relative to it, in name order.

    A folder ``raysal pack`` wrote holds each pack's shards in a folder of its own and a pointer,
    ``PACK_POINTER``, that names the shards of the current one: it is written last, whole (a
    rename on a local disk, one PUT on an object store), once they are all written, so a reader
    that follows it reads every shard of one pack, never some of an earlier one (``--force``)
    or of one still being written. Without a pointer, every shard (``is_shard``) except those
    in a pack's folder: a folder of shards written by other tools, or by raysal pack before it
    wrote pointers (part-NNNNN.parquet directly in the folder).
    """
    named = pack_pointer(fs, inner)
    if named is not None:
        return named
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    rel_paths = sorted(posixpath.relpath(i.path, inner) for i in infos if i.type == pafs.FileType.File)
    return [r for r in rel_paths if is_shard(r) and not in_pack_folder(r)]


def examples(values: Sequence[Any], limit: int = 3) -> str:
    return ", ".join(str(v) for v in list(values)[:limit]) + (", ..." if len(values) > limit else "")


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class Listing:
    """The images of one input, in its order: a folder's files by path, a manifest's rows as written."""

    source: str  # the folder or manifest, as the user named it
    kind: str  # "folder", "csv" or "parquet"
    image_ids: NDArray[np.int64]  # [n]
    uris: NDArray[np.object_]  # [n] absolute local paths or URIs
    names: NDArray[np.object_]  # [n] as the user wrote them, for messages: a path inside the folder, a manifest's uri
    labels: pa.Array | None  # [n] as found: a folder's class subfolder (null outside one), a manifest's label column
    notes: tuple[str, ...] = ()  # what was left out, for a summary

    def __len__(self) -> int:
        return len(self.image_ids)

    def sorted_by_id(self) -> Listing:
        order = np.argsort(self.image_ids, kind="stable")
        return replace(self, image_ids=self.image_ids[order], uris=self.uris[order], names=self.names[order],
                       labels=None if self.labels is None else self.labels.take(pa.array(order)))


def check_listing(listing: Listing) -> None:
    """Refuse an image listed twice or an id used twice, naming examples."""
    source, uris = listing.source, listing.uris.tolist()
    twice = [uri for uri, n in Counter(uris).items() if n > 1]
    if twice:
        raise BadInput(f"{source} lists {counted(len(twice), 'image')} more than once, e.g. {examples(twice)}: list "
                       "every image once")
    first: dict[int, str] = {}
    clashes: dict[int, str] = {}
    for image_id, uri in zip(listing.image_ids.tolist(), uris, strict=True):
        if image_id in first and image_id not in clashes:
            clashes[image_id] = f"{image_id} ({first[image_id]} and {uri})"
        first.setdefault(image_id, uri)
    if clashes:
        raise BadInput(f"{source}: {counted(len(clashes), 'image_id')} used by more than one image, e.g. "
                       f"{examples(list(clashes.values()), 2)}: every image needs an id of its own")


def folder_files(path: str) -> tuple[list[str], list[str]]:
    """Every file under the folder ``path`` (hidden ones aside), sorted: (relative paths, uris).

    The relative path is what an image's id is derived from (``stable_id``)."""
    fs, inner = storage.resolve(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    rel_paths = sorted(posixpath.relpath(i.path, inner) for i in infos if i.type == pafs.FileType.File)
    rel_paths = [r for r in rel_paths if not any(part.startswith(".") for part in r.split("/"))]
    prefix = path.rstrip("/")
    uris = [f"{prefix}/{r}" if storage.is_uri(path) else os.path.join(inner, r) for r in rel_paths]
    return rel_paths, uris


def list_folder_images(path: str, id_namespace: str = "") -> Listing:
    """The files of the folder ``path`` named as images, with ids from their paths inside it
    (in ``id_namespace``, see ``stable_id``); a note on the others."""
    rel_paths, all_uris = folder_files(path)
    keep = [i for i, r in enumerate(rel_paths) if r.lower().endswith(IMAGE_SUFFIXES)]
    others = [r for r in rel_paths if not r.lower().endswith(IMAGE_SUFFIXES)]
    if not keep:
        packed = [r for r in rel_paths if is_shard(r)]
        if packed:
            raise BadInput(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}) but "
                           f"{counted(len(packed), 'Parquet file')}, e.g. {examples(packed)}: it looks packed "
                           "already. A round reads it as it is: "
                           f'[data.pool] kind = "manifest", path = "{storage.absolute(path)}"')
        raise BadInput(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    notes = (f"left out {counted(len(others), 'file')} of {path} not named as images ({', '.join(IMAGE_SUFFIXES)}), "
             f"e.g. {examples(others)}",) if others else ()
    names = [rel_paths[i] for i in keep]
    return Listing(path, "folder", np.array([stable_id(r, id_namespace) for r in names], np.int64),
                   np.array([all_uris[i] for i in keep], object), np.array(names, object),
                   pa.array([r.split("/")[0] if "/" in r else None for r in names], pa.string()), notes)


def read_manifest_file(path: str, required: Sequence[str], needs: str) -> pa.Table:
    """The ``LISTED_COLUMNS`` a CSV or Parquet manifest has; ``BadInput`` without ``required``
    ones, saying what the reader ``needs``."""
    csv = path.lower().endswith(".csv")
    fs, inner = storage.resolve(path)
    try:
        if csv:
            with fs.open_input_stream(inner) as stream:
                table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                    column_types={"uri": pa.string(), "label": pa.string()}, strings_can_be_null=True))
            names = table.column_names
        else:
            names = pq.read_schema(inner, filesystem=fs).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path} cannot be read as a {'CSV' if csv else 'Parquet'} manifest: {exc}") from None
    missing = [c for c in required if c not in names]
    if missing:
        raise BadInput(f"{path} has no {' or '.join(missing)} column (it has {names}): {needs}")
    if csv:
        return table
    try:
        return pq.read_table(inner, filesystem=fs, columns=[c for c in LISTED_COLUMNS if c in names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path} cannot be read as a Parquet manifest: {exc}") from None


def manifest_images(path: str, table: pa.Table, id_namespace: str = "") -> tuple[list[str], list[str], list[int]]:
    """A manifest's rows: each ``uri`` as written, as a path or URI to read (relative to the
    manifest's folder; ``a/../a.jpg`` is ``a.jpg``), and its ``image_id`` (a stable hash of the
    uri as written, in ``id_namespace``, where the manifest has none). ``BadInput`` for a row
    without a uri or an id."""
    written = table["uri"].cast(pa.string()).to_pylist()
    empty = [i + 1 for i, u in enumerate(written) if u is None or not u.strip()]
    if empty:
        raise BadInput(f"{path}: {counted(len(empty), 'row')} without a uri, e.g. data rows {examples(empty)}")
    base = manifest_base(path)
    uris = [os.path.normpath(u) if not storage.is_uri(u) else u
            for u in (resolve_path(w.strip(), base) for w in written)]
    if "image_id" not in table.column_names:
        return written, uris, [stable_id(w.strip(), id_namespace) for w in written]
    ids = table["image_id"]
    if ids.null_count or not pa.types.is_integer(ids.type):
        raise BadInput(f"{path}: image_id must be a whole number in every row, got type {ids.type} with "
                       f"{ids.null_count} empty rows")
    return written, uris, ids.cast(pa.int64()).to_pylist()


def list_manifest_images(path: str, required: Sequence[str], needs: str, id_namespace: str = "") -> Listing:
    """The rows of the manifest at ``path``, as written; see ``read_manifest_file`` and ``manifest_images``."""
    table = read_manifest_file(path, required, needs)
    if not table.num_rows:
        raise BadInput(f"{path} holds no images: the manifest has no rows")
    written, uris, image_ids = manifest_images(path, table, id_namespace)
    labels = table["label"].combine_chunks() if "label" in table.column_names else None
    return Listing(path, "csv" if path.lower().endswith(".csv") else "parquet", np.array(image_ids, np.int64),
                   np.array(uris, object), np.array(written, object), labels)


def list_images(path: str, required: Sequence[str] = ("uri",),
                needs: str = "a manifest lists its images in uri, and may have image_id and label",
                id_namespace: str = "") -> Listing:
    """The images of a folder or a CSV/Parquet manifest, in its order, each listed once.

    Args:
        required: the columns a manifest must have (``uri``, and ``label`` for labelled images).
        needs: what a manifest without them is told it needs.
        id_namespace: hash the ids that are hashed (a folder's, a manifest's without image_id)
            in this namespace (``stable_id``): "" gives the ids a round's folder source and
            ``raysal pack`` give.
    Raises:
        MissingInput: ``path`` does not exist or cannot be read.
        BadInput: it holds no images, an image twice, or an id twice.
    """
    try:
        fs, inner = storage.resolve(path)
        kind = fs.get_file_info(inner).type
    except OSError as exc:  # an unknown scheme, a bucket without credentials
        raise MissingInput(f"{path} cannot be read: {exc}") from None
    if kind == pafs.FileType.NotFound:
        raise MissingInput(f"{path} does not exist")
    if kind == pafs.FileType.Directory:
        listing = list_folder_images(path, id_namespace)
    elif path.lower().endswith(MANIFEST_SUFFIXES):
        listing = list_manifest_images(path, required, needs, id_namespace)
    else:
        raise BadInput(f"{path} is neither a folder of images nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    check_listing(listing)
    return listing
