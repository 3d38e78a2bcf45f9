"""rescoring: a frozen backbone's later rounds, the pool rescored from its cached embeddings with
the head alone, against rescoring it in full (decode, backbone, head)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import partial
from typing import Any

import numpy as np

from benchmarks.common import (
    Row,
    median_reported,
    score_folder_config,
    scoring_seconds,
    settle,
    write_checkpoint,
    write_image_folder,
)


def rescore_seconds(cfg: Any, checkpoint: str, embedded: str, out_dir: str) -> float:
    """Wall time of one rescoring pass from the embeddings in ``embedded`` with the head alone,
    into ``out_dir`` (replaced). The wait for the CPUs to settle before it is not counted."""
    from raysal.model.embeddings import HEAD_FILE
    from raysal.run.scoring import rescore

    shutil.rmtree(out_dir, ignore_errors=True)
    settle()
    start = time.perf_counter()
    rescore(embedded, out_dir, os.path.join(checkpoint, HEAD_FILE), np.empty(0, np.int64), cfg)
    return time.perf_counter() - start


def write_embedded(folder: str, rows: int, dim: int, files: int = 8) -> None:
    """Score files as a scoring pass with embeddings writes them (``image_id``, ``uri``, ``label``,
    ``error``, float16 ``embedding``), ``rows`` of random embeddings in ``files`` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        values = rng.normal(0, 1, (len(part), dim)).astype(np.float16)  # [m, d]
        pq.write_table(pa.table({
            "image_id": pa.array(part, pa.int64()), "uri": pa.array([f"img{j}" for j in part]),
            "label": pa.array(np.zeros(len(part))), "error": pa.array([""] * len(part)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), dim)}),
            os.path.join(folder, f"part-{i:05d}.parquet"))


def bald_row(cfg: Any, checkpoint: str, tmp: str, rows: int, repeats: int) -> Row:
    """``bald``'s cost: rescoring cached embeddings with select.mc_samples = 20 MC dropout passes
    of the head, against one pass (smallest_margin), on the same files, end to end."""
    import dataclasses

    from raysal.model.embeddings import HEAD_FILE, DenseHead

    with open(os.path.join(checkpoint, HEAD_FILE), "rb") as f:
        dim, classes = DenseHead.from_bytes(f.read()).kernel.shape
    embedded, out = os.path.join(tmp, "bald-embedded"), os.path.join(tmp, "bald-rescored")
    write_embedded(embedded, rows, dim)
    one = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, criterion="smallest_margin"))
    passes = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, criterion="bald", mc_samples=20))
    rescore_seconds(one, checkpoint, embedded, out)  # warm-up: the tasks' workers
    t_one = median_reported(partial(rescore_seconds, one, checkpoint, embedded, out), repeats)
    t_bald = median_reported(partial(rescore_seconds, passes, checkpoint, embedded, out), repeats)
    return {"group": "rescoring", "name": f"bald, 20 MC dropout passes of the head vs one pass, rescoring {rows:,} "
                                          "cached embeddings", "unit": "s", "raysal": round(t_bald, 2),
            "baseline": round(t_one, 2), "ratio": round(t_one / t_bald, 2),
            "notes": f"{dim} float16 values, {classes} classes, 8 files, end to end (tasks, Parquet in and out); "
                     "target >= 0.33 (bald at most 3x one pass)"}


def run(quick: bool, repeats: int) -> list[Row]:
    """A frozen backbone's later rounds: the pool rescored from its cached embeddings with the head
    alone, against rescoring it in full (decode, backbone, head) as a round without the cache
    does; and what writing the embeddings adds to the full pass that makes them."""
    import pyarrow.parquet as pq

    n_images, side, size = (500 if quick else 2_000), 96, 75
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        write_image_folder(folder, n_images, side)
        _, checkpoint = write_checkpoint(tmp, "inception_v3", size)
        cfg = score_folder_config(folder, "inception_v3", size, 64)
        embedded, rescored = os.path.join(tmp, "embedded"), os.path.join(tmp, "rescored")
        scoring_seconds(cfg, checkpoint, embedded, embeddings=True)  # warm-up, and the cache to rescore
        t_full = median_reported(partial(scoring_seconds, cfg, checkpoint), repeats)
        t_embedded = median_reported(partial(scoring_seconds, cfg, checkpoint, embedded, embeddings=True), repeats)
        t_head = median_reported(partial(rescore_seconds, cfg, checkpoint, embedded, rescored), repeats)
        same = pq.read_table(rescored, columns=["image_id"]).num_rows == n_images
        cache_mb = sum(os.path.getsize(os.path.join(embedded, f)) for f in os.listdir(embedded)) / 2**20
        bald = bald_row(cfg, checkpoint, tmp, 10_000 if quick else 100_000, repeats)
    assert same, "rescoring lost rows"
    return [
        {"group": "rescoring", "name": f"InceptionV3 {size}x{size}: head-only rescoring from cached embeddings vs "
                                       "full rescoring", "unit": "s", "raysal": round(t_head, 2),
         "baseline": round(t_full, 2), "ratio": round(t_full / t_head, 1),
         "notes": f"{n_images} JPEGs of {side}px, both end to end (actor or task start included); "
                  "float16 embeddings of 2,048 values; target >= 20"},
        {"group": "rescoring", "name": f"InceptionV3 {size}x{size}: the full pass writing embeddings vs without",
         "unit": "s", "raysal": round(t_embedded, 2), "baseline": round(t_full, 2),
         "ratio": round(t_full / t_embedded, 3),
         "notes": f"what the first round of a frozen backbone pays to make the cache ({cache_mb:.1f} MiB of score "
                  "files with embeddings)"},
        bald,
    ]
