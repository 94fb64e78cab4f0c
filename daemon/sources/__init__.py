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

from daemon.jobs import Arrival

Emit = Callable[[Arrival], None]
# Returns True when (key, size, mtime_ns) was already handled, so rescans stay cheap.
Known = Callable[[str, int, int], bool]


class Source(Protocol):
    name: str

    def start(self, emit: Emit, known: Known) -> None:
        """Begin watching (non-blocking) and run the startup scan."""

    def scan(self) -> None:
        """Look at everything again (periodic rescan; recovers lost events)."""

    def stop(self) -> None:
        """Stop watching; pending, not yet complete candidates are dropped."""

    def read(self, key: str) -> bytes:
        """The object's bytes. Raises daemon.errors.InputError when it is gone or unreadable."""


SOURCES: dict[str, str] = {
    "folder": "daemon.sources.folder:FolderSource",
    "memory": "daemon.sources.memory:MemorySource",
}


def source_class(kind: str) -> type:
    module_name, _, attr = SOURCES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
