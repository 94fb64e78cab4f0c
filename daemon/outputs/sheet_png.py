"""The review sheet's PNG encoder: the same kind of file Pillow writes, in a fraction of the time.

A 64-tile sheet of photos is ~2500x2600 px of pixels that barely compress; Pillow's encoder
(adaptive row filters, one zlib stream) takes ~0.5 s for it at level 1, on one core. This
one makes the same standard PNG (8-bit RGB, one zlib stream in IDAT chunks) by:

- one row filter for every row, ``Up`` (each byte minus the byte above), computed for the
  whole image at once with ``ImageChops.subtract_modulo`` against the image shifted down a
  row: photos and flat UI bands both compress about as well as with adaptive filters;
- deflate with ``Z_RLE`` at level 1 (runs of equal bytes: what filtered flat areas are), on
  horizontal strips compressed in parallel threads (zlib releases the GIL), each ended with
  a sync flush so the raw deflate streams join into one, as pigz does; the zlib header and
  the Adler-32 of all rows frame them.

Measured on the 64-tile bench sheet (bench/sheet_bench.py): see bench/README.md.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageChops

__all__ = ["encode_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = b"\x02"  # PNG filter type 2: Up
_IDAT_BYTES = 1 << 20  # IDAT chunk size (any size is valid; 1 MiB keeps chunks readable)
_MIN_STRIP_ROWS = 64  # below this, strips are not worth a thread
LEVEL = 1  # zlib level: the sheet's pixels are mostly photo tiles, which barely compress


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
    )


def _filtered_rows(image: Image.Image) -> bytes:
    """Every row with its filter byte: ``Up`` for all (the first row's "above" is zeros).
    All of it in Pillow's C code: the filtered bytes become a greyscale image one column
    wider, whose first column is the filter byte."""
    width, height = image.size
    above = Image.new("RGB", image.size)
    above.paste(image.crop((0, 0, width, height - 1)), (0, 1))
    filtered = ImageChops.subtract_modulo(image, above).tobytes()
    framed = Image.new("L", (width * 3 + 1, height), _UP[0])
    framed.paste(Image.frombytes("L", (width * 3, height), filtered), (1, 0))
    return framed.tobytes()


def _deflate(data: memoryview, last: bool) -> bytes:
    """Raw deflate of one strip; all but the last end on a byte boundary (sync flush)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    return compressor.compress(data) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


def encode_png(
    image: Image.Image,
    *,
    threads: int | None = None,
    initializer: Callable[[], None] | None = None,
) -> bytes:
    """``image`` (RGB; converted otherwise) as PNG bytes, compressed on up to ``threads``
    threads (default: the CPUs, at most 4), each started with ``initializer``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    raw = _filtered_rows(image)
    row_bytes = width * 3 + 1
    strips = max(1, min(threads or min(4, os.cpu_count() or 1), height // _MIN_STRIP_ROWS))
    rows_per_strip = -(-height // strips)
    view = memoryview(raw)
    parts = [
        view[start * row_bytes : min(height, start + rows_per_strip) * row_bytes]
        for start in range(0, height, rows_per_strip)
    ]
    lasts = [i == len(parts) - 1 for i in range(len(parts))]
    if len(parts) == 1:
        deflated = [_deflate(parts[0], True)]
    else:
        with ThreadPoolExecutor(
            len(parts), "darkroom-sheet-png", initializer=initializer or (lambda: None)
        ) as pool:
            deflated = list(pool.map(_deflate, parts, lasts))
    # zlib stream: header (deflate, 32K window, fastest) + the strips + Adler-32 of all rows.
    stream = b"\x78\x01" + b"".join(deflated) + struct.pack(">I", zlib.adler32(raw))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"".join(
        _chunk(b"IDAT", stream[i : i + _IDAT_BYTES]) for i in range(0, len(stream), _IDAT_BYTES)
    )
    return _SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")
