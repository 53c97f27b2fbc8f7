"""Image bombs through the real image path: each case runs relay.images in a fresh process
(the link-card thumbnail, and the header check that guards Mastodon uploads) and reports
the outcome and the process's peak RSS. Target: every case under 150 MB.

python bench/images.py

The builders are shared with tests/test_images.py, which checks the outcomes only."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 150


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declared(width: int, height: int, *, bit_depth: int = 1, colour: int = 0, rows: int | None = None) -> bytes:
    """A PNG of zero pixels: 1-bit grey compresses a huge image into a few KB. `rows`
    limits the image data actually present (a header that lies about its data)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" + bytes((width * channels * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_with_text_bomb(kind: bytes) -> bytes:
    """A small valid PNG carrying a zTXt or compressed iTXt chunk that inflates to 200 MB."""
    compressor = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(block) for _ in range(200)) + compressor.flush()
    text = b"Comment\0\0" + bomb if kind == b"zTXt" else b"Comment\0\1\0\0\0" + bomb
    image = png_declared(64, 64)
    return image[:33] + _chunk(kind, text) + image[33:]


def _pillow(format: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, (40, 90, 160) if mode == "RGB" else 0).save(out, format=format, **options)
    return out.getvalue()


def jpeg_declared(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width × height."""
    data = bytearray(_pillow("JPEG", (16, 16)))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def gif_declared(width: int, height: int) -> bytes:
    """A small GIF whose screen and image descriptors claim width × height."""
    data = bytearray(_pillow("GIF", (16, 16), "P"))
    struct.pack_into("<HH", data, 6, width, height)
    at = data.index(b"\x2c")  # the image descriptor
    struct.pack_into("<HH", data, at + 5, width, height)
    return bytes(data)


def webp_declared(width: int, height: int) -> bytes:
    """A small lossy WebP whose VP8 frame header claims width × height (14 bits each)."""
    data = bytearray(_pillow("WEBP", (16, 16), quality=50))
    at = data.index(b"VP8 ") + 8 + 6  # chunk header, frame tag, start code
    struct.pack_into("<HH", data, at, width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def truncated() -> bytes:
    data = _pillow("PNG", (800, 600), "RGB")
    return data[: len(data) // 2]


CASES: dict[str, Callable[[], bytes]] = {
    "png 10001x10001 (tiny file)": lambda: png_declared(10001, 10001),
    "png 9000x9000 (10 KB)": lambda: png_declared(9000, 9000),
    "png 4000x4000 rgba (over the decode cap)": lambda: png_declared(4000, 4000, bit_depth=8, colour=6),
    "png 3464x3464 rgba (at the decode cap)": lambda: png_declared(3464, 3464, bit_depth=8, colour=6),
    "png 3464x3464 rgb 16-bit (at the cap)": lambda: png_declared(3464, 3464, bit_depth=16, colour=2),
    "png declares 8000x8000, holds 10 rows": lambda: png_declared(8000, 8000, rows=10),
    "png zTXt bomb": lambda: png_with_text_bomb(b"zTXt"),
    "png iTXt bomb": lambda: png_with_text_bomb(b"iTXt"),
    "jpeg 60000x60000 header": lambda: jpeg_declared(60000, 60000),
    "jpeg 7000x4500 real (drafted)": lambda: _pillow("JPEG", (7000, 4500)),
    "gif 65535x65535 header": lambda: gif_declared(65535, 65535),
    "gif 5000x5000 real": lambda: _pillow("GIF", (5000, 5000), "P"),
    "webp 16383x16383 header": lambda: webp_declared(16383, 16383),
    "truncated png": truncated,
    "not an image": lambda: b"<html>not an image</html>",
}

_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[2])
from relay.images import ImageError, inspect, make_thumbnail
data = open(sys.argv[1], "rb").read()
outcome = {}
for name, function in (("header", inspect), ("thumbnail", make_thumbnail)):
    try:
        result = function(data)
        outcome[name] = "ok " + (f"{result.mime_type} {result.width}x{result.height}" if name == "header" else f"{len(result):,} bytes")
    except ImageError as exc:
        outcome[name] = "refused: " + str(exc)
    except BaseException as exc:
        outcome[name] = "ESCAPED " + type(exc).__name__ + ": " + str(exc)[:100]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, from the parent that built the case
status = open("/proc/self/status").read()
outcome["peak_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(outcome))
"""


def run_case(data: bytes) -> dict[str, object]:
    """The real image path on `data`, in a fresh interpreter: outcomes and peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".img") as handle:
        handle.write(data)
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, handle.name, str(ROOT)], capture_output=True, text=True, timeout=120
        )
    if done.returncode != 0:
        return {"header": "CRASHED", "thumbnail": done.stderr.strip().splitlines()[-1:], "peak_mb": 0.0}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    print(f"images: peak RSS per case in a fresh process (target < {TARGET_MB} MB)")
    worst = 0.0
    for name, build in CASES.items():
        data = build()
        outcome = run_case(data)
        peak = float(str(outcome["peak_mb"]))
        worst = max(worst, peak)
        print(f"  {name:42} {len(data):>10,} B  {peak:6.1f} MB")
        print(f"      header:    {outcome['header']}")
        print(f"      thumbnail: {outcome['thumbnail']}")
    print(f"images: worst peak {worst:.1f} MB ({'under' if worst < TARGET_MB else 'OVER'} {TARGET_MB} MB)")


if __name__ == "__main__":
    main()
