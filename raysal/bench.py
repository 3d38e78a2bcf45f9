"""Benchmark bodies for ``jobs/bench.py``: each returns rows of (figure, baseline, ratio).

Baselines are what a user would otherwise write: the article's single-process tf.data +
``model.predict`` pipeline for scoring, ``Dataset.sort().limit(k)`` and in-memory numpy for
top-k. Each is measured in the same run, on the same data, as raysal.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import psutil
import pyarrow as pa

from raysal import keras_env  # noqa: F401  (before TensorFlow)

Row = dict[str, Any]


def machine() -> str:
    return f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


class PeakMemory:
    """Peak resident memory of this process plus every Ray worker process, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_driver, self.peak_total = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def _ray_workers() -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if (proc.info["name"] or "").startswith("ray::") or any(
                        "ray::" in part for part in (proc.info["cmdline"] or [])[:1]):
                    out.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            driver = me.memory_info().rss
            workers = 0
            for proc in self._ray_workers():
                try:
                    workers += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_driver = max(self.peak_driver, driver)
            self.peak_total = max(self.peak_total, driver + workers)
            self._stop.wait(self.interval)

    @contextmanager
    def measure(self) -> Iterator["PeakMemory"]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


# --- scoring ---------------------------------------------------------------------------------

def write_image_folder(root: str, n: int, side: int, seed: int = 0) -> list[str]:
    """``n`` JPEG files of smooth random images (``side`` x ``side``), in 5 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
        path = os.path.join(root, f"c{i % 5}", f"{i:07d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        paths.append(path)
    return paths


def _tf_data_scores(model: Any, paths: list[str], size: int, batch_size: int) -> int:
    """The article's way, made fast: tf.data read/decode/resize with parallel map + prefetch."""
    import tensorflow as tf

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.cast(tf.image.resize(image, (size, size)), tf.uint8)

    ds = (tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return len(model.predict(ds, verbose=0))


def scoring_case(name: str, model_kind: str, input_size: int, n_images: int, source_side: int,
                 repeats: int, batch_size: int = 64) -> list[Row]:
    import tf_keras as keras

    from raysal import models, pipeline, sources
    from raysal.config import ModelConfig, load_config
    from raysal.images import decode_image

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_image_folder(os.path.join(tmp, "images"), n_images, source_side)
        keras.utils.set_random_seed(0)
        model_cfg = ModelConfig(kind=model_kind, input_size=input_size)
        model = models.build_model(model_cfg, 5)
        checkpoint = os.path.join(tmp, "model")
        models.save_checkpoint(model, checkpoint, model_cfg, [f"c{i}" for i in range(5)])
        cfg = load_config("demo", {
            "data.classes": [f"c{i}" for i in range(5)], "data.pool.kind": "folder",
            "data.pool.path": os.path.join(tmp, "images"), "data.pool.rows": "", "model.kind": model_kind,
            "model.input_size": input_size, "score.batch_size": batch_size})

        images = np.stack([decode_image(open(p, "rb").read(), input_size) for p in paths])
        model.predict(images[:batch_size], verbose=0)  # build the predict function before timing
        t_model, _ = median_seconds(lambda: model.predict(images, batch_size=batch_size, verbose=0), repeats)
        t_tfdata, count = median_seconds(lambda: _tf_data_scores(model, paths, input_size, batch_size), repeats)
        assert count == n_images

        def raysal_scores() -> int:
            ds = sources.read_source(cfg.data.pool, cfg.data.classes, tmp)
            return pipeline.score(pipeline.decode(ds, cfg), checkpoint, cfg).count()

        t_raysal, count = median_seconds(raysal_scores, repeats)
        assert count == n_images
    rate = lambda seconds: round(n_images / seconds, 1)  # noqa: E731
    return [
        {"group": "scoring", "name": f"{name}: raysal vs tf.data + predict", "unit": "images/s",
         "raysal": rate(t_raysal), "baseline": rate(t_tfdata), "ratio": round(t_tfdata / t_raysal, 3),
         "notes": f"{n_images} JPEGs {source_side}px, end to end incl. actor start"},
        {"group": "scoring", "name": f"{name}: raysal vs model.predict on decoded arrays", "unit": "images/s",
         "raysal": rate(t_raysal), "baseline": rate(t_model), "ratio": round(t_model / t_raysal, 3),
         "notes": "baseline is model-only (no read/decode)"},
    ]


def scoring_benchmarks(quick: bool, repeats: int) -> list[Row]:
    cases = [("small CNN 64x64", "small_cnn", 64, 2_000 if quick else 10_000, 96)]
    if not quick:
        cases += [("InceptionV3 75x75", "inception_v3", 75, 1_000, 96),
                  ("InceptionV3 299x299", "inception_v3", 299, 64, 320)]
    rows = []
    for case in cases:
        rows += scoring_case(*case, repeats=repeats)
    return rows


# --- top-k -----------------------------------------------------------------------------------

def topk_benchmarks(quick: bool, repeats: int) -> list[Row]:
    import ray.data

    from raysal.pipeline import select_top_k
    from raysal.topk import top_k_indices

    rows = []
    for n in ([1_000_000] if quick else [1_000_000, 10_000_000]):
        rng = np.random.default_rng(0)
        image_ids = rng.permutation(n).astype(np.int64)
        scores = np.round(rng.random(n), 4)  # ties, as real criteria produce on confident rows
        table = pa.table({"image_id": image_ids, "uri": pa.array(np.char.mod("img/%d.jpg", image_ids)),
                          "score": scores, "predicted": np.zeros(n, np.int64)})
        ds = ray.data.from_arrow([table.slice(i, 250_000) for i in range(0, n, 250_000)]).materialize()
        for k in (500, 50_000):
            t_numpy, want = median_seconds(lambda: top_k_indices(scores, image_ids, k), repeats)
            with PeakMemory().measure() as mem:
                t_raysal, got = median_seconds(lambda: select_top_k(ds, k), repeats)
            t_sort, by_sort = median_seconds(
                lambda: ds.sort(["score", "image_id"], descending=[True, False]).limit(k).take_all(), repeats)
            exact = bool(np.array_equal(got["image_id"], image_ids[want]))
            sort_exact = [r["image_id"] for r in by_sort] == image_ids[want].tolist()
            common = {"group": "topk", "unit": "s", "raysal": round(t_raysal, 3)}
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: raysal vs sort().limit()",
                         "baseline": round(t_sort, 3), "ratio": round(t_sort / t_raysal, 2),
                         "notes": f"exact={exact}, sort exact={sort_exact}, "
                                  f"peak driver+workers {mem.peak_total / 2**20:.0f} MiB"})
            rows.append({**common, "name": f"top-k n={n:,} k={k:,}: raysal vs numpy in memory",
                         "baseline": round(t_numpy, 3), "ratio": round(t_numpy / t_raysal, 3),
                         "notes": f"exact={exact}"})
    return rows


# --- report ----------------------------------------------------------------------------------

def write_report(report: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def markdown_table(report: dict[str, Any]) -> str:
    """Ratio > 1 means raysal is faster than the baseline."""
    lines = [f"Machine: {report['machine']}; {report['date']}; repeats {report['repeats']}"
             f"{' (quick)' if report['quick'] else ''}", "",
             "| benchmark | unit | raysal | baseline | ratio (>1: raysal faster) | notes |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['unit']} | {r['raysal']} | {r['baseline']} | {r['ratio']} | {r['notes']} |")
    return "\n".join(lines)
