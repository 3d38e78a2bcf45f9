"""decode: raysal's JPEG decoder against plain PIL, on one core and on every core; and the peak
memory of decoding one large 16-bit image, against the image's own size.

Needs neither Ray nor TensorFlow: it runs where only ``raysal.data.images``' packages are.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import tempfile
from functools import partial

import numpy as np
import psutil

from benchmarks.common import Row, jpeg_photos, median_seconds, mib

_IMAGES: list[bytes] = []  # the images a decode benchmark process works on


def pil_decode(data: bytes, size: int) -> np.ndarray:
    """The plain PIL way (raysal's own before its fast path): open, reduced-scale draft, resize."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size, size))
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def float64_decode(data: bytes, size: int) -> np.ndarray:
    """raysal's own 16-bit conversion before it went band by band: the whole image as float64,
    scaled, clipped and rounded, made RGB, then resized."""
    from PIL import Image

    from raysal.data.images import _resize

    img = Image.open(io.BytesIO(data))
    img.load()
    values = np.asarray(img, dtype=np.float64)  # [h, w]
    img = Image.fromarray(np.clip(values * (255.0 / 65535.0), 0, 255).round().astype(np.uint8))
    return _resize(np.asarray(img.convert("RGB"), dtype=np.uint8), size)


def grey16_png(width: int, height: int) -> bytes:
    """A 16-bit grey PNG of ``width`` x ``height``: a diagonal ramp over the whole range, which
    compresses well (the encoded file adds little to the memory measured)."""
    from PIL import Image

    ramp = (np.arange(width, dtype=np.uint32)[None, :] * 7 + np.arange(height, dtype=np.uint32)[:, None] * 3)
    buffer = io.BytesIO()
    Image.fromarray((ramp % 65536).astype(np.uint16)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _peak_rss() -> int:
    """This process's peak resident memory since the last ``_reset_peak_rss`` (Linux: VmHWM)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def _reset_peak_rss() -> None:
    """Set the peak to the resident memory now. ru_maxrss cannot be reset, and a spawned process
    starts with its parent's, kept across exec; VmHWM can be."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _peak_bytes_of_one_decode(path: str, decoder: str, size: int) -> int:
    """In a fresh process: the peak resident memory of decoding the file at ``path`` once, above
    what the process held just before (the file's bytes read, the decoder warmed up on a small image)."""
    from raysal.data.images import decode_image

    decode_one = decode_image if decoder == "raysal" else float64_decode
    decode_one(grey16_png(16, 16), size)  # imports and first-call set-up, outside the figure
    with open(path, "rb") as f:
        data = f.read()
    _reset_peak_rss()
    before = psutil.Process().memory_info().rss
    decode_one(data, size)
    return _peak_rss() - before


def decode_peak_bytes(data: bytes, decoder: str, size: int) -> int:
    """Peak memory of decoding ``data`` to ``size`` once with raysal's decoder (``"raysal"``) or the
    float64 conversion (``"float64"``), above what the process held before: each in a process of
    its own, so that no earlier peak hides this one."""
    with tempfile.TemporaryDirectory(prefix="raysal-bench-") as tmp:
        path = os.path.join(tmp, "image.png")
        with open(path, "wb") as f:
            f.write(data)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_peak_bytes_of_one_decode, (path, decoder, size))


def grey16_memory_rows(side: int, size: int = 299) -> list[Row]:
    """Peak memory of decoding one ``side`` x ``side`` 16-bit grey PNG: raysal against the image's
    own size (``side * side * 2`` bytes) and against the float64 conversion it replaced."""
    data = grey16_png(side, side)
    own = side * side * 2
    peak = {decoder: decode_peak_bytes(data, decoder, size) for decoder in ("raysal", "float64")}
    case = f"decode {side}x{side} 16-bit PNG to {size}x{size}: peak memory above the process's before"
    note = f"one image of {mib(own)} MiB decoded ({mib(len(data))} MiB as PNG), in a fresh process; peak RSS (VmHWM)"
    return [
        {"group": "decode", "name": f"{case}, raysal vs the image's own size", "unit": "MiB",
         "raysal": mib(peak["raysal"]), "baseline": mib(own), "ratio": round(peak["raysal"] / own, 3),
         "notes": f"{note}; target <= 2"},
        {"group": "decode", "name": f"{case}, raysal vs the whole image as float64 (raysal before)", "unit": "MiB",
         "raysal": mib(peak["raysal"]), "baseline": mib(peak["float64"]),
         "ratio": round(peak["raysal"] / peak["float64"], 3),
         "notes": f"{note}; float64: {peak['float64'] / own:.2f}x the image's own size"},
    ]


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
    """raysal's decoder against PIL on one core, and on every core (one process each); then the
    peak memory of one large 16-bit image (8000x8000, 4000x4000 when ``quick``).

    Scoring on a GPU is bounded by decoding: images/s per core here says how many CPU cores a
    GPU's scoring actor needs to be fed. A pool's largest image bounds a decoding worker's memory.
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
    return rows + grey16_memory_rows(4000 if quick else 8000)
