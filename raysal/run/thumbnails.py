"""Thumbnails of a round's selection for its report: made once, kept in the round's folder.

A small selection from a pool of files read by their URI (a folder, local or ``s3://``) is
decoded on the driver, a few threads at a time. A large one, or one from a manifest (whose images
may be packed into its Parquet shards) or from TFDS, is decoded on Ray: the pool source streams through a
filter that keeps the selected rows, then the same decoding as scoring's (``decode_batch``).
An image that cannot be read gets no thumbnail and its reason.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from raysal.data import sources
from raysal.data.decode import decode_batch
from raysal.run import preflight
from raysal.run.state import RunState

if TYPE_CHECKING:
    from raysal.config import Config

log = logging.getLogger(__name__)

SIDE = 96  # pixels of a thumbnail's side
FILE = "thumbnails.parquet"  # in the round's own folder: image_id, jpeg (null when unreadable), error
DRIVER_IMAGES = 256  # at most this many images by URI are decoded on the driver
BY_URI = ("folder", "digits")  # pool kinds whose URIs are files to read (a manifest's may be packed, tfds's are not)
GONE = "not in the pool source any more"
DRIVER_THREADS = 4
SCHEMA = pa.schema([("image_id", pa.int64()), ("jpeg", pa.binary()), ("error", pa.string())])


def _jpeg(image: NDArray[np.uint8]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=85)
    return out.getvalue()


def encode_batch(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    """Decoded rows (``decode_batch``) as JPEG bytes; an undecodable row keeps its error."""
    jpegs = np.array([_jpeg(image) if not error else None for image, error in zip(batch["image"], batch["error"],
                                                                                strict=True)], dtype=object)
    return {"image_id": batch["image_id"], "jpeg": jpegs, "error": batch["error"]}


def keep_selected(batch: pa.Table, ids: NDArray[np.int64]) -> pa.Table:
    """The rows of a source batch whose image_id is in ``ids`` (sorted), a Ray Data task."""
    return batch.filter(pa.array(np.isin(batch["image_id"].to_numpy(), ids, assume_unique=False)))


def _on_driver(selection: pa.Table) -> pa.Table:
    n = selection.num_rows
    decoded = decode_batch({"image_id": selection["image_id"].to_numpy(), "uri": selection["uri"].to_numpy(
        zero_copy_only=False), "label": np.full(n, np.nan)}, SIDE, threads=DRIVER_THREADS)
    return pa.table(encode_batch(decoded), schema=SCHEMA)


def _on_ray(cfg: Config, state: RunState, selection: pa.Table) -> pa.Table:
    from raysal.run.cluster import init_ray

    init_ray()  # joined already in a round; ``raysal report`` starts or joins one only for this
    ds = sources.read_source(cfg.data.pool, cfg.data.classes, preflight.data_root(cfg, state.root))
    ids = np.sort(selection["image_id"].to_numpy())
    ds = ds.map_batches(keep_selected, fn_kwargs={"ids": ids}, batch_format="pyarrow") \
        .map_batches(decode_batch, fn_kwargs={"size": SIDE}, batch_format="numpy") \
        .map_batches(encode_batch, batch_format="numpy")
    found = pa.concat_tables([pa.table(b, schema=SCHEMA) for b in ds.iter_batches(batch_format="pyarrow")
                              if b.num_rows] or [SCHEMA.empty_table()])
    return found


def thumbnails(state: RunState, cfg: Config, number: int, selection: pa.Table,
               cache: bool = True) -> dict[int, tuple[bytes | None, str]]:
    """image_id -> (JPEG bytes or None, why not) for round ``number``'s ``selection``
    (image_id, uri), from the round's cache; made first when missing, and kept in the cache
    when ``cache`` (an id the pool no longer has is kept too, with its reason)."""
    key = f"{state.round_key(number)}/{FILE}"
    table = state.read_table(key)
    wanted = selection["image_id"].to_pylist()
    if table is None or not set(wanted) <= set(table["image_id"].to_pylist()):
        by_uri = cfg.data.pool.kind in BY_URI and selection.num_rows <= DRIVER_IMAGES
        log.info("round %d: making %d thumbnails for the report%s", number, selection.num_rows,
                 "" if by_uri else " on Ray")
        table = _on_driver(selection) if by_uri else _on_ray(cfg, state, selection)
        gone = sorted(set(wanted) - set(table["image_id"].to_pylist()))
        table = pa.concat_tables([table, pa.table({"image_id": pa.array(gone, pa.int64()),
                                                   "jpeg": pa.nulls(len(gone), pa.binary()),
                                                   "error": [GONE] * len(gone)}, schema=SCHEMA)])
        if cache:
            state.write_table(key, table)
    found = dict(zip(table["image_id"].to_pylist(), zip(table["jpeg"].to_pylist(), table["error"].to_pylist(),
                                                        strict=True), strict=True))
    return {i: found[i] for i in wanted}
