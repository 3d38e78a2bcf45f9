"""trainset: a labelled set larger than the object store, trained on from raysal's Parquet cache,
against the materialised way on a set that fits, and the alternatives beside it."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks.common import CLASSES, REPO, Row, settle, write_image_folder

STORE_MIB = 100  # the object store the child's Ray gets (Ray's minimum is 75 MiB)
SIDE = 128  # 49,152 bytes an image
PHOTO = (500, 375)  # JPEGs of photo size (tf_flowers' are ~500x333): decoding is real work


def train_child(folder: str, work: str, n_fit: int, n_large: int, epochs: int, out_path: str) -> int:
    """Train the same tiny model four ways in a Ray with a small object store; per-epoch seconds to ``out_path``."""
    import ray
    import ray.data
    import tf_keras as keras

    from raysal.config import load_config
    from raysal.data import sources
    from raysal.data.decode import decode, labelled_images
    from raysal.model import keras_env, train, trainset

    ray.init(address="local", object_store_memory=STORE_MIB * 2**20, include_dashboard=False,
             runtime_env={"env_vars": keras_env.worker_env()}, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    @ray.remote(num_cpus=0)
    class EpochClock:
        """Stands in for a progress.Board: the time each epoch's line arrives."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def say(self, line: str) -> None:
            self.times.append(time.monotonic())

        def seconds(self) -> list[float]:
            return self.times

    # One conv layer: the data path, which is what differs, is most of an epoch's time.
    keras.utils.set_random_seed(0)
    model_path = os.path.join(work, "tiny.h5")
    tiny = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="softmax")])
    tiny.save(model_path)
    overrides = {"data.classes": CLASSES, "data.pool.kind": "folder", "data.pool.path": folder,
                 "data.pool.rows": "", "model.kind": "keras", "model.path": model_path, "model.use": "classifier",
                 "model.input_size": SIDE, "train.num_workers": 1, "train.batch_size": 32,
                 "train.head_epochs": 0, "train.finetune_epochs": epochs, "train.finetune_learning_rate": 0.01,
                 "train.in_memory_mb": 0}  # every epoch reads the set, as a set of many GB does

    def decoded(n: int) -> Any:
        cfg = load_config("demo", {**overrides, "data.pool.rows": f"0:{n}"})
        return decode(sources.read_source(cfg.data.pool, cfg.data.classes, ""), cfg).map_batches(
            labelled_images, batch_format="numpy")

    val = decoded(200).materialize()

    def seconds_per_epoch(name: str, dataset: Any, data: str) -> list[float]:
        cfg = load_config("demo", {**overrides, "train.data": data})
        clock = EpochClock.remote()
        settle()
        train.train_model(cfg, dataset, val, output_dir=os.path.join(work, name), storage_path=os.path.join(work, "rt"),
                          run_name=name, board=clock)
        ends = ray.get(clock.seconds.remote())
        return np.diff(ends).round(2).tolist()  # epoch 1 (tracing, first reads) has no start time: left out

    def spill_lines() -> str:
        from ray._private.internal_api import memory_summary

        summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)  # this Ray's:
        return "; ".join(line for line in summary.splitlines()  # the bench's parent may run another
                         if line.startswith(("Spilled", "Restored")))

    result: dict[str, Any] = {"store_bytes": ray.cluster_resources()["object_store_memory"]}
    for name, n, data in (("fit", n_fit, "auto"), ("large", n_large, "auto"), ("spilled", n_large, "memory")):
        settle()
        start = time.perf_counter()
        cfg = load_config("demo", {**overrides, "train.data": data})
        with trainset.prepare_train_set(decoded(n), n, cfg, os.path.join(work, f"cache-{name}")) as train_set:
            result[f"{name}_prepare_s"] = time.perf_counter() - start
            result[f"{name}_kept"], result[f"{name}_count"] = train_set.kept, train_set.count
            result[f"{name}_epoch_s"] = seconds_per_epoch(name, train_set.dataset, data)
        del train_set  # a materialised set leaves the object store before the next one is made
        if name == "large":  # the lazy dataset itself: Ray Train decodes it again every epoch
            result["stream_epoch_s"] = seconds_per_epoch("stream", decoded(n_large), "auto")
            result["spill_before"] = spill_lines()
    result["spill_after"] = spill_lines()
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


