"""decode: raysal's JPEG decoder against plain PIL, on one core and on every core.

Needs neither Ray nor TensorFlow: it runs where only ``raysal.data.images``' packages are.
"""

from __future__ import annotations

import io
import multiprocessing
from functools import partial

import numpy as np
import psutil

from benchmarks.common import Row, jpeg_photos, median_seconds

_IMAGES: list[bytes] = []  # the images a decode benchmark process works on


def pil_decode(data: bytes, size: int) -> np.ndarray:
    """The plain PIL way (raysal's own before its fast path): open, reduced-scale draft, resize."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size, size))
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def set_images(images: list[bytes]) -> None:
    """Give this process (the bench's, or a pool worker) the images to decode."""
    global _IMAGES
    _IMAGES = images


def decode_all(decoder: str, size: int) -> int:
    """Decode every image in ``_IMAGES`` with raysal's decoder (``"raysal"``) or with PIL; the count."""
    from raysal.data.images import decode_image

    decode_one = decode_image if decoder == "raysal" else pil_decode
    for data in _IMAGES:
        decode_one(data, size)
    return len(_IMAGES)


def run(quick: bool, repeats: int) -> list[Row]:
    """raysal's decoder against PIL on one core, and on every core (one process each).

    Scoring on a GPU is bounded by decoding: images/s per core here says how many CPU cores a
    GPU's scoring actor needs to be fed.
    """
    cores = psutil.cpu_count() or 1
    rows = []
    for width, height, size in ((96, 96, 64), (500, 375, 75), (500, 375, 299)):
        images = list(jpeg_photos(100 if quick else 400, width, height))
        set_images(images)
        one = {}
        for decoder in ("raysal", "pil"):
            decode_all(decoder, size)  # warm-up
            seconds, count = median_seconds(partial(decode_all, decoder, size), repeats)
            one[decoder] = count / seconds
        with multiprocessing.get_context("spawn").Pool(cores, initializer=set_images, initargs=(images,)) as pool:
            work = [("raysal", size)] * cores
            pool.starmap(decode_all, work, chunksize=1)  # start every process and warm it up
            seconds, counts = median_seconds(partial(pool.starmap, decode_all, work * 2, chunksize=1), repeats)
        every = sum(counts) / seconds
        case = f"decode {width}x{height} JPEG to {size}x{size}"
        rows += [
            {"group": "decode", "name": f"{case}: raysal vs PIL, one core", "unit": "images/s",
             "raysal": round(one["raysal"], 1), "baseline": round(one["pil"], 1),
             "ratio": round(one["raysal"] / one["pil"], 3), "notes": "libjpeg-turbo + OpenCV vs PIL draft + resize"},
            {"group": "decode", "name": f"{case}: raysal on {cores} cores vs one core", "unit": "images/s",
             "raysal": round(every, 1), "baseline": round(one["raysal"], 1), "ratio": round(every / one["raysal"], 3),
             "notes": f"{cores} processes"},
        ]
    return rows
