"""Which names a source folder holds, listed once per folder for a burst of arrivals.

An image's sidecar and mask are looked for under four or five names that mostly do not
exist; probing each one is a read attempt (a stat, a path check and an exception) per name
per image: a third of intake's time in a 10,000-file burst. A source that can list a folder
cheaply (:class:`ListsFolders`, the folder source) is listed once instead, and the listing
serves every arrival of that folder decided within ``max_age`` seconds; only names that
are in it are read (through the source's ``read``, with all its checks).

Staleness is bounded twice: a listing is at most ``max_age`` old, and a sidecar or mask
that arrives drops its folder's listing before the image it belongs to is decided again.
A sidecar written after the listing was taken is therefore found by its own arrival, as
one written just after a probe always was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, cast

__all__ = ["FolderListings", "ListsFolders"]

MAX_AGE_S = 1.0  # a burst's arrivals of one folder share a listing this long


class ListsFolders(Protocol):
    """A source that can say which names one folder (a key prefix) holds."""

    def folder_names(self, folder: str) -> frozenset[str] | None:
        """The names directly in ``folder`` ("" for the root, else "a/b"); None when it
        cannot be listed (then every name is probed)."""
        ...


class FolderListings:
    """Recent listings per (source, folder); thread-safe."""

    def __init__(
        self, max_age: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._listed: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}

    def exists(self, source_name: str, source: object, key: str) -> Callable[[str], bool]:
        """A test ``key2 -> may exist`` for keys in ``key``'s folder: False only for names
        a fresh listing of that folder does not have. Sources that cannot list say True."""
        # Not isinstance(source, ListsFolders): a runtime protocol check walks the class's
        # attributes, on every arrival.
        if not callable(getattr(source, "folder_names", None)):
            return _maybe
        folder, _, _ = key.rpartition("/")
        names = self._names(source_name, cast(ListsFolders, source), folder)
        if names is None:
            return _maybe
        prefix = folder + "/" if folder else ""

        def exists(candidate: str) -> bool:
            if not candidate.startswith(prefix) or "/" in candidate[len(prefix) :]:
                return True  # another folder: not known here, probe it
            return candidate[len(prefix) :] in names

        return exists

    def forget(self, source_name: str, key: str) -> None:
        """Drop the listing of ``key``'s folder (a sidecar or mask arrived there)."""
        with self._lock:
            self._listed.pop((source_name, key.rpartition("/")[0]), None)

    def forget_all(self) -> None:
        """Drop every listing."""
        with self._lock:
            self._listed.clear()

    def _names(self, source_name: str, source: ListsFolders, folder: str) -> frozenset[str] | None:
        now = self._clock()
        with self._lock:
            if len(self._listed) > 4096:  # many folders: drop the old ones
                self._listed = {k: v for k, v in self._listed.items() if now - v[0] <= self.max_age}
            cached = self._listed.get((source_name, folder))
        if cached is not None and now - cached[0] <= self.max_age:
            return cached[1]
        names = source.folder_names(folder)
        with self._lock:
            self._listed[(source_name, folder)] = (now, names)
        return names


def _maybe(key: str) -> bool:
    return True
