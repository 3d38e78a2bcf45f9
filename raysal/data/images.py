"""Image bytes to RGB arrays of a fixed size, tolerant of the images found in real pools.

Plain JPEGs, the bulk of any real pool, take a fast path: libjpeg-turbo through ``simplejpeg``,
decoding at a reduced DCT scale when the image is at least twice the target size. Everything
else, and any JPEG the fast path refuses, goes through PIL, which converts grayscale, RGBA,
palette, CMYK, 16-bit and EXIF-rotated images and gives the reason when an image is bad
(``UndecodableImage``). Both paths resize with OpenCV, so an image decodes the same way in
every stage of a round.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from raysal.errors import UndecodableImage  # noqa: F401  (raised here; importable from here too)

# Full-scale value of the integer modes Pillow opens 16-bit images as ("I" holds 16-bit PGM/TIFF).
_FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}
GREY_BAND_PIXELS = 1 << 18  # pixels of a 16-bit or float image converted to 8 bits at once: 2 MiB as float64
_EXIF_ORIENTATION = 0x0112
_JPEG_MAGIC = b"\xff\xd8\xff"  # start of image, then the first marker
_JPEG_APP1, _JPEG_START_OF_SCAN, _JPEG_END = 0xE1, 0xDA, 0xD9
# Images over this many pixels are refused as too large (decompression bombs): PIL's own default,
# checked here from the header before any pixel is decoded. PIL's check warns below twice this
# limit, and only a process-wide warnings filter turns that into an error, which threads that
# decode at once (score.decode_threads) would race on: raysal checks itself, and turns PIL's off.
MAX_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = None


def _grey8(img: Image.Image) -> NDArray[np.uint8]:
    """A one-channel image of 16- or 32-bit values (modes in ``_FULL_SCALE``, and "F") as 8-bit
    grey ``[h, w]``, converted a band of ``GREY_BAND_PIXELS`` at a time.

    The whole image as float64 would take 4x (an "F" image 2x) its own size, and the arithmetic
    on it as much again: an image at ``MAX_PIXELS`` would take gigabytes. Band by band, the
    conversion holds the image, its 8-bit copy (half a 16-bit image's size) and one band.
    Integer values are scaled by integer arithmetic: round(v * 255 / 65535) is (v + 128) // 257
    exactly (no v lies halfway), values outside [0, 65535] ("I" holds 32 bits) clip to black or white.
    Float images are taken as [0, 1] when they fit in it, else as [0, 255].
    """
    width, height = img.size
    rows = max(1, GREY_BAND_PIXELS // max(width, 1))
    bands = [(top, min(height, top + rows)) for top in range(0, height, rows)]

    def band(top: int, bottom: int) -> NDArray[np.generic]:
        return np.asarray(img.crop((0, top, width, bottom)))  # [rows, w]: a copy of these rows alone

    grey = np.empty((height, width), np.uint8)
    if img.mode in _FULL_SCALE:
        for top, bottom in bands:
            values = band(top, bottom).astype(np.int32)  # [rows, w]; worked on in place
            np.clip(values, 0, _FULL_SCALE[img.mode], out=values)
            values += 128
            values //= 257
            grey[top:bottom] = values
        return grey
    # NaN is not <= 1: an image with NaNs is taken as [0, 255], as a whole-image max would take it.
    fits = all(bool(band(top, bottom).max(initial=0) <= 1.0) for top, bottom in bands)
    scale = 255.0 if fits else 1.0
    for top, bottom in bands:
        grey[top:bottom] = np.clip(band(top, bottom).astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    return grey


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # palette transparency must go through RGBA to convert cleanly
    return img if img.mode == "RGB" else img.convert("RGB")


def _upright(img: Image.Image) -> bool:
    """True when no EXIF orientation tag asks for a rotation or flip (parsing EXIF costs ~35 us)."""
    return "exif" not in img.info or img.getexif().get(_EXIF_ORIENTATION, 1) == 1


def _jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG (1 when it has none), or None when its headers look wrong.

    Walks the marker segments up to the image data; only an EXIF segment, when there is one,
    is parsed (by PIL). Cheaper than opening the image with PIL, which parses every table.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (_JPEG_START_OF_SCAN, _JPEG_END):
            return 1
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == _JPEG_APP1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            exif = Image.Exif()
            try:
                exif.load(data[pos + 4:pos + 2 + length])
            except Exception:  # malformed EXIF: PIL's own path decides what to do with the image
                return None
            return exif.get(_EXIF_ORIENTATION, 1)
        pos += 2 + length
    return None


def _shrinks(height: int, width: int, size: int) -> bool:
    """Shrinking by 2x or more: JPEGs then decode at a reduced DCT scale, resizing averages areas."""
    return min(height, width) >= 2 * size


def _fast_jpeg(data: bytes, size: int) -> NDArray[np.uint8] | None:
    """An upright RGB or grayscale JPEG decoded by libjpeg-turbo; None leaves the image to PIL.

    ``strict`` turns libjpeg's warnings (truncated or damaged data) into errors, so a bad JPEG
    falls back to PIL and is reported with PIL's reason rather than decoded half grey.
    """
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if (colorspace not in ("YCbCr", "Gray", "RGB") or height * width > MAX_PIXELS
            or _jpeg_orientation(data) != 1):
        return None  # CMYK, too large (PIL gives the reason) or rotated
    shrink = _shrinks(height, width, size)  # a reduced-scale decode is only fast at 1/2 and below
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_height=size if shrink else 0,
                                      min_width=size if shrink else 0, min_factor=2 if shrink else 1)
    except ValueError:
        return None


def _resize(rgb: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """``[h, w, 3]`` to ``[size, size, 3]`` (``[h, w]`` to ``[size, size]``: OpenCV resizes each
    channel alone, so grey resized then copied to three channels is grey copied then resized):
    area averaging when shrinking 2x or more, else bilinear."""
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(rgb)
    area = _shrinks(height, width, size)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def decode_image(data: bytes, size: int) -> NDArray[np.uint8]:
    """Decode ``data`` and resize to ``[size, size, 3]`` uint8 (aspect not kept).

    Raises:
        UndecodableImage: empty, truncated, corrupt, too large or non-image data.
    """
    if not data:
        raise UndecodableImage("empty file")
    try:
        rgb = _fast_jpeg(data, size) if data.startswith(_JPEG_MAGIC) else None
        if rgb is None:
            img = Image.open(io.BytesIO(data))  # the header only
            if img.width * img.height > MAX_PIXELS:
                raise UndecodableImage(f"too large: {img.width}x{img.height} = {img.width * img.height} pixels, "
                                       f"over the {MAX_PIXELS} of a possible decompression bomb")
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size, much faster
            img.load()  # force the full decode here, so truncation is caught here
            if not _upright(img):
                img = ImageOps.exif_transpose(img)
            if img.mode in _FULL_SCALE or img.mode == "F":  # grey of 16 or 32 bits: kept one channel
                rgb = _grey8(img)  # [h, w], to three channels once resized
            else:
                rgb = np.asarray(_to_rgb(img), dtype=np.uint8)  # [h, w, 3]
    except UndecodableImage:
        raise
    except UnidentifiedImageError:
        raise UndecodableImage("not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UndecodableImage(f"corrupt or truncated: {exc}") from None
    resized = _resize(rgb, size)  # [size, size, 3], or [size, size] for grey
    return resized if resized.ndim == 3 else np.repeat(resized[:, :, None], 3, axis=2)  # [size, size, 3]
