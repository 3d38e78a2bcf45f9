"""Tests for raysal.data.images.decode_image: the image kinds found in real pools, and clean refusals."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageOps

from raysal.data import images
from raysal.data.images import UndecodableImage, decode_image


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def _palette_image() -> Image.Image:
    img = Image.new("P", (24, 16), 1)  # every pixel is palette entry 1
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    return img


def _uint16_image(value: int) -> Image.Image:
    img = Image.fromarray(np.full((16, 24), value, dtype=np.uint16))
    assert img.mode == "I;16"
    return img


def _random_rgb(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8))


# (encoded bytes, the RGB colour every pixel should decode to, tolerance for lossy formats)
SOLID_IMAGES: dict[str, tuple[Callable[[], bytes], tuple[int, int, int], int]] = {
    "rgb-jpeg": (lambda: encode(Image.new("RGB", (24, 16), (200, 100, 50)), "JPEG", quality=95), (200, 100, 50), 3),
    "rgb-png": (lambda: encode(Image.new("RGB", (24, 16), (200, 100, 50)), "PNG"), (200, 100, 50), 0),
    "grayscale-L-png": (lambda: encode(Image.new("L", (24, 16), 77), "PNG"), (77, 77, 77), 0),
    "grayscale-L-jpeg": (lambda: encode(Image.new("L", (24, 16), 77), "JPEG", quality=95), (77, 77, 77), 2),
    "bilevel-1-png": (lambda: encode(Image.new("1", (24, 16), 1), "PNG"), (255, 255, 255), 0),
    "rgba-png-alpha-dropped": (lambda: encode(Image.new("RGBA", (24, 16), (10, 20, 30, 0)), "PNG"), (10, 20, 30), 0),
    "rgba-png-opaque": (lambda: encode(Image.new("RGBA", (24, 16), (10, 20, 30, 255)), "PNG"), (10, 20, 30), 0),
    "la-png": (lambda: encode(Image.new("LA", (24, 16), (99, 128)), "PNG"), (99, 99, 99), 0),
    "palette-png": (lambda: encode(_palette_image(), "PNG"), (200, 100, 50), 0),
    "palette-png-transparent-other-entry": (lambda: encode(_palette_image(), "PNG", transparency=0),
                                            (200, 100, 50), 0),
    "palette-png-transparent-used-entry": (lambda: encode(_palette_image(), "PNG", transparency=1),
                                           (200, 100, 50), 0),
    "palette-gif-transparent": (lambda: encode(_palette_image(), "GIF", transparency=1), (200, 100, 50), 0),
    "cmyk-jpeg": (lambda: encode(Image.new("CMYK", (24, 16), (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), 3),
    "uint16-png-white": (lambda: encode(_uint16_image(65535), "PNG"), (255, 255, 255), 0),
    "uint16-png-mid-grey": (lambda: encode(_uint16_image(32768), "PNG"), (127, 127, 127), 1),
    "uint16-png-black": (lambda: encode(_uint16_image(0), "PNG"), (0, 0, 0), 0),
    "uint16-png-near-black": (lambda: encode(_uint16_image(200), "PNG"), (0, 0, 0), 1),  # 200/65535 of white
    "uint16-big-endian-tiff-white": (
        lambda: encode(Image.frombytes("I;16B", (24, 16), np.full(24 * 16, 65535, ">u2").tobytes()), "TIFF"),
        (255, 255, 255), 0),
    "uint16-pgm-white": (lambda: b"P5\n24 16\n65535\n" + np.full(24 * 16, 65535, ">u2").tobytes(),
                         (255, 255, 255), 0),
}


@pytest.mark.parametrize("size", [8, 33])
@pytest.mark.parametrize("kind", sorted(SOLID_IMAGES))
def test_image_kinds_decode_to_rgb_uint8_of_the_right_colour(kind: str, size: int) -> None:
    make, colour, tolerance = SOLID_IMAGES[kind]
    pixels = decode_image(make(), size)
    assert pixels.shape == (size, size, 3)
    assert pixels.dtype == np.uint8
    diff = np.abs(pixels.astype(np.int16) - np.array(colour, dtype=np.int16))
    assert diff.max() <= tolerance, f"{kind}: got {pixels[0, 0].tolist()}, want {list(colour)}"


def test_uint16_gradient_keeps_its_range_and_order() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))  # [8, 64], left dark, right white
    pixels = decode_image(encode(Image.fromarray(ramp), "PNG"), 16)
    row = pixels[4, :, 0].astype(int)
    assert (np.diff(row) > 0).all()  # strictly brighter to the right: no wrap-around or clipping
    assert row[0] < 16 and row[-1] > 240
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])  # still grey
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_dark_uint16_decodes_the_same_from_pgm_as_from_png() -> None:
    pgm = b"P5\n24 16\n65535\n" + np.full(24 * 16, 200, ">u2").tobytes()
    png = encode(_uint16_image(200), "PNG")
    np.testing.assert_array_equal(decode_image(pgm, 8), decode_image(png, 8))


def _grey_as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("kind", ["I;16 png", "I;16B tiff", "I pgm", "I tiff out of range", "F tiff [0, 1]",
                                  "F tiff [0, 255]"])
def test_16_bit_and_float_grey_convert_band_by_band_exactly(kind: str, monkeypatch) -> None:
    """Every 16-bit value, in bands of a few rows, gives round(v * 255 / 65535), as the whole image
    converted in float64 did; "I" values outside 16 bits clip; float images scale from [0, 1] or [0, 255]."""
    monkeypatch.setattr(images, "GREY_BAND_PIXELS", 1000)  # 3 rows of 256: many bands, the last one short
    every = np.arange(65536, dtype=np.int64).reshape(256, 256)  # [256, 256]: each 16-bit value once
    expected = np.round(every * 255 / 65535)
    if kind == "I;16 png":
        data = encode(Image.fromarray(every.astype(np.uint16)), "PNG")
    elif kind == "I;16B tiff":
        data = encode(Image.frombytes("I;16B", (256, 256), every.astype(">u2").tobytes()), "TIFF")
    elif kind == "I pgm":
        data = b"P5\n256 256\n65535\n" + every.astype(">u2").tobytes()
    elif kind == "I tiff out of range":
        every = every * 3 - 65536  # [-65536, 131069]
        expected = np.round(np.clip(every, 0, 65535) * 255 / 65535)
        data = encode(Image.fromarray(every.astype(np.int32), "I"), "TIFF")
    else:
        top = 1.0 if kind == "F tiff [0, 1]" else 255.0
        values = (every / 65535 * top).astype(np.float32)
        expected = np.round(values.astype(np.float64) * (255.0 / top))
        data = encode(Image.fromarray(values, "F"), "TIFF")
    np.testing.assert_array_equal(decode_image(data, 256), _grey_as_rgb(expected))


def test_large_grey_is_resized_as_one_channel_the_same_as_rgb() -> None:
    """16-bit grey is resized as one channel, then copied to three: as resizing its RGB copy."""
    grey = np.random.default_rng(1).integers(0, 65536, (300, 451), dtype=np.uint16)
    data = encode(Image.fromarray(grey), "PNG")
    as_8_bit = np.round(grey * (255 / 65535)).astype(np.uint8)
    for size in (64, 299, 512):  # area averaging, bilinear shrinking, bilinear enlarging
        np.testing.assert_array_equal(decode_image(data, size), images._resize(_grey_as_rgb(as_8_bit), size))


@pytest.mark.parametrize(
    ("fmt", "tolerance", "width", "height"),
    [
        ("PNG", 0, 40, 20),
        ("PNG", 0, 2, 1),  # upscaled from two pixels
        ("PNG", 0, 600, 300),
        ("JPEG", 12, 40, 20),
        ("JPEG", 12, 600, 300),  # big enough for the reduced-scale JPEG draft decode
    ],
)
def test_resize_keeps_left_and_right(fmt: str, tolerance: int, width: int, height: int) -> None:
    halves = np.zeros((height, width, 3), dtype=np.uint8)
    halves[:, : width // 2] = (255, 0, 0)
    halves[:, width // 2:] = (0, 0, 255)
    pixels = decode_image(encode(Image.fromarray(halves), fmt, **({"quality": 95} if fmt == "JPEG" else {})), 8)
    assert pixels.shape == (8, 8, 3)
    assert np.abs(pixels[:, 0].astype(int) - (255, 0, 0)).max() <= tolerance
    assert np.abs(pixels[:, -1].astype(int) - (0, 0, 255)).max() <= tolerance


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    halves = np.zeros((20, 40, 3), dtype=np.uint8)
    halves[:, :20] = (255, 0, 0)
    halves[:, 20:] = (0, 0, 255)
    img = Image.fromarray(halves)
    exif = img.getexif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    pixels = decode_image(encode(img, fmt, exif=exif.tobytes()), 8)
    assert np.abs(pixels[:, 0].astype(int) - (0, 0, 255)).max() <= 2  # blue is now on the left
    assert np.abs(pixels[:, -1].astype(int) - (255, 0, 0)).max() <= 2


# --- refusals --------------------------------------------------------------------------------------


def _jpeg() -> bytes:
    return encode(_random_rgb(), "JPEG", quality=90)


def _png() -> bytes:
    return encode(_random_rgb(), "PNG")


def _overwrite_middle(data: bytes, filler: bytes, length: int = 64) -> bytes:
    corrupted = bytearray(data)
    middle = len(data) // 2
    corrupted[middle:middle + length] = (filler * length)[:length]
    return bytes(corrupted)


UNDECODABLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", r"^empty file$"),
    "random-bytes": (lambda: np.random.default_rng(3).bytes(2000), r"^not an image \(format not recognised\)$"),
    "text-file": (lambda: b"image_id,uri,label\n1,a.jpg,0\n" * 20, r"^not an image"),
    "jpeg-magic-only": (lambda: _jpeg()[:3], r"^not an image \(format not recognised\)$"),
    "jpeg-cut-in-half": (lambda: _jpeg()[: len(_jpeg()) // 2], r"^corrupt or truncated: image file is truncated"),
    "jpeg-header-only": (lambda: _jpeg()[:700], r"^corrupt or truncated: image file is truncated"),
    "jpeg-without-end-of-image": (lambda: _jpeg()[:-2], r"^corrupt or truncated: image file is truncated"),
    "png-cut-in-half": (lambda: _png()[: len(_png()) // 2], r"^corrupt or truncated: image file is truncated"),
    # Pillow's PNG opener fails on the cut chunk header, so this is reported as "not an image"
    "png-header-only": (lambda: _png()[:40], r"^not an image \(format not recognised\)$"),
    "jpeg-markers-in-the-middle": (lambda: _overwrite_middle(_jpeg(), b"\xff\xd8"),
                                   r"^corrupt or truncated: broken data stream"),
    "png-zeros-in-the-middle": (lambda: _overwrite_middle(_png(), b"\x00"),
                                r"^corrupt or truncated: broken data stream"),
}


@pytest.mark.parametrize("kind", sorted(UNDECODABLE))
def test_undecodable_data_raises_with_a_reason(kind: str) -> None:
    make, reason = UNDECODABLE[kind]
    with pytest.raises(UndecodableImage, match=reason):
        decode_image(make(), 16)


def test_undecodable_image_is_a_value_error() -> None:
    assert issubclass(UndecodableImage, ValueError)


def test_zeroed_middle_of_a_jpeg_is_not_detected() -> None:
    """Zero bytes in entropy-coded data are valid JPEG: libjpeg decodes garbage without an error."""
    intact = decode_image(_jpeg(), 16)
    damaged = decode_image(_overwrite_middle(_jpeg(), b"\x00"), 16)
    assert damaged.shape == (16, 16, 3)
    assert damaged.dtype == np.uint8
    assert not np.array_equal(damaged, intact)


@pytest.mark.parametrize("max_pixels", [300, 100], ids=["over-limit", "over-twice-limit"])
def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch, max_pixels: int) -> None:
    """Refused from the header (PIL would only warn below twice its limit), with no warnings
    filter changed: the check holds the same in every thread."""
    import warnings

    data = encode(Image.new("RGB", (24, 16), (1, 2, 3)), "PNG")  # 384 pixels
    monkeypatch.setattr(images, "MAX_PIXELS", max_pixels)
    filters = list(warnings.filters)
    with pytest.raises(UndecodableImage, match=r"^too large: 24x16 = 384 pixels"):
        decode_image(data, 8)
    assert warnings.filters == filters


def test_bombs_are_refused_while_threads_decode_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_batch with threads: every large image refused, every small one decoded, whatever
    the interleaving (a per-call warnings filter was process-wide, and threads raced on it)."""
    from raysal.data.decode import decode_batch

    monkeypatch.setattr(images, "MAX_PIXELS", 300)
    small, large = (encode(Image.new("RGB", wh, (9, 8, 7)), "PNG") for wh in ((16, 16), (24, 16)))
    data = [small if i % 2 else large for i in range(64)]
    for _ in range(5):
        out = decode_batch({"image_id": np.arange(64), "uri": np.array([""] * 64, dtype=object),
                            "label": np.zeros(64), "image_bytes": np.array(data, dtype=object)}, 8, threads=4)
        assert all(e.startswith("too large") for e in out["error"][::2]) and not any(out["error"][1::2])
        assert (out["image"][1::2, 0, 0] == [9, 8, 7]).all()


