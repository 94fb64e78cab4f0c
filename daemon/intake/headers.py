"""An image's type and upright size from its first bytes, for the plain PNG and JPEG files
most drops are made of: a few microseconds where Pillow's ``Image.open`` takes ~50.

Intake asks this for every arrival. The answer must be Pillow's own (a rule's
``match.min_width`` or ``orientation`` decides on it, and ``darkroom match`` explains with
Pillow's), so the reading below is deliberately narrow: it answers only for a file whose
header it understands completely and that Pillow would open the same way, and says None
("ask Pillow") for everything else: a chunk or segment Pillow interprets (text, XMP, ICC
fragments it would join, multi-picture JPEGs, Photoshop blocks), anything malformed or
truncated, a second frame header, an image over Pillow's pixel limit. Where Pillow reads a
value that could make it fail (EXIF resolution, an IHDR's mode), the same checks are made
here. ``tests/unit/test_image_headers.py`` holds it to Pillow on generated and damaged files.
"""

from __future__ import annotations

import struct
import zlib

from PIL import Image

from daemon.rules.match import ImageFacts

__all__ = ["quick_facts"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) pairs Pillow has a mode for; it refuses the others.
_PNG_MODES = frozenset(
    [(1, 0), (1, 3), (2, 0), (2, 3), (4, 0), (4, 3), (8, 0), (8, 2), (8, 3), (8, 4), (8, 6)]
    + [(16, 0), (16, 2), (16, 4), (16, 6)]
)
# Chunks before the pixels that Pillow reads, with the least length it needs to read them
# without failing; a chunk Pillow reads otherwise (tEXt, eXIf, iCCP, APNG's) is Pillow's.
_PNG_KNOWN = {b"PLTE": 0, b"cHRM": 32, b"gAMA": 4, b"sRGB": 1, b"pHYs": 9}
_PNG_PILLOWS = frozenset(
    [b"IHDR", b"IEND", b"tRNS", b"iCCP", b"tEXt", b"zTXt", b"iTXt", b"eXIf"]
    + [b"acTL", b"fcTL", b"fdAT"]
)

# Frame headers: C0-CF but DHT (C4), JPG (C8) and DAC (CC), and DHP (DE), as Pillow has them.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE}
_JPEG_SKIPPED = frozenset([0xC4, 0xCC, 0xDC, 0xDD, 0xDF])  # tables Pillow steps over
_JPEG_SOS, _JPEG_DQT, _JPEG_COM = 0xDA, 0xDB, 0xFE
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height

# TIFF field types -> bytes per value: every type Pillow's EXIF reader loads, and more.
_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
_ORIENTATION, _RESOLUTION_UNIT, _X_RESOLUTION = 0x0112, 0x0128, 0x011A
_SHORT, _RATIONAL = 3, 5


class _Unsure(Exception):
    """This header is Pillow's to read."""


