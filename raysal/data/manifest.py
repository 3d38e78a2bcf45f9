"""Parquet manifests as sources: one file, or the shards of a folder or glob read as one.

A manifest's shards are listed and their footers read on the driver (a slice of it is cut into
pieces, row group by row group, from the footers alone); its rows are read by Ray tasks, or on
the driver for a slice of a manifest without image bytes. Each batch is conformed to the source
columns (``raysal.data.sources``): ``image_id``, an absolute ``uri`` (``<shard>#image_id=<id>``
for a row without one), ``label`` as a class index, and ``image_bytes`` where the manifest
carries them.
"""

from __future__ import annotations

import fnmatch
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import storage
from raysal.config import SourceConfig, row_slice
from raysal.data.listing import (
    PARQUET_SUFFIXES,
    folder_shards,
    in_pack_folder,
    is_shard,
    resolve_path,
    whole_numbers,
)
from raysal.errors import BadInput, BadSource, SourceError

MANIFEST_COLUMNS = ("image_id", "uri", "label", "image_bytes")  # what a manifest's reader keeps
MANIFEST_NEEDS = "a manifest needs image_id (integer), and uri (string) or image_bytes (binary), [label]"
METADATA_THREADS = 16  # shard footers read at once: on object storage each is a request
Piece = tuple[int, int, int, int]  # rows of a manifest: (shard, row group, first row in it, rows)


def labels_to_index(labels: pa.Array, classes: Sequence[str], where: str) -> pa.Array:
    labels = whole_numbers(labels)
    if labels is None:
        raise BadSource(f"{where}: labels must be class indices or class names, got fractional numbers")
    if pa.types.is_integer(labels.type):
        bad = pc.or_(pc.less(labels, 0), pc.greater_equal(labels, len(classes)))
        if pc.any(bad).as_py():
            raise BadSource(f"{where}: label indices outside [0, {len(classes)}) in the manifest")
        return labels.cast(pa.int64())
    index = {name: i for i, name in enumerate(classes)}
    names = labels.to_pylist()
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise BadSource(f"{where}: labels {unknown[:10]} are not in data.classes {list(classes)}")
    return pa.array([None if n is None else index[n] for n in names], pa.int64())


def check_unique_ids(table: pa.Table, where: str) -> pa.Table:
    counts = pc.value_counts(table["image_id"])
    dupes = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(dupes):
        raise BadSource(f"{where}: duplicate image_id values, e.g. {dupes[:5].to_pylist()}")
    return table


def _absolute_uris(uris: pa.Array, base: str) -> pa.Array:
    """``uri`` values with the relative ones joined to ``base``: workers never see a path that
    depends on their working directory."""
    relative = pc.fill_null(pc.invert(pc.or_(pc.match_substring(uris, "://"), pc.starts_with(uris, "/"))), False)
    if not pc.any(relative).as_py():
        return uris
    return pc.if_else(relative, pc.binary_join_element_wise(base.rstrip("/"), uris, "/"), uris)


def manifest_problems(schema: pa.Schema) -> list[str]:
    """What makes a manifest's columns unusable, from its schema alone; empty when they are fine."""
    types = {field.name: field.type for field in schema}
    problems = []
    if "image_id" not in types:
        problems.append("no image_id column")
    elif not pa.types.is_integer(types["image_id"]):
        problems.append(f"image_id is {types['image_id']}, not an integer")
    if "uri" not in types and "image_bytes" not in types:
        problems.append("neither a uri nor an image_bytes column: a row needs where its image is, or the image")
    if "uri" in types and not (pa.types.is_string(types["uri"]) or pa.types.is_large_string(types["uri"])):
        problems.append(f"uri is {types['uri']}, not a string")
    if "image_bytes" in types and not (pa.types.is_binary(types["image_bytes"])
                                       or pa.types.is_large_binary(types["image_bytes"])):
        problems.append(f"image_bytes is {types['image_bytes']}, not binary (the encoded file's bytes)")
    label = types.get("label")
    if label is not None and not (pa.types.is_integer(label) or pa.types.is_floating(label) or pa.types.is_null(label)
                                  or pa.types.is_string(label) or pa.types.is_large_string(label)):
        problems.append(f"label is {label}, not a class index or a class name")
    return problems


