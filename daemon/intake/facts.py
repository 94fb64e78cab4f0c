"""What intake learns about one arrival before asking the rules, without decoding pixels.

The arrival's bytes are read once (by :class:`~daemon.intake.intake.Intake`) and handed
here: they are hashed once, and the image's type and upright size come from its header
only. The sidecar next to the image and the mask's hash are read from the same source.
Everything here is a fact; deciding what to do with them is :mod:`daemon.rules`' job.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from daemon.errors import DarkroomError
from daemon.intake.headers import quick_facts
from daemon.outputs import openers
from daemon.rules.match import ImageFacts
from daemon.rules.sidecars import DEFAULT_LIMITS, Sidecar, SidecarLimits, mask_key, sidecar_keys

if TYPE_CHECKING:
    from daemon.sources.base import Source

# Pillow's format names -> the rule language's ``match.types`` (MPO: a multi-picture JPEG).
FILE_TYPES = {
    "JPEG": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "TIFF": "tiff",
    "BMP": "bmp",
    "GIF": "gif",
    "MPO": "jpeg",
    "HEIF": "heif",  # pillow-heif's name for HEIC too
    "AVIF": "avif",
}
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _maybe(key: str) -> bool:
    """Without a listing every candidate name may exist: each is read to find out."""
    return True


@dataclass(frozen=True)
class InputFacts:
    """One arrival's facts: its bytes' hash, its header and its sidecar.

    ``sidecar_error`` says why a sidecar that exists could not be used; the arrival still
    counts as having one (a rule requiring a sidecar takes it, and its plan fails saying
    why) rather than being silently ignored.
    """

    sha256: str
    image: ImageFacts | None
    sidecar: Sidecar | None
    sidecar_error: str | None

    @property
    def has_sidecar(self) -> bool:
        return self.sidecar is not None or self.sidecar_error is not None


def examine(
    source: Source,
    key: str,
    data: bytes,
    limits: SidecarLimits = DEFAULT_LIMITS,
    exists: Callable[[str], bool] = _maybe,
) -> InputFacts:
    """Hash ``data`` (the bytes of ``key``), read its header and its sidecar, if any.
    ``exists``: False for keys known not to exist (a folder listing), which are not read."""
    sidecar, sidecar_error = read_sidecar(source, key, limits, exists)
    return InputFacts(hashlib.sha256(data).hexdigest(), image_facts(data), sidecar, sidecar_error)


def image_facts(data: bytes) -> ImageFacts | None:
    """Type and upright size from the header, without decoding pixels (None: unreadable)."""
    return quick_facts(data) or pillow_facts(data)


def pillow_facts(data: bytes) -> ImageFacts | None:
    """:func:`image_facts` as Pillow's ``Image.open`` reads them, for any format it knows."""
    openers.register()  # HEIC needs its plugin before Pillow can read the header
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            # The base class's getexif reads only what the header parse put in ``info``.
            # PNG's override calls load() -- a full decode of every pixel -- in case an eXIf
            # chunk follows the pixels; writers put it before them, so that rare file's
            # facts keep its stored (unrotated) size.
            orientation = Image.Image.getexif(image).get(_EXIF_ORIENTATION, 1)
            if orientation in _QUARTER_TURNS:
                width, height = height, width
            kind = FILE_TYPES.get(image.format or "", (image.format or "").lower())
            return ImageFacts(kind, width, height)
    except Exception:  # anything unreadable: the job says why, with the full decode
        return None


def read_sidecar(
    source: Source,
    key: str,
    limits: SidecarLimits = DEFAULT_LIMITS,
    exists: Callable[[str], bool] = _maybe,
) -> tuple[Sidecar | None, str | None]:
    """The sidecar of the image ``key``, if one exists; a broken one comes back with its
    ``fault`` and as an error message for its plans (the first candidate that exists
    decides)."""
    for candidate in sidecar_keys(key):
        if not exists(candidate):
            continue
        try:
            data = source.read(candidate)
        except DarkroomError:
            continue
        try:
            return Sidecar.parse(candidate, data, limits), None
        except Exception as exc:  # any parse failure is the sidecar's fault, recorded
            fault = str(exc) if isinstance(exc, DarkroomError) else f"{candidate}: {exc!r}"
            return Sidecar.broken(candidate, data, fault), fault
    return None, None


def mask_sha256(source: Source, key: str, exists: Callable[[str], bool] = _maybe) -> str | None:
    """The hash of the image ``key``'s mask (``photo.mask.png``), None when there is none:
    part of the content identity, so that a new mask makes the image new work."""
    if not exists(mask_key(key)):
        return None
    try:
        return hashlib.sha256(source.read(mask_key(key))).hexdigest()
    except DarkroomError:
        return None
