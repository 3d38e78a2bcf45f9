"""Pool sources: a Parquet manifest, an image folder, a TFDS split, or the offline digits set.

Every source yields the same columns: ``image_id`` (int64, unique, stable across runs), ``uri``
(string) and ``label`` (int64 index into ``data.classes``, null when unknown), plus
``image_bytes`` (binary) for sources whose images do not live in files (TFDS, packed manifests).

A Parquet manifest is the scalable form: it is read by Ray tasks, never listed on the driver.
It is one file, or the shards of a folder or glob read as one source; a packed manifest
(``raysal pack``) carries each encoded image in ``image_bytes``, so a pool is read in large
sequential pieces instead of one request per file. Its ``uri`` is kept for reports; a row
without one is named ``<shard>#image_id=<id>``. Folders and row slices of manifests without
image bytes are read on the driver, which suits seed/val/test splits and pools of up to a few
million files; a slice of a packed manifest is read by Ray tasks, row group by row group.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import storage
from raysal.config import SourceConfig, row_slice
from raysal.errors import SourceError  # noqa: F401  (raised here; importable from here too)

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)
SOURCE_SCHEMA = pa.schema([("image_id", pa.int64()), ("uri", pa.string()), ("label", pa.int64())])
DIGITS_MANIFEST = "manifest.parquet"
DRIVER_BLOCK_ROWS = 512  # rows per block of a source read on the driver, unless the caller says
PARQUET_SUFFIXES = (".parquet", ".pq")  # the shards of a manifest folder or glob
MANIFEST_COLUMNS = ("image_id", "uri", "label", "image_bytes")  # what a manifest's reader keeps
MANIFEST_NEEDS = "a manifest needs image_id (integer), and uri (string) or image_bytes (binary), [label]"
METADATA_THREADS = 16  # shard footers read at once: on object storage each is a request
Piece = tuple[int, int, int, int]  # rows of a manifest: (shard, row group, first row in it, rows)


def stable_id(key: str) -> int:
    """A non-negative int64 id from a string key (a relative path, a TFDS example id)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def resolve_path(path: str, root: str) -> str:
    if storage.is_uri(path) or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return posixpath.join(root, path) if storage.is_uri(root) else os.path.join(root, path)


def whole_numbers(labels: pa.Array) -> pa.Array | None:
    """Float labels that are all whole numbers (pandas writes an integer column with nulls as
    float) as int64; None when some are fractional. Other types as they are."""
    if not pa.types.is_floating(labels.type):
        return labels
    return labels.cast(pa.int64()) if pc.all(pc.fill_null(pc.equal(labels, pc.floor(labels)), True)).as_py() else None


def labels_to_index(labels: pa.Array, classes: Sequence[str], where: str) -> pa.Array:
    labels = whole_numbers(labels)
    if labels is None:
        raise SourceError(f"{where}: labels must be class indices or class names, got fractional numbers")
    if pa.types.is_integer(labels.type):
        bad = pc.or_(pc.less(labels, 0), pc.greater_equal(labels, len(classes)))
        if pc.any(bad).as_py():
            raise SourceError(f"{where}: label indices outside [0, {len(classes)}) in the manifest")
        return labels.cast(pa.int64())
    index = {name: i for i, name in enumerate(classes)}
    names = labels.to_pylist()
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise SourceError(f"{where}: labels {unknown[:10]} are not in data.classes {list(classes)}")
    return pa.array([None if n is None else index[n] for n in names], pa.int64())


def _check_unique(table: pa.Table, where: str) -> pa.Table:
    counts = pc.value_counts(table["image_id"])
    dupes = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(dupes):
        raise SourceError(f"{where}: duplicate image_id values, e.g. {dupes[:5].to_pylist()}")
    return table


def manifest_base(path: str) -> str:
    """The folder a manifest's relative ``uri`` values are relative to: the manifest's own."""
    return posixpath.dirname(path) if storage.is_uri(path) else os.path.dirname(os.path.abspath(path))


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
        raise SourceError(f"{where}: manifest has {'; '.join(problems)}; {MANIFEST_NEEDS}")
    ids = table["image_id"].combine_chunks()
    if ids.null_count:
        raise SourceError(f"{where}: manifest has {ids.null_count} rows without an image_id")
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
    return _check_unique(pa.table(columns), where)


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


def is_shard(rel_path: str) -> bool:
    """A data file of a Parquet folder: not hidden, not a marker (``_SUCCESS``, ``_metadata``)."""
    return rel_path.lower().endswith(PARQUET_SUFFIXES) and not any(p[:1] in "._" for p in rel_path.split("/"))