def per_thousand(seconds: float, n: int) -> float:
    """``seconds`` for ``n`` images as seconds per 1,000 images."""
    return round(1000 * seconds / n, 3)


def run(quick: bool, repeats: int) -> list[Row]:
    """Time per epoch of a labelled set larger than the object store, read back from raysal's
    Parquet cache, against the materialised way on a set that fits; with the alternatives
    measured beside: decoding again every epoch, and materialising anyway (Ray spills to disk).

    Runs in a child process with a Ray of its own whose object store is ``STORE_MIB``.
    The same tiny model, image size and one Ray Train worker every time; each figure is the
    median of the epochs after the first (``max(2, repeats)`` of them), per 1,000 images.
    """
    image_bytes = SIDE**2 * 3
    n_fit = int(STORE_MIB * 2**20 * 0.4) // image_bytes  # 40% of the store: kept in memory
    n_large = int(STORE_MIB * 2**20 * (1.2 if quick else 2.0)) // image_bytes
    epochs = 1 + max(2, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        write_image_folder(folder, n_large, *PHOTO)
        out = os.path.join(tmp, "trainset.json")
        code = (f"import sys; from benchmarks.trainset import train_child; "
                f"sys.exit(train_child({folder!r}, {tmp!r}, {n_fit}, {n_large}, {epochs}, {out!r}))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"trainset benchmark child failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        with open(out) as f:
            res = json.load(f)
    store_mib = res["store_bytes"] / 2**20
    large_mib = n_large * image_bytes / 2**20
    assert res["fit_kept"] == "memory" and res["large_kept"] == "cache", res
    assert res["fit_count"] == n_fit and res["large_count"] == res["spilled_count"] == n_large, res
    fit = per_thousand(statistics.median(res["fit_epoch_s"]), n_fit)
    case = (f"{n_large:,} images ({large_mib:.0f} MiB decoded, {large_mib / store_mib:.1f}x the {store_mib:.0f} MiB "
            f"object store) vs {n_fit:,} that fit, materialised")
    rows = []
    spill = f"; object store before: {res['spill_before'] or 'no spilling'}; after: {res['spill_after']}"
    for key, way in (("large", "read back from the Parquet cache (raysal)"),
                     ("stream", "decoded again each epoch (alternative)"),
                     ("spilled", "materialised anyway, Ray spilling to local disk (alternative)")):
        figure = per_thousand(statistics.median(res[f"{key}_epoch_s"]), n_large)
        rows.append({"group": "trainset", "name": f"epoch, {way}: {case}", "unit": "s per 1,000 images",
                     "raysal": figure, "baseline": fit, "ratio": round(fit / figure, 3),
                     "notes": f"{SIDE}x{SIDE} from {PHOTO[0]}x{PHOTO[1]} JPEGs, "
                              f"a one-conv-layer model, 1 worker; median epoch of {res[f'{key}_epoch_s']} s, "
                              f"materialised {res['fit_epoch_s']} s" + (spill if key == "spilled" else "")})
    prepare_cache = per_thousand(res["large_prepare_s"], n_large)
    prepare_fit = per_thousand(res["fit_prepare_s"], n_fit)
    rows.append({"group": "trainset", "name": f"decode once and keep: Parquet cache of {n_large:,} images vs "
                 f"materialising {n_fit:,}", "unit": "s per 1,000 images", "raysal": prepare_cache,
                 "baseline": prepare_fit, "ratio": round(prepare_fit / prepare_cache, 3),
                 "notes": "once per training, before its first epoch"})
    return rows