def _row_names(table: pa.Table, ids: pa.Array, base: str) -> pa.Array:
    """``<shard>#image_id=<id>``: a name for a row that has no uri, from Ray's ``path`` column."""
    shards = (table["path"].combine_chunks().cast(pa.string()) if "path" in table.column_names
              else pa.array([base] * len(table), pa.string()))
    if storage.is_uri(base):  # Ray gives the path inside the filesystem: bucket/key
        scheme = base.split("://", 1)[0] + "://"
        shards = pc.if_else(pc.match_substring(shards, "://"), shards, pc.binary_join_element_wise(scheme, shards, ""))
    return pc.binary_join_element_wise(shards, ids.cast(pa.string()), "#image_id=")


def _conform(table: pa.Table, classes: Sequence[str], where: str, base: str) -> pa.Table:
    problems = manifest_problems(table.schema)
    if problems:
        raise BadSource(f"{where}: manifest has {'; '.join(problems)}; {MANIFEST_NEEDS}")
    ids = table["image_id"].combine_chunks()
    if ids.null_count:
        raise BadSource(f"{where}: manifest has {ids.null_count} rows without an image_id")
    ids = ids.cast(pa.int64())
    labels = (labels_to_index(table["label"].combine_chunks(), classes, where) if "label" in table.column_names
              else pa.nulls(len(table), pa.int64()))
    if "uri" not in table.column_names:
        uris = _row_names(table, ids, base)
    else:
        uris = _absolute_uris(table["uri"].cast(pa.string()).combine_chunks(), base)
        if uris.null_count:  # a row with neither a uri nor bytes is reported as unreadable, by this name
            uris = pc.coalesce(uris, _row_names(table, ids, base))
    columns = {"image_id": ids, "uri": uris, "label": labels}
    if "image_bytes" in table.column_names:
        columns["image_bytes"] = table["image_bytes"].cast(pa.binary())
    return check_unique_ids(pa.table(columns), where)


@dataclass(frozen=True)
class Manifest:
    """A Parquet manifest: one file, or every shard of a folder or glob, in name order."""

    path: str  # as configured: a local path or a URI
    fs: pafs.FileSystem
    files: tuple[str, ...]  # the shards, as paths inside ``fs``
    base: str  # what relative ``uri`` values are relative to

    @property
    def paths(self) -> list[str]:
        """The shards as Ray's readers and ``storage`` take them: URIs, or local paths."""
        if not storage.is_uri(self.path) or self.path.startswith("file://"):
            return list(self.files)
        scheme = self.path.split("://", 1)[0]
        return [f"{scheme}://{f}" for f in self.files]

    def metadata(self, where: str = "manifest") -> list[pq.FileMetaData]:
        """Every shard's footer (schema, rows, row groups): read once, in threads, no data;
        ``SourceError`` naming a shard that is not Parquet (a half-written upload, another file)."""
        def footer(path: str) -> pq.FileMetaData:
            try:
                return pq.read_metadata(path, filesystem=self.fs)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(f"{where}: shard {path} of manifest {self.path} is not a readable Parquet "
                                  f"file: {exc}") from exc

        with ThreadPoolExecutor(max_workers=min(METADATA_THREADS, len(self.files))) as pool:
            return list(pool.map(footer, self.files))


