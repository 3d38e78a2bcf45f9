"""Decoding a source's images for the model: each row read and decoded, or marked with why not.

``decode_batch`` is plain numpy (what a Ray Data task runs); ``decode`` adds it to a lazy
dataset. Importing this module loads neither Ray nor TensorFlow.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from raysal import storage
from raysal.data.images import UndecodableImage, decode_image
from raysal.model import keras_env

if TYPE_CHECKING:
    import ray.data

    from raysal.config import Config


def _decode_one(data: bytes | None, uri: str, size: int) -> tuple[NDArray[np.uint8] | None, str]:
    try:
        return decode_image(data if data is not None else storage.read_bytes(uri), size), ""
    except UndecodableImage as exc:
        return None, str(exc)
    except (OSError, ValueError, NotImplementedError) as exc:  # missing file, permission, network, a uri no
        return None, f"unreadable: {exc}"  # filesystem takes (ArrowInvalid): the image is unreadable, not the job


def decode_batch(batch: dict[str, NDArray], size: int, threads: int = 1) -> dict[str, NDArray]:
    """Read and decode each image; a failure becomes a non-empty ``error`` and a blank image.

    Rows are never dropped here, so every image ends up either scored or in the skipped report.
    libjpeg-turbo and OpenCV release the GIL, so ``threads`` > 1 decodes large images on more
    cores; thread t takes rows t, t + threads, ...
    """
    n = len(batch["image_id"])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)  # [n, s, s, 3]
    errors = np.full(n, "", dtype=object)
    inline, uris = batch.get("image_bytes"), batch["uri"]

    def decode_rows(rows: range) -> None:
        for i in rows:
            image, errors[i] = _decode_one(inline[i] if inline is not None else None, uris[i], size)
            if image is not None:
                images[i] = image

    shares = [range(start, n, threads) for start in range(min(threads, n))]
    if len(shares) <= 1:
        decode_rows(range(n))
    else:
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            list(pool.map(decode_rows, shares))  # list(): re-raise any error from a thread
    return {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"],
            "image": images, "error": errors}


def decode(ds: ray.data.Dataset, cfg: Config) -> ray.data.Dataset:
    """``ds`` with each image decoded to ``model.input_size`` (``decode_batch``, in CPU tasks)."""
    return ds.map_batches(decode_batch, fn_kwargs={"size": cfg.model.input_size, "threads": cfg.score.decode_threads},
                          batch_size=cfg.score.batch_size,
                          batch_format="numpy", num_cpus=cfg.score.decode_cpus,
                          runtime_env={"env_vars": keras_env.worker_env()})




def labelled_images(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    """The decoded images that have a label, as (image, label): what training reads."""
    keep = (batch["error"] == "") & ~np.isnan(batch["label"].astype(np.float64))
    return {"image": batch["image"][keep], "label": batch["label"][keep].astype(np.int64)}
