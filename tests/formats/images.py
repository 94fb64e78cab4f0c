"""Input files the tests need and no library writes: built byte by byte.

``tiff_12bit`` is a true 12-bit greyscale TIFF (BitsPerSample 12, two samples packed in three
bytes), as scanners and machine-vision cameras write; ``png_16bit`` a 16-bit PNG with an
optional ``sBIT`` chunk (the significant bits a 12-bit camera declares).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np


def tiff_12bit(samples: np.ndarray) -> bytes:
    """An uncompressed little-endian greyscale TIFF holding ``samples`` (0..4095) in 12 bits."""
    height, width = samples.shape
    assert width % 2 == 0, "two samples per three bytes: keep the width even"
    values = samples.astype(np.uint16).reshape(-1, 2)
    first, second = values[:, 0], values[:, 1]
    packed = np.stack(
        [first >> 4, ((first & 0xF) << 4) | (second >> 8), second & 0xFF], axis=1
    ).astype(np.uint8)
    pixels = packed.tobytes()
    entries = [  # (tag, type, value): type 3 SHORT, 4 LONG
        (256, 4, width),
        (257, 4, height),
        (258, 3, 12),  # BitsPerSample
        (259, 3, 1),  # no compression
        (262, 3, 1),  # BlackIsZero
        (273, 4, 0),  # StripOffsets: patched below
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(pixels)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = offset if tag == 273 else value
        packed_value = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed_value
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + pixels


def png_16bit(samples: np.ndarray, significant_bits: int | None = None) -> bytes:
    """A 16-bit PNG of ``samples`` ((h, w) grey or (h, w, 3) RGB), with an sBIT chunk when
    ``significant_bits`` is given."""
    grey = samples.ndim == 2
    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    colour_type = 0 if grey else 2

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    sbit = b""
    if significant_bits is not None:
        sbit = chunk(b"sBIT", bytes([significant_bits] * (1 if grey else 3)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + sbit
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
