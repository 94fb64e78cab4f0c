"""In-memory source for tests: ``put()`` a key and it is emitted at once.

It follows the folder source's contract where it matters to callers: ``emit`` raising is
logged, never raised back into ``put``; ``read`` of a missing key raises InputError; the startup
scan and ``scan()`` emit every stored item that ``known(key, size, mtime_ns)`` says is not
handled yet (so a test can simulate a lost event by calling ``scan()``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from daemon.errors import InputError
from daemon.sources.base import Emit, Known, Source
from daemon.types import Arrival

log = structlog.get_logger("darkroom.sources")

__all__ = ["MemorySource"]


class MemorySource(Source):
    """Keys and bytes in a dict; ``settled`` and ``quarantined`` record the hooks' calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._items: dict[str, tuple[bytes, int]] = {}  # key -> data, mtime_ns
        self._emit: Emit | None = None
        self._known: Known | None = None
        self.settled: list[tuple[str, str]] = []  # (key, outcome), for tests
        self.quarantined: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"MemorySource({self.name!r})"

    def start(self, emit: Emit, known: Known) -> None:
        with self._lock:
            self._emit, self._known = emit, known
        self.scan()

    def stop(self) -> None:
        with self._lock:
            self._emit = None

    def put(self, key: str, data: bytes) -> Arrival:
        """Store ``data`` under ``key`` and emit it now (when started); returns the arrival."""
        _check_key(key)
        with self._lock:
            self._items[key] = (bytes(data), time.time_ns())
            arrival = self._arrival(key)
            emit = self._emit
        if emit is not None:
            self._call(emit, arrival)
        return arrival

    def remove(self, key: str) -> None:
        """Forget ``key`` (a later ``read`` raises InputError, as for a vanished file)."""
        with self._lock:
            self._items.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def scan(self) -> None:
        with self._lock:
            emit, known = self._emit, self._known
            arrivals = [self._arrival(key) for key in self._items]
        if emit is None or known is None:
            return
        for arrival in arrivals:
            if not known(arrival.key, arrival.size, arrival.mtime_ns):
                self._call(emit, arrival)

    def quarantine(self, key: str, record: dict[str, Any], folder: str | None = None) -> str:
        self.quarantined[key] = record
        return f"memory://{self.name}/.quarantine/{key}"

    def settle(self, arrival: Arrival, outcome: str) -> None:
        self.settled.append((arrival.key, outcome))

    def read(self, key: str, etag: str | None = None) -> bytes:
        with self._lock:
            item = self._items.get(key)
        if item is None:
            raise InputError(f"memory://{self.name}/{key}: file vanished before it could be read")
        return item[0]

    def _arrival(self, key: str) -> Arrival:
        data, mtime_ns = self._items[key]
        return Arrival(
            source=self.name,
            key=key,
            uri=f"memory://{self.name}/{key}",
            size=len(data),
            mtime_ns=mtime_ns,
        )

    def _call(self, emit: Emit, arrival: Arrival) -> None:
        try:
            emit(arrival)
        except Exception:
            log.exception("emit failed", source=self.name, key=arrival.key)


def _check_key(key: str) -> None:
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid key {key!r}: want a relative POSIX path like 'shoots/a.jpg'")
