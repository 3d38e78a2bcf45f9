"""scale: a pool of a million images packed in Parquet, scored and selected as a round's score
and select stages do, against the tf.data loop on the pool's first shards."""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
import time
from functools import partial
from typing import Any

import numpy as np
import psutil
import pyarrow as pa

from benchmarks.common import (
    CLASSES,
    PeakMemory,
    Row,
    jpeg_photos,
    median_seconds,
    mib,
    rss_now,
    settle,
    write_checkpoint,
)

SHARD_ROWS = 10_000  # as raysal pack writes them
SAMPLE = 20_000  # images the tf.data baseline scores: the pool's first shards


def write_packed_shard(path: str, first: int, n: int, side: int) -> int:
    """Rows [first, first + n) of a generated pool as one packed shard (``raysal pack``'s
    columns and row groups); its size in bytes."""
    import pyarrow.parquet as pq

    from raysal.data import pack

    ids = np.arange(first, first + n, dtype=np.int64)
    table = pa.table({"image_id": ids, "uri": [f"gen/c{i % 5}/{i:07d}.jpg" for i in ids],
                      "label": [f"c{i % 5}" for i in ids], "image_bytes": list(jpeg_photos(n, side, side, seed=first))},
                     schema=pack.shard_schema(pa.string()))
    pq.write_table(table, path, row_group_size=pack.ROW_GROUP_ROWS)
    return os.path.getsize(path)


