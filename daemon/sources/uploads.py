"""Telling an upload in progress from a bad file, before anything is quarantined.

A folder source emits a file once its size and mtime have been still for ``quiet_period``,
but a writer can pause for longer than that (``rsync --inplace`` over a slow link, a slow
HTTP-style writer) or leave a partial file under the final name (``rsync --partial`` when
interrupted). Such a file fails to decode. Before that failure may quarantine it,
:class:`UploadWatch` asks the file itself, each time the job comes back:

- it must stay unchanged (same size, mtime and inode) for another ``quiet_period`` -- or for
  ``truncated_grace`` when it looks truncated (:func:`looks_truncated`), since an interrupted
  transfer may resume much later;
- and it must still hold the bytes that failed (the plan's sha256).

A file that changed is a new version: it arrives again through the source and is processed on
its own, and the failed bytes are never quarantined. The watch is in memory: after a restart
the wait starts again, which only ever delays a quarantine.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["FileStamp", "UploadVerdict", "UploadWatch", "looks_truncated"]

# How each format's files begin: a failed file that is a prefix of one of these was cut off
# inside its header.
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF",  # WebP (RIFF....WEBP)
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
    b"BM",
)
_TRUNCATION_WORDS = ("truncated", "end of file", "broken data stream", "unexpected end")


def looks_truncated(data: bytes, error: str) -> bool:
    """Whether bytes that failed to decode look cut off (rather than corrupt): empty, a
    prefix of an image header, a decoder that says so, or a format's end marker missing."""
    if not data:
        return True
    if any(len(data) < len(magic) and magic.startswith(data) for magic in _MAGIC):
        return True
    if any(word in error.lower() for word in _TRUNCATION_WORDS):
        return True
    if data.startswith(b"\xff\xd8\xff"):
        return not data.endswith(b"\xff\xd9")  # JPEG ends with EOI
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-12:]
    if data.startswith((b"GIF87a", b"GIF89a")):
        return not data.endswith(b";")
    if data.startswith(b"RIFF") and len(data) >= 8:
        (declared,) = struct.unpack("<I", data[4:8])
        return declared + 8 > len(data)
    return False


@dataclass(frozen=True)
class FileStamp:
    """What says a file changed without reading it."""

    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True)
class UploadVerdict:
    """``settled``: the failed bytes are complete and still there (quarantine may go on);
    ``waiting``: ask again in ``retry_in`` s; ``changed``: a new version (or none) is there."""

    state: Literal["settled", "waiting", "changed"]
    retry_in: float = 0.0

    @classmethod
    def settled(cls) -> UploadVerdict:
        return cls("settled")


@dataclass
class _Watched:
    stamp: FileStamp
    since: float  # clock time this stamp was first seen
    settled: bool = False


class UploadWatch:
    """Per (key, sha256): since when the file has looked the same. ``stamp`` and ``digest``
    read the file (None: it is gone); ``clock`` is injectable for tests."""

    MAX_ENTRIES = 10_000  # a plan that never comes back must not grow this forever

    def __init__(
        self,
        quiet_period: float,
        truncated_grace: float,
        stamp: Callable[[str], FileStamp | None],
        digest: Callable[[str], str | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet_period = quiet_period
        self.truncated_grace = truncated_grace
        self._stamp = stamp
        self._digest = digest
        self._clock = clock
        self._lock = threading.Lock()
        self._watched: OrderedDict[tuple[str, str], _Watched] = OrderedDict()

    def verdict(self, key: str, sha256: str, *, truncated: bool) -> UploadVerdict:
        """Whether the bytes ``sha256`` of ``key``, which failed to decode, may be
        quarantined now (see the module docstring)."""
        stamp = self._stamp(key)
        if stamp is None:
            self._forget(key, sha256)
            return UploadVerdict("changed")
        now = self._clock()
        wait = self.truncated_grace if truncated else self.quiet_period
        with self._lock:
            entry = self._watched.get((key, sha256))
            if entry is not None and entry.stamp == stamp:
                if entry.settled:
                    return UploadVerdict.settled()
                left = entry.since + wait - now
                if left > 0:
                    return UploadVerdict("waiting", retry_in=self._next_look(left))
        if entry is None or entry.stamp != stamp:
            # First look, or the file was touched or rewritten since: is it the same bytes?
            if entry is not None and self._digest(key) != sha256:
                self._forget(key, sha256)
                return UploadVerdict("changed")
            self._remember(key, sha256, _Watched(stamp, now))
            return UploadVerdict("waiting", retry_in=self._next_look(wait))
        # Unchanged for the whole wait: confirm the bytes before saying so.
        if self._digest(key) != sha256 or self._stamp(key) != stamp:
            self._forget(key, sha256)
            return UploadVerdict("changed")
        self._remember(key, sha256, _Watched(stamp, entry.since, settled=True))
        return UploadVerdict.settled()

    def _next_look(self, left: float) -> float:
        """Look again when the wait is over, and at least every few quiet periods meanwhile,
        so that a long grace does not keep a file that changed waiting for nothing."""
        return max(0.05, min(left, max(4 * self.quiet_period, 5.0)))

    def _remember(self, key: str, sha256: str, entry: _Watched) -> None:
        with self._lock:
            self._watched[(key, sha256)] = entry
            self._watched.move_to_end((key, sha256))
            while len(self._watched) > self.MAX_ENTRIES:
                self._watched.popitem(last=False)

    def _forget(self, key: str, sha256: str) -> None:
        with self._lock:
            self._watched.pop((key, sha256), None)
