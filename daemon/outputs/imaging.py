"""Decoding inputs and encoding outputs (the device never waits on it).

Plan sources are decoded in a child process (:mod:`daemon.execution.decoder`); masks,
references and the daemon's own outputs here. The decode limit (``limits.max_pixels``) is set
with :func:`set_max_pixels` in every process that decodes.

Inputs: every format Pillow reads, plus HEIC/HEIF (pillow-heif, registered on first decode by
:mod:`.openers`) and AVIF (Pillow's own). Deep images are scaled by their real bit depth
(:mod:`.depth`); only an RGB colour profile travels to the outputs (:func:`output_icc`).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image, ImageOps

from daemon.errors import EnvironmentFault, InputError
from daemon.outputs import colour, depth, openers
from daemon.outputs import provenance as provenance_format

# The decode limit (limits.max_pixels). Pillow refuses images above 2x its own limit and only
# warns above it: we refuse above it, so a decompression bomb is an input error, not a 2 GB
# allocation.
MAX_PIXELS = 100_000_000


def set_max_pixels(pixels: int) -> None:
    """Set the decode limit for this process: ours and Pillow's (its default is 89.5 MP)."""
    global MAX_PIXELS
    MAX_PIXELS = pixels
    Image.MAX_IMAGE_PIXELS = pixels


set_max_pixels(MAX_PIXELS)  # one number from import on, not Pillow's 89.5 MP

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def decode(
    data: bytes, name: str, *, animated: str = "first_frame", reduce: int = 1
) -> Image.Image:
    """Fully decode ``data``; anything short of a complete, sane image is an InputError.
    An animated GIF/WebP/PNG gives its first frame, or is refused with ``animated="reject"``.
    ``reduce``: the caller wants the image this many times smaller; a JPEG is then decoded
    at 1/2, 1/4 or 1/8 scale (never below 1/reduce): a fraction of the time and memory."""
    if not data:
        raise InputError(f"{name}: the file is empty (0 bytes)")
    openers.register()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise InputError(
                    f"{name}: {image.width}x{image.height} is {image.width * image.height / 1e6:.0f} MP, "
                    f"over the {_mp(MAX_PIXELS)} MP decode limit (limits.max_pixels)"
                )
            if animated == "reject" and getattr(image, "is_animated", False):
                raise InputError(
                    f"{name}: an animated image ({getattr(image, 'n_frames', '?')} frames), and the rule's "
                    "match.animated is 'reject'"
                )
            if reduce > 1 and image.format in ("JPEG", "MPO"):
                image.draft(image.mode, (image.width // reduce, image.height // reduce))
            image.load()  # verify() accepts truncated JPEGs; a full load does not
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"{name}: refused as a decompression bomb, over the {_mp(MAX_PIXELS)} MP decode"
            f" limit (limits.max_pixels) ({exc})"
        ) from None
    except Image.UnidentifiedImageError:
        if openers.heif_missing(data):  # a HEIC the daemon cannot read yet: not the file's fault
            raise EnvironmentFault(
                f"{name}: a HEIC/HEIF image, and the package that reads those is not installed",
                hint="pip install 'pillow-heif>=1.0' into the daemon's environment and reload it",
            ) from None
        raise InputError(
            f"{name}: not an image Pillow can read (unknown or unsupported format)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        if "ghostscript" in str(exc).lower():  # EPS/PDF need an external tool: not the file's fault
            raise EnvironmentFault(
                f"{name}: Pillow needs Ghostscript to read this file and cannot find it ({exc})",
                hint="install Ghostscript (apt install ghostscript) and reload the daemon",
            ) from None
        raise InputError(f"{name}: cannot decode image: {exc}") from None
    except Exception as exc:
        # A decoder bug or an unimplemented variant (Pillow's NotImplementedError on some DDS
        # pixel formats): retried like any odd failure, then quarantined as an input fault,
        # never left to escape as a crash.
        raise InputError(
            f"{name}: cannot decode image: {type(exc).__name__}: {exc}", retryable=True
        ) from None
    return _with_depth(image, data, name)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


_DEEP_SINGLE_BAND = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _with_depth(image: Image.Image, data: bytes, name: str) -> Image.Image:
    """Deep samples described by their real bit depth (see :mod:`.depth`): a single band
    gets its declared bits in ``info`` for ``to_rgb``; narrow 16-bit RGB is rescaled now."""
    if image.mode in _DEEP_SINGLE_BAND:
        bits = depth.declared_bits(image, data)
        if bits:
            image.info[depth.SIGNIFICANT_BITS] = bits
        return image
    if depth.is_deep_rgb(image, data):
        return depth.deepen(image, data, name)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB for a model. RGB pixels keep their colour space (the source's ICC
    profile travels to the outputs, see output_icc); CMYK goes to sRGB through its profile."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "CMYK":
        return colour.icc_to_srgb(image, image.info.get("icc_profile"))
    return colour.to_rgb(image)


def output_icc(source: Image.Image, name: str = "") -> bytes | None:
    """The colour profile outputs should carry: the source's, when it describes RGB. A CMYK
    source's pixels were converted to sRGB; a grey, Lab or unreadable profile would mislabel
    RGB pixels: those outputs are written untagged (sRGB), and the drop is logged."""
    if source.mode == "CMYK":
        return None
    return colour.rgb_profile(source.info.get("icc_profile"), name)


def fit(
    image: Image.Image,
    max_side: int | None,
    width: int | None = None,
    height: int | None = None,
    multiple: int = 8,
) -> Image.Image:
    """Resize for a model: an explicit size, else within ``max_side``, to multiples of 8."""
    if width and height:
        size = (width, height)
    else:
        w, h = image.size
        scale = min(1.0, max_side / max(w, h)) if max_side else 1.0
        if width:
            scale = width / w
        elif height:
            scale = height / h
        size = (
            max(multiple, round(w * scale / multiple) * multiple),
            max(multiple, round(h * scale / multiple) * multiple),
        )
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Exactly ``width`` x ``height``: scale to cover, then crop the centre."""
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def cover_aspect(image: Image.Image, ratio: float, max_side: int, multiple: int = 8) -> Image.Image:
    """Crop the centre to ``ratio`` (width / height), as large as fits within ``max_side``."""
    wide = ratio >= 1
    exact_w, exact_h = (max_side, max_side / ratio) if wide else (max_side * ratio, max_side)
    width = max(multiple, int(exact_w) // multiple * multiple)
    height = max(multiple, int(exact_h) // multiple * multiple)
    return cover(image, width, height)


def encode(
    image: Image.Image,
    path: str,
    provenance: dict[str, Any] | None = None,
    *,
    quality: int = 92,
    icc_profile: bytes | None = None,
) -> tuple[bytes, str]:
    """Encode for ``path``'s extension with provenance (and the source's colour profile)
    embedded; returns (bytes, content type)."""
    suffix = "." + path.rsplit(".", 1)[-1].lower()
    fmt = FORMATS[suffix]
    buffer = io.BytesIO()
    # Always explicit: Pillow would otherwise write whatever profile the image still carries
    # in .info (a source's, even a CMYK one) whatever the rule's keep_icc says.
    image.info.pop("icc_profile", None)
    extra: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if provenance:
        extra.update(provenance_format.save_kwargs(fmt, provenance))
    if fmt == "PNG":
        image.save(buffer, "PNG", **extra)
    elif fmt == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=quality, **extra)
    else:
        image.save(buffer, "WEBP", quality=quality, **extra)
    return buffer.getvalue(), CONTENT_TYPES[fmt]


def read_provenance(data: bytes) -> dict[str, Any] | None:
    return provenance_format.read(data)