def _glob_root(pattern: str) -> str:
    """The folder above the first path part of ``pattern`` that holds a glob character."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    return "/".join(parts[:fixed]) or "/"


def _unfinished_pack(fs: pafs.FileSystem, inner: str) -> str:
    """What to add to "holds no Parquet file" when the folder holds a pack that never finished."""
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    started = sorted({posixpath.relpath(i.path, inner).split("/")[0] for i in infos
                      if i.type == pafs.FileType.File and in_pack_folder(posixpath.relpath(i.path, inner))})
    return (f", only the shards of a raysal pack that did not finish ({', '.join(started)}): run raysal pack "
            "again" if started else "")


def open_manifest(path: str, where: str) -> Manifest:
    """The shards of the manifest at ``path`` (a file, a folder of shards, or a glob), listed
    without reading them; ``SourceError`` when there are none. A folder's shards are those
    ``listing.folder_shards`` gives: of a folder raysal pack wrote, the ones its pointer names."""
    fs, inner = storage.resolve(path)
    if any(c in inner for c in "*?["):
        root = _glob_root(inner)
        depth = inner.count("/") - root.rstrip("/").count("/")  # a pattern of one part lists one folder
        infos = ([] if fs.get_file_info(root).type != pafs.FileType.Directory
                 else fs.get_file_info(pafs.FileSelector(root, recursive=depth > 1)))
        parts = inner.count("/")  # fnmatch's * also matches "/": a match must have as many parts
        files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.count("/") == parts
                       and fnmatch.fnmatchcase(i.path, inner) and is_shard(posixpath.relpath(i.path, root)))
        if not files:
            raise SourceError(f"{where}: manifest glob {path} matches no Parquet file ({', '.join(PARQUET_SUFFIXES)})")
        base = root
    else:
        kind = fs.get_file_info(inner).type
        if kind == pafs.FileType.NotFound:
            raise SourceError(f"{where}: manifest file {path} does not exist")
        if kind == pafs.FileType.Directory:
            try:
                files = [posixpath.join(inner, rel) for rel in folder_shards(fs, inner)]
            except BadInput as exc:
                raise SourceError(f"{where}: manifest folder {path}: {exc}") from None
            if not files:
                raise SourceError(f"{where}: manifest folder {path} holds no Parquet file "
                                  f"({', '.join(PARQUET_SUFFIXES)}){_unfinished_pack(fs, inner)}")
            base = inner
        else:
            files, base = [inner], posixpath.dirname(inner)
    if storage.is_uri(path) and not path.startswith("file://"):
        base = f"{path.split('://', 1)[0]}://{base}"
    return Manifest(path, fs, tuple(files), base)


def check_manifest(manifest: Manifest, where: str) -> list[pq.FileMetaData]:
    """Every shard's footer, once each is known to have usable columns, the same in every shard;
    ``SourceError`` naming the shard otherwise. No image byte is read."""
    metadata = manifest.metadata(where)
    first: dict[str, str] | None = None
    for path, meta in zip(manifest.paths, metadata, strict=True):
        schema = meta.schema.to_arrow_schema()
        problems = manifest_problems(schema)
        if problems:
            shard = "" if len(manifest.files) == 1 else f" (shard {path})"
            raise BadSource(f"{where}: manifest {manifest.path}{shard} has {'; '.join(problems)}; {MANIFEST_NEEDS}")
        kept = {c: _kind(schema.field(c).type) for c in MANIFEST_COLUMNS if c in schema.names}
        differ = first is not None and (
            kept.keys() != first.keys()
            or any("any" not in (kind, first[c]) and kind != first[c] for c, kind in kept.items()))
        if differ:
            described = lambda cols: ", ".join(f"{c} ({k})" for c, k in cols.items())  # noqa: E731
            raise BadSource(f"{where}: manifest {manifest.path}: shard {path} has the columns {described(kept)}, "
                              f"{manifest.paths[0]} {described(first)}: every shard needs the same ones, of the "
                              "same kinds")
        first = kept
    return metadata


def _kind(type_: pa.DataType) -> str:
    """What a manifest column's type means to its reader: shards may differ in width (int32 and
    int64 ids, string and large_string uris) and in a label column of numbers (int or float,
    where a missing label made it float), not in kind; an all-null label column fits any."""
    if pa.types.is_null(type_):
        return "any"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        return "number"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "string"
    return "binary" if pa.types.is_binary(type_) or pa.types.is_large_binary(type_) else str(type_)


def manifest_columns(metadata: list[pq.FileMetaData]) -> list[str]:
    """The columns a manifest's reader keeps, of those it has."""
    names = metadata[0].schema.to_arrow_schema().names
    return [c for c in MANIFEST_COLUMNS if c in names]


def row_groups(sizes: Sequence[Sequence[int]], start: int, stop: int) -> list[Piece]:
    """The pieces of rows [start, stop) of shards whose row groups hold ``sizes[file][group]``
    rows: (file, row group, first row in it, rows), in order."""
    pieces, offset = [], 0
    for file, groups in enumerate(sizes):
        for group, n in enumerate(groups):
            first, last = max(start, offset), min(stop, offset + n)
            if first < last:
                pieces.append((file, group, first - offset, last - first))
            offset += n
    return pieces


