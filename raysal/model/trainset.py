"""How the decoded training set reaches Ray Train: kept in the object store, or cached on storage.

Training reads its set once per epoch. A set whose decoded images fit in half of Ray's object
store is materialised there once, as it always was. A larger one (100,000 images at 299x299 are
27 GB decoded) is decoded once into Parquet shards in a cache folder of the run's state (a path
every node sees, or ``s3://...``), and every epoch reads the shards back; the folder is removed
when training ends. It needs no local disk on the nodes, where materialising anyway relies on
Ray spilling to it. On 2 cores with a 100 MiB object store (``trainset`` rows of
jobs/bench.py, 2026-11-27) an epoch from the cache took as long as decoding the JPEGs again
(a lazy dataset that Ray Train re-executes), and twice as long as materialising with spilling:
Ray Data's re-execution each epoch, not the reading, is most of it.

The shards are written and read by plain Ray tasks with pyarrow, not ``write_parquet`` /
``read_parquet``: each epoch of ``read_parquet`` lists the folder in a task of its own and reads
every file into one block, 8-15x slower here than one task per shard; and the list of shards the
write tasks return is exactly what was written (a retried task's extra file is never read).
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from numpy.typing import NDArray

from raysal import storage
from raysal.config import Config

log = logging.getLogger(__name__)

# Ray Data's streaming executor plans to use the other half for blocks in flight
# (RAY_DATA_OBJECT_STORE_MEMORY_LIMIT_FRACTION = 0.5): the validation set, the decoding of the
# training set and the blocks that feed the training workers.
MEMORY_FRACTION = 0.5
SHARD_BYTES = 64 * 2**20  # decoded images per cache file, read back as one block
SHARD_STORE_SHARE = 1 / 16  # but at most this share of the object store: a few blocks in flight fit a small one
LABEL_BYTES = 8  # int64


@dataclass(frozen=True)
class TrainSet:
    """The training set as Ray Train reads it."""

    dataset: ray.data.Dataset  # columns image [s, s, 3] uint8 and label int64
    count: int  # images in it
    kept: str  # memory: materialised in the object store; cache: Parquet shards read back each epoch


def _kept(setting: str, decoded_bytes: int, store_bytes: float) -> str:
    if setting != "auto":
        return setting
    return "memory" if decoded_bytes <= MEMORY_FRACTION * store_bytes else "cache"


def _write_shard(batch: dict[str, NDArray], cache_uri: str) -> dict[str, NDArray]:
    """One batch of decoded images as one Parquet file; its URI and row count."""
    images = np.ascontiguousarray(batch["image"])  # [n, s, s, 3]
    n = len(images)
    if n == 0:
        return {"uri": np.array([], dtype=object), "rows": np.array([], np.int64)}
    # Raw bytes, not a tensor column: Parquet stores a tensor as a list with a level per pixel,
    # and reads it back ~10x slower. No compression: decoded pixels hardly compress with fast codecs.
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(images[0].size), n, [None, pa.py_buffer(images)])
    table = pa.table({"image": pixels, "label": pa.array(batch["label"], pa.int64())})
    name = f"{uuid.uuid4().hex}.parquet"
    fs, inner = storage.resolve(cache_uri)
    pq.write_table(table, posixpath.join(inner, name), filesystem=fs, compression="none")
    return {"uri": np.array([storage.join(cache_uri, name)], dtype=object), "rows": np.array([n], np.int64)}


def _read_shards(batch: dict[str, NDArray], side: int) -> dict[str, NDArray]:
    """The images and labels of the shards named in ``batch["uri"]``."""
    tables = []
    for uri in batch["uri"]:
        fs, path = storage.resolve(str(uri))
        tables.append(pq.read_table(path, filesystem=fs))
    table = pa.concat_tables(tables)
    pixels = table["image"].combine_chunks()  # fixed_size_binary[s * s * 3]
    size = side * side * 3
    images = np.frombuffer(pixels.buffers()[1], np.uint8, count=len(pixels) * size, offset=pixels.offset * size)
    return {"image": images.reshape(-1, side, side, 3), "label": table["label"].to_numpy()}  # [n, s, s, 3], [n]


def _remove(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


@contextmanager
def prepare_train_set(images: ray.data.Dataset, max_rows: int, cfg: Config, cache_uri: str,
                      guard: Callable[[], None] | None = None) -> Iterator[TrainSet]:
    """The decoded training set, decoded once, for the ``with`` block; its cache is removed after.

    Kept in the object store when ``max_rows`` decoded images take at most ``MEMORY_FRACTION``
    of it (or ``train.data = "memory"``), else written as Parquet shards under ``cache_uri``
    (or ``train.data = "cache"``). Either way the images are decoded once and counted as they
    are kept, not decoded again to count them.

    Args:
        images: a lazy dataset of decoded, labelled images: ``image`` [s, s, 3] uint8, ``label`` int64.
        max_rows: at least the number of images in it, known without decoding (the rows of its
            sources): it decides where the set is kept.
        cache_uri: a folder for this model's training that every node sees (in the run's state).
            Emptied first, so no shard of a crashed run is read; the shards go to a subfolder of
            this attempt's own, removed when the block ends, and the folder with it once empty.
        guard: the run's lease check (``RunState.guard``), called before the folder is emptied:
            a round that lost the lease must not remove the shards of the round that holds it.
    """
    side = cfg.model.input_size
    image_bytes = side * side * 3
    store_bytes = ray.cluster_resources().get("object_store_memory", 0.0)
    decoded_bytes = max_rows * (image_bytes + LABEL_BYTES)
    kept = _kept(cfg.train.data, decoded_bytes, store_bytes)
    if kept == "memory":
        # In the sources' order, not in the order tasks finish: the same labelled set gives the
        # same rows in the same order, so a rerun (a resumed round) trains the same model.
        images.context.execution_options.preserve_order = True
        decoded = images.materialize()
        yield TrainSet(decoded, decoded.count(), kept)  # a materialised dataset counts from its metadata
        return
    log.info("training set: up to %d images, %.0f MiB decoded, against an object store of %.0f MiB: decoding "
             "them once into %s", max_rows, decoded_bytes / 2**20, store_bytes / 2**20, cache_uri)
    fs, inner = storage.resolve(cache_uri)
    if guard is not None:
        guard()
    _remove(fs, inner)  # shards of a run that crashed, or of a round that lost the lease to this one
    attempt = uuid.uuid4().hex[:12]  # this training's own folder: the round it took the lease from removes only its own
    shards_uri, shards_dir = storage.join(cache_uri, attempt), posixpath.join(inner, attempt)
    fs.create_dir(shards_dir, recursive=True)
    try:
        shard_rows = max(1, int(min(SHARD_BYTES, store_bytes * SHARD_STORE_SHARE) // image_bytes))
        written = images.map_batches(_write_shard, fn_kwargs={"cache_uri": shards_uri}, batch_size=shard_rows,
                                     batch_format="numpy", num_cpus=cfg.score.decode_cpus).take_all()
        shards = [{"uri": row["uri"]} for row in written]
        dataset = ray.data.from_items(shards, override_num_blocks=max(1, len(shards))).map_batches(
            _read_shards, fn_kwargs={"side": side}, batch_size=1, batch_format="numpy",
            num_cpus=cfg.score.decode_cpus)  # one task per shard, again every epoch
        yield TrainSet(dataset, int(sum(row["rows"] for row in written)), kept)
    finally:
        _remove(fs, shards_dir)
        if not fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
            _remove(fs, inner)
