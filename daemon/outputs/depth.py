"""Bit depth of deep inputs: scale by what the file declares, else by what its values span.

Pillow keeps 16-bit greyscale (mode ``I;16``) unscaled and reads 16-bit RGB/RGBA PNG and TIFF
as 8 bits by keeping each sample's high byte. Both are right only when the samples span
0..65535. A 12-bit camera or scanner file uses 0..4095 — as a true 12-bit TIFF (Pillow
unpacks it to ``I;16``), or 16-bit samples with a PNG ``sBIT`` chunk or a TIFF
``MaxSampleValue`` saying so, or with no declaration at all — and scaled over 0..65535 it
comes out black.

The rule, in order: the declared significant bits (PNG ``sBIT``, TIFF ``BitsPerSample`` below
16, TIFF ``MaxSampleValue``); else the smallest common depth (8, 10, 12, 14 or 16 bits)
that holds the largest colour sample. Alpha is always full range (65535 is opaque).

    declared_bits(image, data) -> int | None
    range_bits(maximum) -> int
    deepen(image, data, name) -> Image     16-bit RGB(A) re-read at full precision when narrow

``imaging.decode`` stores the bits in ``image.info[SIGNIFICANT_BITS]``; ``colour.to_rgb``
scales single-band images by them.
"""

from __future__ import annotations

import struct
import subprocess
from typing import Any

import structlog
from PIL import Image

log = structlog.get_logger("darkroom.imaging")

SIGNIFICANT_BITS = "darkroom.significant_bits"
_COMMON_DEPTHS = (8, 10, 12, 14, 16)
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_MAX_SAMPLE_VALUE = 281
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA; sBIT has one byte per channel.
_PNG_COLOUR_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}


def range_bits(maximum: float) -> int:
    """The smallest common bit depth whose range holds ``maximum``."""
    for bits in _COMMON_DEPTHS:
        if maximum <= (1 << bits) - 1:
            return bits
    return 16


def declared_bits(image: Image.Image, data: bytes) -> int | None:
    """The significant bits per sample the file declares, when below its container's 16
    (None: nothing declared, or 8-bit samples)."""
    if image.format == "PNG":
        return _png_sbit(data)
    if image.format == "TIFF":
        tags: Any = getattr(image, "tag_v2", {})
        bits = _first(tags.get(_TIFF_BITS_PER_SAMPLE))
        if bits is not None and 8 < bits < 16:
            return bits
        top = _first(tags.get(_TIFF_MAX_SAMPLE_VALUE))
        if bits == 16 and top is not None and 0 < top < 65535:
            return range_bits(top)
    return None


def is_deep_rgb(image: Image.Image, data: bytes) -> bool:
    """A 16-bit-per-sample RGB(A) PNG or TIFF, which Pillow read as 8 bits (high bytes)."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "PNG":
        return data[:8] == _PNG_SIGNATURE and len(data) > 24 and data[24] == 16
    if image.format == "TIFF":
        tags: Any = getattr(image, "tag_v2", {})
        return _first(tags.get(_TIFF_BITS_PER_SAMPLE)) == 16
    return False


def deepen(image: Image.Image, data: bytes, name: str) -> Image.Image:
    """``image`` (loaded, a 16-bit RGB(A) PNG/TIFF as Pillow's 8 bits) rescaled by its real
    depth when its samples do not span 16 bits; otherwise ``image`` itself.

    The full-precision samples come from ffmpeg (the imageio-ffmpeg wheel's); without it the
    8-bit high bytes are stretched instead (coarser steps, right brightness), and that is
    logged."""
    bits = declared_bits(image, data)
    high = max(hi for _, hi in _band_extrema(image)[:3])
    if bits is None and high >= 128:
        return image  # the samples use the top bit: Pillow's high bytes are the right answer
    samples = _full_precision(data, image)
    if samples is None:
        top = (1 << (bits or range_bits(high * 256 + 255))) - 1
        log.warning(
            "16-bit image scaled from its high bytes (ffmpeg unavailable): coarser tones",
            file=name,
            bits=bits,
        )
        scale = 255 * 256 / top
        bands = list(image.split())
        bands[:3] = [band.point(lambda v: min(255, round(v * scale))) for band in bands[:3]]
        out = Image.merge(image.mode, bands)
    else:
        import numpy as np

        top = (1 << (bits or range_bits(int(samples[..., :3].max())))) - 1
        tops = np.array([top] * 3 + [65535] * (samples.shape[2] - 3), dtype=np.float32)
        scaled = np.clip(samples.astype(np.float32) * (255.0 / tops), 0, 255)
        out = Image.fromarray(np.rint(scaled).astype(np.uint8), image.mode)
    out.info.update(image.info)
    exif = image.getexif()  # a TIFF keeps its orientation in tags, not in info
    if exif:
        out.info["exif"] = exif.tobytes()
    out.info[SIGNIFICANT_BITS] = bits or 0
    log.info("scaled a narrow 16-bit image by its bit depth", file=name, top=top)
    return out


def _full_precision(data: bytes, image: Image.Image) -> Any:
    """The file's samples as a (height, width, bands) uint16 array, decoded by ffmpeg; None
    when ffmpeg is missing or fails."""
    try:
        import imageio_ffmpeg
        import numpy as np

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None
    bands = len(image.getbands())
    pix_fmt = "rgba64le" if bands == 4 else "rgb48le"
    demuxer = "png_pipe" if image.format == "PNG" else "tiff_pipe"
    command = [ffmpeg, "-v", "error", "-f", demuxer, "-i", "pipe:0", "-frames:v", "1"]
    command += ["-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("ffmpeg could not read a 16-bit image", reason=str(exc)[:200])
        return None
    expected = image.width * image.height * bands * 2
    if len(done.stdout) != expected:
        return None
    return np.frombuffer(done.stdout, "<u2").reshape(image.height, image.width, bands)


def _png_sbit(data: bytes) -> int | None:
    """The colour channels' significant bits from a PNG's sBIT chunk (before IDAT)."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33:
        return None
    depth, colour_type = data[24], data[25]
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT":
            channels = _PNG_COLOUR_CHANNELS.get(colour_type, 1)
            values = data[at + 8 : at + 8 + min(length, channels)]
            bits = max(values) if values else 0
            return bits if 0 < bits < depth else None
        at += 12 + length
    return None


def _band_extrema(image: Image.Image) -> list[tuple[int, int]]:
    extrema: Any = image.getextrema()
    return list(extrema) if isinstance(extrema[0], tuple) else [extrema]


def _first(value: Any) -> int | None:
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int | float) else None
