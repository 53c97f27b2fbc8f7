"""Images are checked from their header before any decoding: every bomb of bench/images.py
is refused with a one-line reason, or made into a thumbnail, and no other exception ever
escapes. (Peak memory is measured in bench/images.py, not here.)"""

from __future__ import annotations

import io

import pytest

from bench.images import CASES, png_declared
from relay.images import DECODE_MAX_PIXELS, ImageError, inspect, make_thumbnail

EXPECTED = {
    "png 10001x10001 (tiny file)": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "png 9000x9000 (10 KB)": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "png 4000x4000 rgba (over the decode cap)": (None, "too large to decode: 4000 × 4000"),
    "png 3464x3464 rgba (at the decode cap)": (None, None),
    "png 3464x3464 rgb 16-bit (at the cap)": (None, None),
    "png declares 8000x8000, holds 10 rows": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "png zTXt bomb": ("unreadable image", "unreadable image"),
    "png iTXt bomb": ("unreadable image", "unreadable image"),
    "jpeg 60000x60000 header": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "jpeg 7000x4500 real (drafted)": (None, None),
    "gif 65535x65535 header": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "gif 5000x5000 real": (None, "too large to decode: 5000 × 5000"),
    "webp 16383x16383 header": ("over 33,177,600 pixels", "over 33,177,600 pixels"),
    "truncated png": (None, "truncated"),
    "not an image": ("not a JPEG, PNG, GIF or WebP image", "not a JPEG, PNG, GIF or WebP image"),
}


def test_every_bench_case_has_an_expected_outcome() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_image_bombs_are_refused_with_a_reason(name: str) -> None:
    data = CASES[name]()
    header, thumbnail = EXPECTED[name]
    for function, expected in ((inspect, header), (make_thumbnail, thumbnail)):
        if expected is None:
            function(data)  # accepted: a header, or a thumbnail under the card's limit
            continue
        with pytest.raises(ImageError) as raised:
            function(data)
        message = str(raised.value)
        assert expected in message and "\n" not in message, message


def test_thumbnail_is_a_jpeg_under_the_card_limit() -> None:
    from PIL import Image

    thumbnail = make_thumbnail(CASES["jpeg 7000x4500 real (drafted)"]())
    assert len(thumbnail) < 1_000_000
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert image.format == "JPEG" and max(image.size) <= 1200


def test_header_names_the_real_type_whatever_the_content_type() -> None:
    info = inspect(png_declared(640, 480))
    assert (info.mime_type, info.width, info.height) == ("image/png", 640, 480)


def test_pillow_bomb_check_is_an_image_error_even_when_the_pixel_cap_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header check does not depend on Pillow's own MAX_IMAGE_PIXELS alone."""
    import relay.images

    monkeypatch.setattr(relay.images, "HEADER_MAX_PIXELS", 10**12)
    monkeypatch.setattr(relay.images, "DECODE_MAX_PIXELS", DECODE_MAX_PIXELS)
    with pytest.raises(ImageError):
        make_thumbnail(png_declared(10001, 10001, rows=1))
