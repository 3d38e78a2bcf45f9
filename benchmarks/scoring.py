"""scoring: raysal's score stage over a folder of JPEGs against the article's single-process
tf.data + ``model.predict`` pipeline, and ``predict`` alone on decoded arrays."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    Row,
    median_reported,
    median_seconds,
    score_folder_config,
    scoring_seconds,
    write_checkpoint,
    write_image_folder,
)


def tf_data_scores(model: Any, paths: list[str], size: int, batch_size: int) -> int:
    """The article's way, made fast: tf.data read/decode/resize with parallel map + prefetch; the
    number of images scored."""
    import tensorflow as tf

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.cast(tf.image.resize(image, (size, size)), tf.uint8)

    ds = (tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return len(model.predict(ds, verbose=0))


def single_process_start_seconds(checkpoint: str, input_size: int, batch_size: int) -> float:
    """What a single-process scorer pays before its first batch: interpreter, TF import, model load."""
    code = ("from raysal.model import keras_env; keras_env.use_legacy_keras()\n"
            "import numpy as np\nfrom raysal.model import models\n"
            f"model = models.load_checkpoint({checkpoint!r})[0]\n"
            f"model.predict(np.zeros(({batch_size}, {input_size}, {input_size}, 3), np.uint8), verbose=0)\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def scoring_case(name: str, model_kind: str, input_size: int, n_images: int, source_side: int,
                 repeats: int, batch_size: int = 64) -> list[Row]:
    """raysal's scoring of ``n_images`` files against tf.data + predict, and predict alone.

    raysal is timed end to end on all the images, on the first half of them and on one batch.
    The steady-state rate, once actors have started and loaded the model, is estimated twice:
    the second half's images over the time they added (every per-pass cost cancels out), and
    all images but one batch over the time beyond the one-batch pass (the fixed cost). The
    lower estimate is reported, with both in the notes. The baselines run in this process
    with the model already loaded, so they pay no fixed cost; what a fresh single process pays
    before its first batch is measured beside raysal's.
    """
    from raysal.data.images import decode_image

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        paths = write_image_folder(folder, n_images, source_side)
        model, checkpoint = write_checkpoint(tmp, model_kind, input_size)
        images = np.stack([decode_image(Path(path).read_bytes(), input_size) for path in paths])
        model.predict(images[:batch_size], verbose=0)  # build the predict function before timing
        t_model, _ = median_seconds(partial(model.predict, images, batch_size=batch_size, verbose=0), repeats)
        t_tfdata, count = median_seconds(partial(tf_data_scores, model, paths, input_size, batch_size), repeats)
        assert count == n_images
        t_start = median_reported(partial(single_process_start_seconds, checkpoint, input_size, batch_size), repeats)
        half = n_images // 2
        cfg, half_cfg, batch_cfg = (score_folder_config(folder, model_kind, input_size, batch_size, rows)
                                    for rows in ("", f"0:{half}", f"0:{batch_size}"))
        scoring_seconds(batch_cfg, checkpoint)  # warm-up: Ray's worker pool, file caches
        t_fixed = median_reported(partial(scoring_seconds, batch_cfg, checkpoint), repeats)
        t_half = median_reported(partial(scoring_seconds, half_cfg, checkpoint), repeats)
        t_raysal = median_reported(partial(scoring_seconds, cfg, checkpoint), repeats)
    e2e = n_images / t_raysal
    by_half = (n_images - half) / (t_raysal - t_half) if t_raysal > t_half else float("nan")
    by_fixed = (n_images - batch_size) / (t_raysal - t_fixed) if t_raysal > t_fixed else float("nan")
    steady = min(by_half, by_fixed)
    tfdata, model_only = n_images / t_tfdata, n_images / t_model
    return [
        {"group": "scoring", "name": f"{name}: raysal end to end vs tf.data + predict", "unit": "images/s",
         "raysal": round(e2e, 1), "baseline": round(tfdata, 1), "ratio": round(e2e / tfdata, 3),
         "notes": f"{n_images} JPEGs of {source_side}px; raysal includes its fixed cost, the baseline none"},
        {"group": "scoring", "name": f"{name}: raysal steady state vs tf.data + predict", "unit": "images/s",
         "raysal": round(steady, 1), "baseline": round(tfdata, 1), "ratio": round(steady / tfdata, 3),
         "notes": f"raysal: the lower of {by_half:.1f} (second half / its added time) and {by_fixed:.1f} "
                  "((all - one batch) / (time - one-batch time)); target >= 0.8"},
        {"group": "scoring", "name": f"{name}: raysal steady state vs predict on decoded arrays", "unit": "images/s",
         "raysal": round(steady, 1), "baseline": round(model_only, 1), "ratio": round(steady / model_only, 3),
         "notes": "baseline is the model alone: no read, no decode"},
        {"group": "scoring", "name": f"{name}: fixed cost, raysal one-batch pass vs fresh single process",
         "unit": "s", "raysal": round(t_fixed, 2), "baseline": round(t_start, 2), "ratio": round(t_start / t_fixed, 3),
         "notes": "raysal: actor start, TF import, model load, trace, writing its scores; baseline: interpreter, "
                  "TF import, model load, first predict"},
    ]


def run(quick: bool, repeats: int) -> list[Row]:
    """The small CNN on 64x64 images; without ``quick``, InceptionV3 at 75x75 and at 299x299 too."""
    cases = [("small CNN 64x64", "small_cnn", 64, 5_000 if quick else 20_000, 96)]
    if not quick:
        cases += [("InceptionV3 75x75", "inception_v3", 75, 2_000, 96),
                  ("InceptionV3 299x299", "inception_v3", 299, 128, 320)]
    rows = []
    for case in cases:
        rows += scoring_case(*case, repeats=repeats)
    return rows
