"""Image formats Pillow reads only with a plugin: registered on first use, not at import.

HEIC/HEIF (phone photos) need ``pillow-heif``; importing it costs ~0.1 s and a native
library, so ``import daemon`` stays light and the plugin is registered by the first decode.
AVIF is Pillow's own (11.3+ wheels; ``PIL.features.check("avif")``).
"""

from __future__ import annotations

import threading

import structlog

log = structlog.get_logger("darkroom.imaging")

_lock = threading.Lock()
_registered: bool | None = None  # None: not tried yet; False: pillow-heif is missing


def register() -> bool:
    """Register the HEIF opener with Pillow once; False when pillow-heif is not installed
    (HEIC files then fail to decode, naming the missing package)."""
    global _registered
    if _registered is not None:
        return _registered
    with _lock:
        if _registered is None:
            try:
                import pillow_heif
            except ImportError as exc:
                log.warning(
                    "HEIC/HEIF inputs cannot be read: pillow-heif is not installed "
                    "(pip install 'pillow-heif>=1.0')",
                    reason=str(exc),
                )
                _registered = False
            else:
                pillow_heif.register_heif_opener()
                _registered = True
    return _registered


def heif_missing(data: bytes) -> bool:
    """True when ``data`` is a HEIC/HEIF file and the plugin to read it is missing."""
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS and register() is False


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