def test_image_under_the_pixel_limit_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 24 * 16)
    pixels = decode_image(encode(Image.new("RGB", (24, 16), (1, 2, 3)), "PNG"), 8)
    assert pixels[0, 0].tolist() == [1, 2, 3]


# --- the libjpeg-turbo fast path for plain JPEGs -----------------------------------------------


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields, like a photo: random 8x8 colours scaled up."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def _with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = img.getexif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(("width", "height", "size"), [(96, 72, 64), (500, 375, 75), (40, 30, 64)])
def test_fast_path_decodes_plain_jpegs_like_pil(width: int, height: int, size: int) -> None:
    data = encode(_photo(width, height), "JPEG", quality=95)
    fast = images._fast_jpeg(data, size)
    assert fast is not None, "a plain RGB JPEG should take the fast path"
    # PIL's decode of the same file at full scale, resized the same way: reduced-scale DCT
    # decoding differs a little from full decoding + area averaging, and nothing more.
    reference = images._resize(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), size)
    got = decode_image(data, size)
    np.testing.assert_array_equal(got, images._resize(fast, size))  # decode_image took the fast path
    diff = np.abs(got.astype(int) - reference)
    assert diff.mean() < 1.5 and diff.max() <= 16, f"mean {diff.mean():.2f}, max {diff.max()}"


