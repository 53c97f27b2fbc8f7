"""Images from feed content, checked before they are decoded: the format and dimensions
come from the header (Pillow's open reads no pixels), anything over a pixel cap is refused,
and only then is a link-card thumbnail decoded (JPEGs straight at reduced scale). Every
problem, whatever Pillow raises, is one ImageError with a one-line reason."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

# What we ever decode. Pillow keeps 4 bytes a pixel for any colour image, and resizing an
# image with alpha makes a premultiplied copy: 12 million pixels is 2 × 48 MB, which keeps
# relay's peak memory under 150 MB with the interpreter and Pillow loaded (bench/images.py).
DECODE_MAX_PIXELS = 12_000_000
# What a header may declare: a JPEG over DECODE_MAX_PIXELS is still decoded at 1/2 to 1/8
# scale; images sent on without decoding (Mastodon uploads) are capped at Mastodon's own
# matrix limit (7680 × 4320).
HEADER_MAX_PIXELS = 33_177_600
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
THUMB_MAX_BYTES = 1_000_000
THUMB_MAX_SIDE = 1200


class ImageError(ValueError):
    """An image relay will not use; the message is one line, naming the problem."""


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int


def _open(data: bytes) -> Any:
    """Pillow's image object from the header only, with bomb warnings as errors."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = HEADER_MAX_PIXELS
    if not data:
        raise ImageError("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a JPEG, PNG, GIF or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image declares over {HEADER_MAX_PIXELS:,} pixels") from None
    except Exception as exc:  # any failure of a parser on hostile bytes is the image's fault
        raise ImageError(f"unreadable image ({_reason(exc)})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageError(f"image declares no pixels ({width} × {height})")
    if width * height > HEADER_MAX_PIXELS:
        image.close()
        raise ImageError(f"image too large: {width} × {height} pixels (at most {HEADER_MAX_PIXELS:,})")
    return image


def inspect(data: bytes) -> ImageInfo:
    """Format and size from the header, refused over the header cap; decodes no pixels."""
    with _open(data) as image:
        return ImageInfo(FORMATS[image.format], image.size[0], image.size[1])


def make_thumbnail(data: bytes, *, max_side: int = THUMB_MAX_SIDE, max_bytes: int = THUMB_MAX_BYTES) -> bytes:
    """Any accepted image → a JPEG under max_bytes, smaller and softer until it fits."""
    from PIL import Image

    try:
        with _open(data) as image, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode at 1/2..1/8 scale
            width, height = image.size
            if width * height > DECODE_MAX_PIXELS:
                raise ImageError(f"image too large to decode: {width} × {height} pixels")
            image.thumbnail((max_side, max_side))
            picture = image.convert("RGB")
    except ImageError:
        raise
    except Exception as exc:  # truncated data, bad chunks, bombs: never past this point
        raise ImageError(f"unreadable image ({_reason(exc)})") from None
    side = max_side
    quality = 85
    while True:
        candidate = picture.copy()
        candidate.thumbnail((side, side))
        out = io.BytesIO()
        candidate.save(out, format="JPEG", quality=quality, optimize=True)
        if out.tell() < max_bytes:
            return out.getvalue()
        if quality > 50:
            quality -= 15
        else:
            side = int(side * 0.75)
            if side < 64:
                raise ImageError("image cannot be made small enough")


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:120]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
