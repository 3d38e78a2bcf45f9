"""What several benchmark groups share: timing, memory sampling, generated images, a fresh
checkpoint, and one raysal scoring pass as a round's score stage runs it.

Heavy imports (Ray, TensorFlow, the raysal modules over them) happen inside the functions that
need them: a group that needs neither (``decode``) runs where only ``raysal.data.images``'
packages are.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import psutil

from raysal.model import keras_env  # noqa: F401  (before TensorFlow)

Row = dict[str, Any]  # one figure: group, name, unit, raysal, baseline, ratio, notes

REPO = Path(__file__).resolve().parent.parent  # the checkout: jobs/ and benchmarks/ live here
CLASSES = [f"c{i}" for i in range(5)]  # the generated pools' classes


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls of ``fn``, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def median_reported(fn: Callable[[], float], repeats: int) -> float:
    """Median of the seconds ``repeats`` calls of ``fn`` report, for a call that times its own
    pass and leaves out what it does before (waiting for the CPUs to settle, clearing a folder)."""
    return statistics.median(fn() for _ in range(repeats))


def mib(n_bytes: float) -> float:
    """``n_bytes`` in MiB, to one decimal."""
    return round(n_bytes / 2**20, 1)


def settle(max_seconds: float = 20.0, busy_percent: float = 20.0) -> None:
    """Wait until the CPUs are nearly idle, or ``max_seconds``.

    After a pass, Ray goes on tearing down its actors and starting fresh idle workers for a few
    seconds; a pass timed straight after would be charged for that work.
    """
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and psutil.cpu_percent(interval=0.5) > busy_percent:
        pass


def ray_workers() -> list[psutil.Process]:
    """This machine's Ray worker processes (``ray::...``)."""
    workers = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if (proc.info["name"] or "").startswith("ray::") or any(
                    "ray::" in part for part in (proc.info["cmdline"] or [])[:1]):
                workers.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return workers


def rss_now() -> tuple[int, int]:
    """Resident memory now: of this process, and of it plus every Ray worker process."""
    driver = psutil.Process().memory_info().rss
    workers = 0
    for proc in ray_workers():
        try:
            workers += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return driver, driver + workers


class PeakMemory:
    """Peak resident memory of this process plus every Ray worker process, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_driver, self.peak_total = interval, 0, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            driver, total = rss_now()
            self.peak_driver = max(self.peak_driver, driver)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def jpeg_photos(n: int, width: int, height: int, seed: int = 0) -> Iterator[bytes]:
    """``n`` JPEGs of smooth random colour fields: photo-like work for a JPEG codec."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for _ in range(n):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
        yield buffer.getvalue()


def write_image_folder(root: str, n: int, width: int, height: int | None = None, seed: int = 0) -> list[str]:
    """``n`` JPEG files of smooth random images (``width`` x ``height``, square by default), in 5
    class folders; their paths."""
    paths = []
    for i, data in enumerate(jpeg_photos(n, width, height or width, seed)):
        path = os.path.join(root, CLASSES[i % 5], f"{i:07d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def write_checkpoint(tmp: str, model_kind: str, input_size: int) -> tuple[Any, str]:
    """A freshly initialised model (seed 0) for the 5 classes, and its checkpoint written under ``tmp``."""
    import tf_keras as keras

    from raysal.config import ModelConfig
    from raysal.model import models

    keras.utils.set_random_seed(0)
    model_cfg = ModelConfig(kind=model_kind, input_size=input_size)
    model = models.build_model(model_cfg, len(CLASSES))
    checkpoint = os.path.join(tmp, "model")
    models.save_checkpoint(model, checkpoint, model_cfg, CLASSES)
    return model, checkpoint


def score_folder_config(root: str, model_kind: str, input_size: int, batch_size: int, rows: str = "") -> Any:
    """The demo config over the image folder ``root`` (its ``rows`` slice), with this model and batch."""
    from raysal.config import load_config

    return load_config("demo", {
        "data.classes": CLASSES, "data.pool.kind": "folder", "data.pool.path": root,
        "data.pool.rows": rows, "model.kind": model_kind, "model.input_size": input_size,
        "score.batch_size": batch_size})


def score_to_parquet(cfg: Any, checkpoint: str, out_dir: str, embeddings: bool = False) -> int:
    """What a round's score stage does: stream the pool through decode and scoring into Parquet
    files (with each image's embedding when ``embeddings``); the pool's size."""
    from raysal.data import sources
    from raysal.data.decode import decode
    from raysal.run.scoring import score, write_scores

    ds, size = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, "")
    write_scores(score(decode(ds, cfg), checkpoint, cfg, embeddings=embeddings), out_dir, size)
    return size


def scoring_seconds(cfg: Any, checkpoint: str, out_dir: str | None = None, embeddings: bool = False) -> float:
    """Wall time of one scoring pass over the configured pool, actor start included, its scores
    written to Parquet files as the score stage writes them: into ``out_dir`` (replaced) when
    given, else a temporary folder. The wait for the CPUs to settle before it is not counted."""
    with tempfile.TemporaryDirectory() as tmp:
        target = out_dir or os.path.join(tmp, "scores")
        shutil.rmtree(target, ignore_errors=True)
        settle()
        start = time.perf_counter()
        score_to_parquet(cfg, checkpoint, target, embeddings)
        return time.perf_counter() - start