def quick_facts(data: bytes) -> ImageFacts | None:
    """The facts Pillow would give for a plain PNG or JPEG; None: ask Pillow."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            facts = _png(data)
        elif data.startswith(b"\xff\xd8\xff"):
            facts = _jpeg(data)
        else:
            return None
    except (_Unsure, IndexError, struct.error):
        return None
    limit = Image.MAX_IMAGE_PIXELS  # over it, Pillow warns or refuses
    if facts.width <= 0 or facts.height <= 0:
        return None
    if limit is not None and facts.width * facts.height > limit:
        return None
    return facts


def _png(data: bytes) -> ImageFacts:
    pos, first = 8, True
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT" and not first:
            break  # Pillow stops reading here, before the pixels' checksum
        body = data[pos + 8 : pos + 8 + length]
        end = pos + 12 + length
        if len(body) != length or end > len(data) or not kind.isalpha():
            raise _Unsure
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise _Unsure  # Pillow refuses a broken chunk
        if first:
            if kind != b"IHDR" or length != 13:
                raise _Unsure
            width, height, depth, colour, _, filtering, _ = struct.unpack(">IIBBBBB", body)
            if (depth, colour) not in _PNG_MODES or filtering != 0:
                raise _Unsure
            first = False
        elif kind in _PNG_PILLOWS or length < _PNG_KNOWN.get(kind, 0):
            raise _Unsure
        pos = end
    # Orientation would come from eXIf or text chunks, both left to Pillow above.
    return ImageFacts("png", width, height)


def _jpeg(data: bytes) -> ImageFacts:
    pos, size = 2, None
    exif: bytes | None = None
    xmp = jfif_dpi = False
    while True:
        if data[pos] != 0xFF:
            raise _Unsure  # fill bytes or junk between segments: Pillow's to skip
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise _Unsure
        pos += 2 + length
        if marker == _JPEG_SOS:
            break
        if marker in _JPEG_SOF:
            if size is not None or len(body) < 6 or body[0] != 8 or body[5] not in (1, 3, 4):
                raise _Unsure
            height, width = struct.unpack_from(">HH", body, 1)
            size = (width, height)
        elif marker == _JPEG_DQT:
            _check_quantization(body)
        elif 0xE0 <= marker <= 0xEF:
            if marker == 0xE1 and body.startswith(b"Exif\0\0"):
                if exif is not None:
                    raise _Unsure  # Pillow joins them
                exif = body[6:]
            elif marker == 0xE1 and body.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
                xmp = True
            else:
                jfif_dpi |= _check_app(marker, body)
        elif marker not in _JPEG_SKIPPED and marker != _JPEG_COM:
            raise _Unsure  # a marker without a length, or one Pillow does not expect here
    if size is None:
        raise _Unsure
    orientation = _exif_orientation(exif, check_dpi=not jfif_dpi) if exif is not None else None
    if orientation is None:
        if xmp:
            raise _Unsure  # Pillow then looks for tiff:Orientation in the XMP
        orientation = 1
    width, height = size
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    return ImageFacts("jpeg", width, height)


def _check_quantization(body: bytes) -> None:
    while body:
        table = 1 + (64 if body[0] < 16 else 128)
        if len(body) < table:
            raise _Unsure  # Pillow: "bad quantization table marker"
        body = body[table:]


def _check_app(marker: int, body: bytes) -> bool:
    """Refuses an application segment Pillow could fail on or reads further; True when it is
    a JFIF header that gives the resolution (then Pillow does not read EXIF's)."""
    if marker == 0xE0 and body.startswith(b"JFIF"):
        if len(body) < 7:
            raise _Unsure
        return len(body) >= 12 and body[7] in (1, 2)
    if marker == 0xE2 and body.startswith(b"ICC_PROFILE\0") and len(body) < 14:
        raise _Unsure
    if marker == 0xE2 and body.startswith(b"MPF\0"):
        raise _Unsure  # a multi-picture file: Pillow's MPO reader
    if marker == 0xED and body.startswith(b"Photoshop 3.0\0"):
        raise _Unsure
    if marker == 0xEE and body.startswith(b"Adobe") and len(body) < 7:
        raise _Unsure
    return False


def _exif_orientation(tiff: bytes, *, check_dpi: bool) -> int | None:
    """IFD0's orientation (None: it has none), read only from a directory that Pillow reads
    whole: every entry and every value it points to inside the data."""
    if tiff.startswith(b"Exif\0\0"):
        raise _Unsure  # Pillow strips a second prefix
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(tiff[:4])
    if order is None:
        raise _Unsure
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * count + 4 > len(tiff):
        raise _Unsure
    entries = {}
    for index in range(count):
        tag, kind, values, field = struct.unpack_from(order + "HHI4s", tiff, ifd + 2 + 12 * index)
        unit = _TIFF_UNIT.get(kind)
        if unit is None or values == 0:
            continue  # Pillow skips it too
        if unit * values > 4:
            (offset,) = struct.unpack_from(order + "I", field)
            if offset + unit * values > len(tiff):
                raise _Unsure  # Pillow stops reading the directory here
        if tag in entries:
            raise _Unsure
        entries[tag] = (kind, values, field)
    if check_dpi and _RESOLUTION_UNIT in entries:
        # Pillow reads the resolution from EXIF while opening, and fails on some odd ones.
        unit_ok = entries[_RESOLUTION_UNIT][:2] == (_SHORT, 1)
        resolution = entries.get(_X_RESOLUTION)
        if not unit_ok or (resolution is not None and resolution[:2] != (_RATIONAL, 1)):
            raise _Unsure
    if _ORIENTATION not in entries:
        return None
    kind, values, field = entries[_ORIENTATION]
    if (kind, values) != (_SHORT, 1):
        raise _Unsure
    return int(struct.unpack_from(order + "H", field)[0])
