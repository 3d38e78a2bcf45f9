"""Pool sources: a Parquet manifest, an image folder, a TFDS split, or the offline digits set.

Every source yields the same columns: ``image_id`` (int64, unique, stable across runs), ``uri``
(string) and ``label`` (int64 index into ``data.classes``, null when unknown), plus
``image_bytes`` (binary) for sources whose images do not live in files (TFDS).

A Parquet manifest is the scalable form: it is read by Ray tasks, never listed on the driver.
Folders and row slices are read on the driver, which suits seed/val/test splits and pools of up
to a few million files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import storage
from raysal.config import SourceConfig, row_slice

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)
SOURCE_SCHEMA = pa.schema([("image_id", pa.int64()), ("uri", pa.string()), ("label", pa.int64())])
DIGITS_MANIFEST = "manifest.parquet"
DRIVER_BLOCK_ROWS = 512  # rows per block of a source read on the driver, unless the caller says


class SourceError(RuntimeError):
    """A source that cannot be read as configured; the message says what is missing."""


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


def _conform(table: pa.Table, classes: Sequence[str], where: str, base: str) -> pa.Table:
    missing = {"image_id", "uri"} - set(table.column_names)
    if missing:
        raise SourceError(f"{where}: manifest lacks columns {sorted(missing)}; it needs image_id, uri[, label]")
    labels = (labels_to_index(table["label"].combine_chunks(), classes, where) if "label" in table.column_names
              else pa.nulls(len(table), pa.int64()))
    uris = _absolute_uris(table["uri"].cast(pa.string()).combine_chunks(), base)
    return _check_unique(pa.table({"image_id": table["image_id"].cast(pa.int64()), "uri": uris, "label": labels}),
                         where)


def read_manifest_table(path: str, classes: Sequence[str], where: str) -> pa.Table:
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        raise SourceError(f"{where}: manifest {path} does not exist")
    return _conform(pq.read_table(inner, filesystem=fs), classes, where, manifest_base(path))


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
    from raysal import keras_env  # noqa: F401  (before TensorFlow)
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


def source_table(cfg: SourceConfig, classes: Sequence[str], root: str) -> pa.Table | None:
    """The source as an Arrow table read on the driver, or None for a whole manifest (read by Ray)."""
    if cfg.kind == "tfds":
        table = read_tfds_table(cfg, classes)
    elif cfg.kind == "folder":
        table = list_folder(resolve_path(cfg.path, root), classes, cfg.where)
    elif cfg.kind == "digits":
        table = read_manifest_table(ensure_digits(resolve_path(cfg.path, root)), classes, cfg.where)
    elif cfg.rows:
        table = read_manifest_table(resolve_path(cfg.path, root), classes, cfg.where)
    else:
        return None
    if cfg.rows:
        s = row_slice(cfg.rows, f"{cfg.where}.rows")
        start, stop, _ = s.indices(len(table))
        if start >= len(table):
            raise SourceError(f"{cfg.where}.rows: {cfg.rows!r} starts past the source's {len(table)} rows")
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
    import pyarrow.dataset as pads
    import ray.data

    table = source_table(cfg, classes, root)
    if table is not None:
        blocks = [table.slice(i, block_rows) for i in range(0, len(table), block_rows)]
        return ray.data.from_arrow(blocks or [table]), len(table)
    path = resolve_path(cfg.path, root)
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        raise SourceError(f"{cfg.where}: manifest {path} does not exist")
    names = pq.read_schema(inner, filesystem=fs).names  # fail fast, on the driver, before any task
    if not {"image_id", "uri"} <= set(names):
        raise SourceError(f"{cfg.where}: manifest {path} lacks columns {sorted({'image_id', 'uri'} - set(names))}")
    rows = pads.dataset(inner, filesystem=fs, format="parquet").count_rows()
    return ray.data.read_parquet(path).map_batches(_ManifestBatch(tuple(classes), cfg.where, manifest_base(path)),
                                                   batch_format="pyarrow"), rows


class _ManifestBatch:
    """Conform one batch of a large manifest to the source columns, inside a Ray task."""

    def __init__(self, classes: tuple[str, ...], where: str, base: str) -> None:
        self.classes, self.where, self.base = classes, where, base

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _conform(batch, self.classes, self.where, self.base)

