"""Turning any decoded image into 8-bit RGB without the classic traps.

16-bit greyscale is scaled by its real bit depth (``convert("RGB")`` would clip it to white,
and scaling a 12-bit image over 0..65535 makes it black: see daemon.outputs.depth),
transparency is composited onto a background instead of turning black, and CMYK goes to sRGB
through its embedded ICC profile. Only a profile that describes RGB is carried onto RGB
outputs (:func:`rgb_profile`). Used for model inputs (daemon.imaging) and sheets
(daemon.sheet).
"""

from __future__ import annotations

import io
from typing import cast

import structlog
from PIL import Image, features

from daemon.outputs.depth import SIGNIFICANT_BITS, range_bits

log = structlog.get_logger("darkroom.colour")

WHITE = (255, 255, 255)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _scaled_to_l(im: Image.Image, lo: float, hi: float) -> Image.Image:
    """Map [lo, hi] linearly to 0..255 for an I or F image."""
    im = im.convert("F") if im.mode != "F" else im
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    return im.point(lambda v: (v - lo) * scale).convert("L")


def _flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES:
        return True
    if im.mode == "P":
        return "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA")
    return "transparency" in im.info


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB for display (no colour management here).

    16-bit and 32-bit greyscale are scaled into 0..255 (``convert("RGB")`` would clip them to
    white) by their declared significant bits (``info[SIGNIFICANT_BITS]``, set by
    ``imaging.decode``), else by the smallest common depth that holds their largest value;
    transparency is composited onto ``background``.
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        # A single-band image's extrema are two numbers (typeshed allows per-band tuples).
        lo, hi = cast(tuple[float, float], im.getextrema())
        declared = im.info.get(SIGNIFICANT_BITS)
        if mode == "F" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0
        elif lo >= 0 and hi <= 65535:
            bits = declared if isinstance(declared, int) and declared > 0 else range_bits(hi)
            lo, hi = 0, (1 << bits) - 1
        return _scaled_to_l(im, lo, hi).convert("RGB")
    if has_transparency(im):
        return _flatten(im, background)
    try:
        return im.convert("RGB")
    except ValueError:  # e.g. LAB: needs a colour transform
        from PIL import ImageCms

        lab = ImageCms.createProfile("LAB")
        srgb = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(im, lab, srgb, outputMode="RGB")
        assert converted is not None  # None only with inPlace=True
        return converted


def icc_to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """``im`` (RGB or CMYK) converted to sRGB RGB, through ``icc`` when possible."""
    if icc and features.check("littlecms2"):
        from PIL import ImageCms

        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(
                im, src, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if out is not None:
                return out
        except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as exc:
            log.debug("ignoring unusable ICC profile", reason=str(exc))
    out = im if im.mode == "RGB" else im.convert("RGB")
    out.info.pop("icc_profile", None)  # the pixels are no longer in that profile's space
    return out


def rgb_profile(icc: bytes | None, name: str = "") -> bytes | None:
    """``icc`` when it is a parsable profile of an RGB colour space, else None (logged):
    a grey, CMYK or Lab profile, or a broken one, must never tag RGB pixels."""
    if not icc:
        return None
    try:
        from PIL import ImageCms

        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except Exception as exc:  # ImageCms raises OSError, PyCMSError or worse on junk
        log.warning(
            "dropping an unreadable ICC profile: outputs are written untagged (sRGB)",
            file=name or None,
            reason=f"{type(exc).__name__}: {exc}",
        )
        return None
    if space != "RGB":
        log.info(
            "not carrying a non-RGB ICC profile onto RGB outputs: they are written untagged (sRGB)",
            file=name or None,
            colour_space=space,
        )
        return None
    return icc
