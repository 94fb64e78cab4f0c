"""Any image Pillow reads, turned into a small upright sRGB picture for sheets, pages and digests.

JPEG decoded at reduced size with ``draft()``, EXIF orientation applied, 16-bit greyscale scaled
down (Pillow's own conversion clips it to white), alpha and palette transparency composited onto
a neutral grey, CMYK and tagged RGB converted to sRGB through the embedded ICC profile when
LittleCMS is available.
"""

from __future__ import annotations

import io
import os
from typing import IO

from PIL import ExifTags, Image, ImageOps

from daemon.outputs.colour import has_transparency, icc_to_srgb, to_rgb

__all__ = ["LETTERBOX", "fit_image", "thumbnail"]

LETTERBOX = (200, 200, 198)  # the neutral grey behind letterboxed and transparent pixels

_ORIENTATION = ExifTags.Base.Orientation


def _target(size: tuple[int, int], box: int, upscale: bool) -> tuple[int, int]:
    w, h = size
    scale = box / max(w, h)
    if scale > 1 and not upscale:
        return size
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def fit_image(im: Image.Image, size: int, *, upscale: bool = True) -> Image.Image:
    """A new RGB image fitting in ``size``x``size``, upright (EXIF), display-ready.

    ``im`` is consumed: a lazily opened JPEG gets ``draft``-ed and loaded at reduced scale.
    On a JPEG that has not been loaded yet this decodes at reduced scale (``draft``): the cost is
    then mostly entropy decoding, not IDCT + full-size resampling.
    """
    if im.format == "JPEG":
        im.draft("RGB", (size, size))  # no-op once loaded; keeps the result >= size
    orientation = im.getexif().get(_ORIENTATION, 1)
    if orientation in range(2, 9):
        im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile")
    if im.mode in ("RGB", "L", "CMYK") and not has_transparency(im):
        small = im.resize(
            _target(im.size, size, upscale), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        out = small.convert("RGB") if small.mode == "L" else icc_to_srgb(small, icc)
    else:
        flat = to_rgb(im, LETTERBOX)
        out = flat.resize(
            _target(flat.size, size, upscale), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    if out is im:
        out = out.copy()
    out.info = {}  # orientation and ICC are applied: nothing left to re-apply
    return out


def thumbnail(
    data_or_path: bytes | str | os.PathLike[str] | IO[bytes], size: int, *, upscale: bool = False
) -> Image.Image:
    """Decode an image file (bytes, path or binary file) straight to an RGB thumbnail."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else data_or_path
    with Image.open(src) as im:
        return fit_image(im, size, upscale=upscale)