def open_manifest(path: str, where: str) -> Manifest:
    """The shards of the manifest at ``path`` (a file, a folder of shards, or a glob), listed
    without reading them; ``SourceError`` when there are none."""
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
            infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File
                           and is_shard(posixpath.relpath(i.path, inner)))
            if not files:
                raise SourceError(f"{where}: manifest folder {path} holds no Parquet file "
                                  f"({', '.join(PARQUET_SUFFIXES)})")
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
    for path, meta in zip(manifest.paths, metadata):
        schema = meta.schema.to_arrow_schema()
        problems = manifest_problems(schema)
        if problems:
            shard = "" if len(manifest.files) == 1 else f" (shard {path})"
            raise SourceError(f"{where}: manifest {manifest.path}{shard} has {'; '.join(problems)}; {MANIFEST_NEEDS}")
        kept = {c: _kind(schema.field(c).type) for c in MANIFEST_COLUMNS if c in schema.names}
        if first is not None and (kept.keys() != first.keys()
                                  or any("any" not in (kind, first[c]) and kind != first[c] for c, kind in kept.items())):
            described = lambda cols: ", ".join(f"{c} ({k})" for c, k in cols.items())  # noqa: E731
            raise SourceError(f"{where}: manifest {manifest.path}: shard {path} has the columns {described(kept)}, "
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


def list_folder(path: str, classes: Sequence[str], where: str) -> pa.Table:
    """Every file under ``path`` (hidden ones aside), sorted; a class-named subfolder gives the label."""
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        raise SourceError(f"{where}: image folder {path} does not exist")
    rel_paths, uris = folder_files(path)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r.split("/")[0] for r in rel_paths if "/" in r} - set(index))
    if unknown:
        log.warning("%s: subfolders %s of %s are not in data.classes: their images get no label",
                    where, unknown[:10], path)
    table = pa.table({
        "image_id": pa.array([stable_id(r) for r in rel_paths], pa.int64()),
        "uri": pa.array(uris, pa.string()),
        "label": pa.array([index.get(r.split("/")[0]) if "/" in r else None for r in rel_paths], pa.int64()),
    })
    return _check_unique(table, where)