@pytest.mark.parametrize(
    ("make", "takes_fast_path"),
    [
        pytest.param(lambda: encode(_photo(40, 30), "JPEG"), True, id="rgb"),
        pytest.param(lambda: encode(_photo(40, 30).convert("L"), "JPEG"), True, id="grayscale"),
        pytest.param(lambda: _with_orientation(_photo(40, 30), 1), True, id="exif-upright"),
        pytest.param(lambda: _with_orientation(_photo(40, 30), 6), False, id="exif-rotated"),
        pytest.param(lambda: encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), False, id="cmyk"),
        pytest.param(lambda: encode(_photo(40, 30), "JPEG")[:-2], False, id="no-end-of-image"),
        pytest.param(lambda: encode(_photo(40, 30), "JPEG")[:300], False, id="cut-short"),
    ],
)
def test_fast_path_takes_only_plain_intact_jpegs(make: Callable[[], bytes], takes_fast_path: bool) -> None:
    assert (images._fast_jpeg(make(), 16) is not None) == takes_fast_path


def test_fast_path_leaves_oversized_jpegs_to_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(_photo(40, 30), "JPEG")
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 30 - 1)
    assert images._fast_jpeg(data, 16) is None
    with pytest.raises(UndecodableImage, match=r"^too large: "):
        decode_image(data, 16)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpeg_orientation_is_read_from_the_exif_segment(orientation: int) -> None:
    assert images._jpeg_orientation(_with_orientation(_photo(40, 30), orientation)) == orientation


def test_jpeg_orientation_without_exif_is_upright_and_bad_headers_are_unknown() -> None:
    data = encode(_photo(40, 30), "JPEG")
    assert images._jpeg_orientation(data) == 1
    assert images._jpeg_orientation(data[:2] + b"\x00" + data[3:]) is None  # no marker where one must be
    assert images._jpeg_orientation(data[:4]) is None  # ends inside the headers


@pytest.mark.parametrize("orientation", [3, 6])
def test_rotated_jpeg_decodes_as_its_upright_version(orientation: int) -> None:
    img = _photo(40, 30)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(_with_orientation(img, orientation))))
    want = decode_image(encode(upright, "PNG"), 16)
    got = decode_image(_with_orientation(img, orientation), 16)
    assert np.abs(got.astype(int) - want).mean() < 3  # JPEG loss only
