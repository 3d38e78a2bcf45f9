"""Pool sources: a Parquet manifest, an image folder, a TFDS split, or the offline digits set.

Every source yields the same columns: ``image_id`` (int64, unique, stable across runs), ``uri``
(string) and ``label`` (int64 index into ``data.classes``, null when unknown), plus
``image_bytes`` (binary) for sources whose images do not live in files (TFDS, packed manifests).

A Parquet manifest (``raysal.data.manifest``) is the scalable form: it is read by Ray tasks,
never listed on the driver. It is one file, or the shards of a folder or glob read as one
source; a packed manifest (``raysal pack``) carries each encoded image in ``image_bytes``, so a
pool is read in large sequential pieces instead of one request per file. Its ``uri`` is kept for reports; a row
without one is named ``<shard>#image_id=<id>``. Folders and row slices of manifests without
image bytes are read on the driver, which suits seed/val/test splits and pools of up to a few
million files; a slice of a packed manifest is read by Ray tasks, row group by row group.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import storage
from raysal.config import SourceConfig
from raysal.data.listing import folder_files, resolve_path, stable_id
from raysal.data.manifest import (
    ManifestBatch,
    PieceReader,
    check_unique_ids,
    manifest_columns,
    manifest_source,
    read_manifest_table,
    slice_bounds,
)

# Moved to raysal.data.manifest; still importable from here, as run.preflight imports them from here.
from raysal.data.manifest import check_manifest as check_manifest
from raysal.data.manifest import manifest_labels as manifest_labels
from raysal.data.manifest import open_manifest as open_manifest
from raysal.errors import SourceError  # noqa: F401  (raised here; importable from here too)

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)
SOURCE_SCHEMA = pa.schema([("image_id", pa.int64()), ("uri", pa.string()), ("label", pa.int64())])
DIGITS_MANIFEST = "manifest.parquet"
DRIVER_BLOCK_ROWS = 512  # rows per block of a source read on the driver, unless the caller says


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
    return check_unique_ids(table, where)


def prepared_tfds_builder(cfg: SourceConfig) -> Any:
    """The TFDS builder of a prepared dataset; SourceError saying how to prepare it otherwise."""
    from raysal.model import keras_env  # noqa: F401, I001  (before TensorFlow)
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
    return check_unique_ids(table, cfg.where)


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
    """The source as an Arrow table read on the driver, or None for a source read by Ray: a whole
    manifest (not opened here), or a slice of a packed one (checked against its rows here)."""
    if cfg.kind == "seed":
        raise SourceError(f"{cfg.where}: a cold start's seed split is chosen and labelled by its round 0 and read "
                          "from the run's state by a round (raysal.run.coldstart), not on its own: give a labelled "
                          "source here instead")
    if cfg.kind == "manifest":
        return manifest_source(cfg, classes, root)[0] if cfg.rows else None
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
        table, manifest, metadata, pieces = manifest_source(cfg, classes, root)
    else:
        table = source_table(cfg, classes, root)
    if table is not None:
        blocks = [table.slice(i, block_rows) for i in range(0, len(table), block_rows)]
        return ray.data.from_arrow(blocks or [table]), len(table)
    columns = manifest_columns(metadata)
    conform = ManifestBatch(tuple(classes), cfg.where, manifest.base)
    if not cfg.rows:
        ds = ray.data.read_parquet(manifest.paths, include_paths=True, file_extensions=None).select_columns(
            [*columns, "path"])  # pushed down into the read: other columns of the shards are never read
        return ds.map_batches(conform, batch_format="pyarrow"), sum(m.num_rows for m in metadata)
    # A slice of a packed manifest: a task reads one row group's share of it.
    ds = ray.data.from_items([{"file": f, "group": g, "first": first, "rows": n} for f, g, first, n in pieces],
                             override_num_blocks=len(pieces))
    return ds.map_batches(PieceReader(manifest.paths, columns, conform), batch_size=1,
                          batch_format="pyarrow"), sum(n for *_, n in pieces)
