"""Turn a path, bytes, BytesIO or PIL image into a validated RGB ``PIL.Image`` — or a typed error naming it."""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import E5VImageError

__all__ = [
    "ImageInput",
    "load_image",
    "load_thumbnail",
    "image_size",
    "describe_source",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_SUFFIXES",
]

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | bytearray | io.IOBase | Image.Image

#: Same limit as Pillow's own decompression-bomb warning (about 89.5 megapixels). E5-V resizes every image to at
#: most 1008 px a side anyway, so larger pictures only cost decode time and memory.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

#: File suffixes read as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def describe_source(source: object) -> str:
    """A short, human-readable name for an image input (never its content)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"bytes[{len(source)}]"
    if isinstance(source, Image.Image):
        return f"PIL.Image({source.mode} {source.width}x{source.height})"
    name = getattr(source, "name", None)
    return f"{type(source).__name__}({name})" if isinstance(name, str) else type(source).__name__


def load_image(
    source: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, name: str | None = None
) -> Image.Image:
    """Load and validate an image: EXIF orientation applied, first frame of animations, converted to RGB.

    Args:
        source: a file path (``str`` / ``PathLike``), raw ``bytes``, a binary file object (``BytesIO``, rewound
            first), or a ``PIL.Image``. URLs are not fetched.
        max_pixels: refuse images with more pixels than this (decompression bombs); ``None`` disables the check.
        name: how to name the input in errors (defaults to ``describe_source(source)``).

    Returns:
        A fully decoded RGB image that no longer depends on the source.

    Raises:
        E5VImageError: the input is missing, empty, truncated, not an image, or too large; the message names it.
    """
    label = name or describe_source(source)
    if isinstance(source, Image.Image):
        return _finish(source, label, max_pixels, owned=False)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, str) and text.startswith(("http://", "https://")):
            raise E5VImageError(label, "URLs are not fetched; download the image and pass its path or bytes")
        path = Path(text)
        if not path.exists():
            raise E5VImageError(label, "no such file")
        if path.is_dir():
            raise E5VImageError(label, "is a directory, not an image file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise E5VImageError(label, f"cannot read file: {exc.strerror or exc}") from exc
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise E5VImageError(label, "file object must be opened in binary mode")
    else:
        raise E5VImageError(
            label, f"unsupported image input type {type(source).__name__}; pass a path, bytes, BytesIO or PIL image"
        )
    return _decoded(data, label, lambda image: _finish(image, label, max_pixels, owned=True), max_pixels)


def load_thumbnail(data: bytes, *, size: int, max_pixels: int | None, name: str) -> Image.Image:
    """An RGB thumbnail (at most ``size`` px a side) of encoded image ``data``, decoded as small as the format
    allows: JPEGs at 1/2, 1/4 or 1/8 scale (Pillow's ``draft``, the decoder's DCT scaling), so a 86-megapixel JPEG
    costs a few megabytes; other formats are decoded in full, then reduced. EXIF orientation is applied; transparent
    pixels are shown on white (as browsers show them), not on the black their RGB values usually hold.

    Raises:
        E5VImageError: as ``load_image``.
    """

    def shrink(image: Image.Image) -> Image.Image:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.draft("RGB", (size, size))  # JPEG only; a no-op for other formats
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, bilevel, 16-bit, CMYK: to a mode that resizes
            image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
        image.thumbnail((size, size))
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return image.convert("RGB") if image.mode != "RGB" else image

    return _decoded(data, name, shrink, max_pixels)


def image_size(data: bytes, *, max_pixels: int | None, name: str) -> tuple[int, int]:
    """``(height, width)`` of encoded image ``data`` as ``load_image`` would return it (EXIF orientation applied),
    read from the header without decoding pixels; the format and the pixel limit are checked as ``load_image`` does.

    Raises:
        E5VImageError: not an image, or too many pixels.
    """

    def probe(image: Image.Image) -> tuple[int, int]:
        width, height = image.size
        if image.format == "PNG":  # Pillow's PNG getexif() decodes the image to find a late eXIf chunk: header only
            exif = Image.Exif()
            if "exif" in image.info:
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        swapped = exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
        return (width, height) if swapped else (height, width)

    return _decoded(data, name, probe, max_pixels)


def _decoded(data: bytes, label: str, finish, max_pixels: int | None):
    """``finish(image)`` on the opened ``data`` after the pixel check, Pillow's errors turned into ``E5VImageError``."""
    if not data:
        raise E5VImageError(label, "empty (zero bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow's warnings ("Corrupt EXIF data") name no file
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image, label, max_pixels)
            image = finish(image)
        for seen in {str(w.message) for w in caught}:
            logger.warning("%s: %s", label, seen)
        return image
    except E5VImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise E5VImageError(label, f"too many pixels (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise E5VImageError(label, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise E5VImageError(label, f"corrupt or truncated image: {exc}") from exc


def _check_size(image: Image.Image, label: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise E5VImageError(label, f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise E5VImageError(
            label,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} (raise max_image_pixels to allow it)",
        )


def _finish(image: Image.Image, label: str, max_pixels: int | None, *, owned: bool) -> Image.Image:
    """Decoded, upright, RGB. ``owned``: the image was opened here, so it is transposed in place (a caller's image is
    copied instead); an 86-megapixel RGB picture then costs one full-size buffer, not three."""
    _check_size(image, label, max_pixels)
    if getattr(image, "is_animated", False):
        image.seek(0)
    image.load()
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)  # a new image, transposed or copied
    return image.convert("RGB") if image.mode != "RGB" else image