def read_pieces(paths: Sequence[str], pieces: Sequence[Piece],
                columns: Sequence[str] | None = None, with_path: bool = True) -> pa.Table:
    """The rows of ``pieces`` (as ``row_groups`` gives them) of the shards at ``paths``, with the
    shard's path in a ``path`` column (``with_path``: a row without a uri is named after it)."""
    tables, opened = [], {}
    for file, group, first, rows in pieces:
        if file not in opened:
            fs, inner = storage.resolve(paths[file])
            opened[file] = pq.ParquetFile(inner, filesystem=fs)
        table = opened[file].read_row_group(group, columns=list(columns) if columns is not None else None)
        table = table.slice(first, rows)
        tables.append(table.append_column("path", pa.array([paths[file]] * rows, pa.string())) if with_path else table)
    return pa.concat_tables(tables, promote_options="permissive")  # shards may differ in width (check_manifest)


def slice_bounds(rows: str, total: int, where: str) -> tuple[int, int]:
    """[start, stop) of the ``rows`` slice of ``total`` rows; ``SourceError`` when it starts past them."""
    start, stop, _ = row_slice(rows, f"{where}.rows").indices(total)
    if start >= total:
        raise SourceError(f"{where}.rows: {rows!r} starts past the source's {total} rows")
    return start, stop


def manifest_slice(path: str, rows: str, where: str) -> tuple[Manifest, list[pq.FileMetaData], list[Piece]]:
    """The manifest at ``path``, checked, and the pieces of its ``rows`` slice ("" = all rows),
    from its footers alone; ``SourceError`` for a bad manifest or a slice past its end."""
    manifest = open_manifest(path, where)
    metadata = check_manifest(manifest, where)
    sizes = [[meta.row_group(g).num_rows for g in range(meta.num_row_groups)] for meta in metadata]
    total = sum(map(sum, sizes))
    start, stop = slice_bounds(rows, total, where) if rows else (0, total)
    return manifest, metadata, row_groups(sizes, start, stop)


def _read_slice(manifest: Manifest, metadata: list[pq.FileMetaData], pieces: list[Piece],
                classes: Sequence[str], where: str) -> pa.Table:
    if not pieces:
        return _conform(metadata[0].schema.to_arrow_schema().empty_table(), classes, where, manifest.base)
    return _conform(read_pieces(manifest.paths, pieces, manifest_columns(metadata)), classes, where, manifest.base)


def read_manifest_table(path: str, classes: Sequence[str], where: str, rows: str = "") -> pa.Table:
    """A manifest (or its ``rows`` slice) read on the driver: only the row groups the slice needs."""
    return _read_slice(*manifest_slice(path, rows, where), classes, where)


def manifest_labels(cfg: SourceConfig, classes: Sequence[str], root: str) -> pa.Array:
    """The labels of a manifest source's rows as class indices (nulls where unknown): the label
    column alone is read, never an image."""
    manifest, metadata, pieces = manifest_slice(resolve_path(cfg.path, root), cfg.rows, cfg.where)
    if "label" not in manifest_columns(metadata) or not pieces:
        return pa.array([], pa.int64())
    labels = read_pieces(manifest.paths, pieces, ["label"], with_path=False)["label"].combine_chunks()
    return labels_to_index(labels, classes, cfg.where)


def manifest_source(cfg: SourceConfig, classes: Sequence[str],
                     root: str) -> tuple[pa.Table | None, Manifest, list[pq.FileMetaData], list[Piece]]:
    """A manifest source's shards, checked, and the pieces of its rows; with the rows as a table
    read on the driver for a slice of a manifest without image bytes, else None (read by Ray:
    the images of a packed manifest are never read on the driver)."""
    manifest, metadata, pieces = manifest_slice(resolve_path(cfg.path, root), cfg.rows, cfg.where)
    if not cfg.rows or "image_bytes" in manifest_columns(metadata):
        return None, manifest, metadata, pieces
    return _read_slice(manifest, metadata, pieces, classes, cfg.where), manifest, metadata, pieces


class ManifestBatch:
    """Conform one batch of a large manifest to the source columns, inside a Ray task."""

    def __init__(self, classes: tuple[str, ...], where: str, base: str) -> None:
        self.classes, self.where, self.base = classes, where, base

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _conform(batch, self.classes, self.where, self.base)


class PieceReader:
    """Read the rows of one piece of a manifest's slice and conform them, inside a Ray task."""

    def __init__(self, paths: list[str], columns: list[str], conform: ManifestBatch) -> None:
        self.paths, self.columns, self.conform = paths, columns, conform

    def __call__(self, batch: pa.Table) -> pa.Table:
        pieces = [(p["file"], p["group"], p["first"], p["rows"]) for p in batch.to_pylist()]
        return self.conform(read_pieces(self.paths, pieces, self.columns))