def tf_data_packed_scores(model: Any, shards: list[str], size: int, batch_size: int) -> int:
    """The tf.data loop on packed images: read the shards' bytes, then decode/resize with a
    parallel map + prefetch, and predict; the number of images scored."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    data = [pq.read_table(path, columns=["image_bytes"])["image_bytes"] for path in shards]
    images = pa.chunked_array([chunk for column in data for chunk in column.chunks]).to_pylist()

    def load(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.cast(tf.image.resize(image, (size, size)), tf.uint8)

    ds = (tf.data.Dataset.from_tensor_slices(images).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return len(model.predict(ds, verbose=0))


def run(quick: bool, repeats: int) -> list[Row]:
    """Score and select a pool of 1,000,000 (quick: 100,000) 32px JPEGs packed in Parquet shards.

    raysal runs what a round's score and select stages run (the packed manifest read by Ray
    tasks, decode, an actor pool scoring into Parquet, exact top-k over the written scores), once:
    a pass takes minutes, so ``repeats`` applies to the baselines alone. The tf.data loop is
    measured on the pool's first 20,000 images in the same run; the selection is checked against
    numpy top-k on the scores read back from the written files.
    """
    import pyarrow.parquet as pq

    from raysal.config import load_config
    from raysal.data import sources
    from raysal.data.decode import decode
    from raysal.run.scoring import score, write_scores
    from raysal.run.topk import select_top_k
    from raysal.selection.topk import top_k_indices

    n, side, input_size, batch_size, k = (100_000 if quick else 1_000_000), 32, 32, 256, 500
    with tempfile.TemporaryDirectory() as tmp:
        pool = os.path.join(tmp, "pool")
        os.makedirs(pool)
        firsts = range(0, n, SHARD_ROWS)
        shards = [os.path.join(pool, f"part-{i:05d}.parquet") for i in range(len(firsts))]
        with multiprocessing.get_context("spawn").Pool(psutil.cpu_count() or 1) as workers:  # as decode does
            pool_bytes = sum(workers.starmap(write_packed_shard, [(path, first, min(SHARD_ROWS, n - first), side)
                                                                  for path, first in zip(shards, firsts, strict=True)]))
        model, checkpoint = write_checkpoint(tmp, "small_cnn", input_size)
        cfg = load_config("demo", {
            "data.classes": CLASSES, "data.pool.kind": "manifest", "data.pool.path": pool,
            "data.pool.rows": "", "model.kind": "small_cnn", "model.input_size": input_size,
            "score.batch_size": batch_size})
        scores_dir = os.path.join(tmp, "scores")
        settle()
        before_driver, before_total = rss_now()  # the driver with TensorFlow loaded, and Ray's idle workers
        with PeakMemory(interval=0.5).measure() as mem:  # sampling every process costs CPU: not too often
            start = time.perf_counter()
            ds, size = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, "")
            write_scores(score(decode(ds, cfg), checkpoint, cfg), scores_dir, size)
            t_score = time.perf_counter() - start
            selection = select_top_k(scores_dir, k)  # the scores' folder, as the select stage reads it
            t_select = time.perf_counter() - start - t_score
        settle()
        sample = shards[:math.ceil(SAMPLE / SHARD_ROWS)]
        model.predict(np.zeros((batch_size, input_size, input_size, 3), np.uint8), verbose=0)  # built before timing
        t_tfdata, count = median_seconds(partial(tf_data_packed_scores, model, sample, input_size, batch_size), repeats)
        assert count == min(n, SAMPLE)
        written = pq.read_table(scores_dir, columns=["image_id", "score", "error"])
        ids, scores = written["image_id"].to_numpy(), written["score"].to_numpy()
        skipped = int(np.count_nonzero(written["error"].to_numpy(zero_copy_only=False) != ""))
        t_numpy, want = median_seconds(partial(top_k_indices, scores, ids, k), repeats)
    exact = bool(size == n and written.num_rows == n and np.array_equal(selection.rows["image_id"], ids[want])
                 and np.array_equal(selection.rows["score"], scores[want])
                 and len(selection.skipped["image_id"]) == skipped)
    e2e, tfdata = n / (t_score + t_select), count / t_tfdata
    pool_note = (f"{n:,} {side}px JPEGs in {len(shards)} Parquet shards ({mib(pool_bytes)} MiB), small CNN at "
                 f"{input_size}x{input_size}, batch {batch_size}")
    return [
        {"group": "scale", "name": f"{n:,}-image packed pool: raysal score + select end to end vs tf.data + predict",
         "unit": "images/s", "raysal": round(e2e, 1), "baseline": round(tfdata, 1), "ratio": round(e2e / tfdata, 3),
         "notes": f"{pool_note}; raysal: one pass, actor start included, score {t_score:.1f} s + select "
                  f"{t_select:.1f} s; baseline: the first {count:,} images, read from their shards, decoded and "
                  "scored in this process"},
        {"group": "scale", "name": f"{n:,}-image packed pool: peak RSS of the driver, during the pass vs before it",
         "unit": "MiB", "raysal": mib(mem.peak_driver), "baseline": mib(before_driver),
         "ratio": round(mem.peak_driver / before_driver, 3),
         "notes": f"it grew {mib(mem.peak_driver - before_driver)} MiB, for a pool of {mib(pool_bytes)} MiB of "
                  "Parquet; before: TensorFlow and the model loaded, Ray started"},
        {"group": "scale", "name": f"{n:,}-image packed pool: peak RSS of the driver + Ray workers, during the pass vs "
                                   "before it", "unit": "MiB", "raysal": mib(mem.peak_total),
         "baseline": mib(before_total), "ratio": round(mem.peak_total / before_total, 3),
         "notes": "sum of RSS (shared object-store pages counted per process; the scoring actor's TensorFlow "
                  "included), sampled every 0.5 s"},
        {"group": "scale", "unit": "s",
         "name": f"{n:,}-image packed pool: select top-{k} of the written scores vs numpy in memory",
         "raysal": round(t_select, 2), "baseline": round(t_numpy, 4), "ratio": float(f"{t_numpy / t_select:.3g}"),
         "notes": f"exact={exact}: ids, order and scores equal raysal.selection.topk.top_k_indices on the "
                  f"{written.num_rows:,} scores read back ({skipped} skipped); raysal reads the scores' Parquet "
                  "files, numpy has them in memory"},
    ]
