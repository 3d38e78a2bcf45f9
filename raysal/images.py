"""Image bytes to RGB arrays of a fixed size, tolerant of the images found in real pools.

Pure PIL + numpy. Grayscale, RGBA, palette, CMYK and 16-bit images are converted; what cannot
be decoded raises ``UndecodableImage`` with a reason for the skipped-images report.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

# Full-scale value of the integer modes Pillow opens 16-bit images as ("I" holds 16-bit PGM/TIFF).
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


class UndecodableImage(ValueError):
    """An image that cannot be used; ``str(exc)`` is the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _FULL_SCALE or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        # Float images are taken as [0, 1] when they fit in it, else as [0, 255].
        top = _FULL_SCALE.get(img.mode) or (1.0 if values.max(initial=0) <= 1.0 else 255.0)
        img = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # palette transparency must go through RGBA to convert cleanly
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes, size: int) -> NDArray[np.uint8]:
    """Decode ``data`` and resize to ``[size, size, 3]`` uint8 (bilinear, aspect not kept).

    Raises:
        UndecodableImage: empty, truncated, corrupt or non-image data.
    """
    if not data:
        raise UndecodableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size, much faster
            img.load()  # force the full decode here, so truncation is caught here
            if "exif" in img.info:  # the orientation tag lives there; parsing EXIF costs ~35 us
                img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img).resize((size, size), Image.Resampling.BILINEAR)
    except UnidentifiedImageError:
        raise UndecodableImage("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UndecodableImage(f"corrupt or truncated: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)  # [size, size, 3]