def prepared_tfds_builder(cfg: SourceConfig) -> Any:
    """The TFDS builder of a prepared dataset; SourceError saying how to prepare it otherwise."""
    from raysal.model import keras_env  # noqa: F401  (before TensorFlow)
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None
    builder = tfds.builder(cfg.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        raise SourceError(
            f"{cfg.where}: TFDS dataset {cfg.tfds_name!r} is not prepared in {builder.data_dir}. raysal never "
            f"downloads at run time: on a machine with network run `tfds build {cfg.tfds_name} --data_dir DIR`, "
            f"copy DIR here and set {cfg.where}.data_dir = \"DIR\" (e.g. --set {cfg.where}.data_dir='\"DIR\"')")
    return builder


def read_tfds_table(cfg: SourceConfig, classes: Sequence[str]) -> pa.Table:
    """A TFDS split as encoded image bytes, read from a prepared ``data_dir`` (never downloaded)."""
    import tensorflow_datasets as tfds

    builder = prepared_tfds_builder(cfg)
    names = builder.info.features["label"].names
    if list(names) != list(classes):
        raise SourceError(f"{cfg.where}: data.classes {list(classes)} differ from {cfg.tfds_name}'s labels {names}")
    ds = builder.as_dataset(split=cfg.tfds_split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(add_tfds_id=True))
    ids, uris, labels, images = [], [], [], []
    for example in ds.as_numpy_iterator():
        tfds_id = example["tfds_id"].decode()
        ids.append(stable_id(f"{cfg.tfds_name}/{tfds_id}"))
        uris.append(f"tfds://{cfg.tfds_name}/{tfds_id}")
        labels.append(int(example["label"]))
        images.append(bytes(example["image"]))
    table = pa.table({"image_id": pa.array(ids, pa.int64()), "uri": pa.array(uris, pa.string()),
                      "label": pa.array(labels, pa.int64()), "image_bytes": pa.array(images, pa.binary())})
    return _check_unique(table, cfg.where)


def ensure_digits(folder: str) -> str:
    """Write scikit-learn's 1,797 digits once as PNG files plus a manifest; return the manifest path.

    The row order is a fixed shuffle, so ``rows`` slices of it are class-balanced splits.
    """
    if storage.is_uri(folder):
        raise SourceError(f"the digits demo set is written to a local folder, not {folder}: "
                          "set data.root to a local path")
    manifest = os.path.join(folder, DIGITS_MANIFEST)
    if os.path.exists(manifest):
        return manifest
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images_dir = os.path.join(folder, "images")
    os.makedirs(images_dir, exist_ok=True)
    uris = []
    for i in order:
        uri = os.path.join(images_dir, f"{i:04d}.png")
        pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # [8, 8], 0..16 -> 0..255
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        Path(uri).write_bytes(buffer.getvalue())
        uris.append(uri)
    table = pa.table({"image_id": pa.array(order, pa.int64()), "uri": pa.array(uris, pa.string()),
                      "label": pa.array(digits.target[order], pa.int64())})
    tmp = f"{manifest}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, manifest)  # the manifest appears whole or not at all
    return manifest


def _manifest_source(cfg: SourceConfig, classes: Sequence[str],
                     root: str) -> tuple[pa.Table | None, Manifest, list[pq.FileMetaData], list[Piece]]:
    """A manifest source's shards, checked, and the pieces of its rows; with the rows as a table
    read on the driver for a slice of a manifest without image bytes, else None (read by Ray:
    the images of a packed manifest are never read on the driver)."""
    manifest, metadata, pieces = manifest_slice(resolve_path(cfg.path, root), cfg.rows, cfg.where)
    if not cfg.rows or "image_bytes" in manifest_columns(metadata):
        return None, manifest, metadata, pieces
    return _read_slice(manifest, metadata, pieces, classes, cfg.where), manifest, metadata, pieces


def source_table(cfg: SourceConfig, classes: Sequence[str], root: str) -> pa.Table | None:
    """The source as an Arrow table read on the driver, or None for a source read by Ray: a whole
    manifest (not opened here), or a slice of a packed one (checked against its rows here)."""
    if cfg.kind == "manifest":
        return _manifest_source(cfg, classes, root)[0] if cfg.rows else None
    if cfg.kind == "tfds":
        table = read_tfds_table(cfg, classes)
    elif cfg.kind == "folder":
        table = list_folder(resolve_path(cfg.path, root), classes, cfg.where)
    else:
        table = read_manifest_table(ensure_digits(resolve_path(cfg.path, root)), classes, cfg.where)
    if cfg.rows:
        start, stop = slice_bounds(cfg.rows, len(table), cfg.where)
        table = table.slice(start, stop - start)
    return table


def read_source(cfg: SourceConfig, classes: Sequence[str], root: str,
                block_rows: int = DRIVER_BLOCK_ROWS) -> "ray.data.Dataset":
    """The source as a lazy Ray Dataset with the columns in the module docstring.

    A source read on the driver is cut into blocks of ``block_rows``, so decode tasks run in
    parallel and the pipeline streams; a manifest keeps Ray's own blocks.
    """
    return read_source_with_size(cfg, classes, root, block_rows)[0]


def read_source_with_size(cfg: SourceConfig, classes: Sequence[str], root: str,
                          block_rows: int = DRIVER_BLOCK_ROWS) -> tuple["ray.data.Dataset", int]:
    """``read_source`` and the number of images in it, from the table read on the driver or a
    manifest's Parquet metadata: the source is read once, and nothing is decoded to count it."""
    import ray.data

    if cfg.kind == "manifest":  # its footers read once: checked on the driver, before any task
        table, manifest, metadata, pieces = _manifest_source(cfg, classes, root)
    else:
        table = source_table(cfg, classes, root)
    if table is not None:
        blocks = [table.slice(i, block_rows) for i in range(0, len(table), block_rows)]
        return ray.data.from_arrow(blocks or [table]), len(table)
    columns = manifest_columns(metadata)
    conform = _ManifestBatch(tuple(classes), cfg.where, manifest.base)
    if not cfg.rows:
        ds = ray.data.read_parquet(manifest.paths, include_paths=True, file_extensions=None).select_columns(
            [*columns, "path"])  # pushed down into the read: other columns of the shards are never read
        return ds.map_batches(conform, batch_format="pyarrow"), sum(m.num_rows for m in metadata)
    # A slice of a packed manifest: a task reads one row group's share of it.
    ds = ray.data.from_items([{"file": f, "group": g, "first": first, "rows": n} for f, g, first, n in pieces],
                             override_num_blocks=len(pieces))
    return ds.map_batches(_PieceReader(manifest.paths, columns, conform), batch_size=1,
                          batch_format="pyarrow"), sum(n for *_, n in pieces)


class _ManifestBatch:
    """Conform one batch of a large manifest to the source columns, inside a Ray task."""

    def __init__(self, classes: tuple[str, ...], where: str, base: str) -> None:
        self.classes, self.where, self.base = classes, where, base

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _conform(batch, self.classes, self.where, self.base)


class _PieceReader:
    """Read the rows of one piece of a manifest's slice and conform them, inside a Ray task."""

    def __init__(self, paths: list[str], columns: list[str], conform: _ManifestBatch) -> None:
        self.paths, self.columns, self.conform = paths, columns, conform

    def __call__(self, batch: pa.Table) -> pa.Table:
        pieces = [(p["file"], p["group"], p["first"], p["rows"]) for p in batch.to_pylist()]
        return self.conform(read_pieces(self.paths, pieces, self.columns))
