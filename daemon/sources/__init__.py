"""Sources: where arrivals come from.

A source watches one location and calls ``emit(arrival)`` once per complete object. It
never decides what to do with a file (rules do) and never modifies it. ``emit`` may be
called from any thread; it must be cheap and never raise back into the source.

``SOURCES`` is the registry of source types by the ``type`` key of their config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from daemon.types import Arrival

Emit = Callable[[Arrival], None]
# Returns True when this version of key (size + mtime_ns, or size + etag when given) was
# already handled, so rescans and duplicate events stay cheap.
Known = Callable[..., bool]  # (key, size, mtime_ns, etag=None) -> bool
Periodic = list[tuple[Callable[[], None], float, str]]  # (function, interval s, job name)


class Source(Protocol):
    name: str

    def start(self, emit: Emit, known: Known) -> None:
        """Begin watching (non-blocking) and run the startup scan."""

    def scan(self) -> None:
        """Look at everything again (periodic rescan; recovers lost events)."""

    def stop(self) -> None:
        """Stop watching; pending, not yet complete candidates are dropped."""

    # Optional: ``periodic() -> Periodic`` — work the app runs on its one scheduler
    # (listings, reconciliation). Sources without periodic work leave it out.

    def read(self, key: str, etag: str | None = None) -> bytes:
        """The object's bytes. Raises daemon.errors.InputError when it is gone or unreadable.

        With ``etag`` (from the arrival), a source that can check versions (S3) refuses to
        return a different version: InputError("...changed...")."""

    def settle(self, arrival: Arrival, outcome: str) -> None:
        """Called once all work for ``arrival`` is committed (``done``/``failed``) or was
        never needed (``ignored``/``duplicate``). A queue-backed source deletes its message
        here, never earlier; others do nothing."""


SOURCES: dict[str, str] = {
    "folder": "daemon.sources.folder:FolderSource",
    "s3": "daemon.sources.s3:S3Source",
    "memory": "daemon.sources.memory:MemorySource",
}


def source_class(kind: str) -> type:
    module_name, _, attr = SOURCES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_source(name: str, config: object) -> Source:
    """A source from its config model (daemon.settings): ``Class.from_config(name, config)``."""
    return source_class(config.type).from_config(name, config)
