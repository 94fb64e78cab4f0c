"""Sinks: where outputs are committed.

A sink writes whole objects atomically — a reader sees the old object or the new one,
never a partial one — at paths relative to its root that were already checked by
``daemon.templates.safe_relpath``. Per source, the manifest is written last: it is the
commit marker that says every output it lists is in place.

``SINKS`` is the registry of sink types by the ``type`` key of their config.
"""

from __future__ import annotations

import importlib
from typing import Protocol


class Sink(Protocol):
    name: str

    def write(
        self, path: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> str:
        """Atomically store ``data`` at ``path``; returns its location (a path or URL).
        ``metadata`` is kept where the store has a place for it (S3 user metadata)."""

    def read(self, path: str) -> bytes:
        """Read back an output (a later step's input). Raises daemon.errors.OutputError."""

    def exists(self, path: str) -> bool: ...

    def location(self, path: str) -> str: ...

    def delete(self, path: str) -> None:
        """Remove an output (a withdrawn approval copy); missing is not an error."""

    def list(self, prefix: str = "") -> list[str]:
        """Paths under ``prefix`` (for rebuilding indexes)."""

    def write_manifest(self, path: str, data: bytes) -> str:
        """Write the commit marker. A sink shared by several daemons refuses to replace a
        manifest written by another (S3: IfNoneMatch) and raises OutputError."""


SINKS: dict[str, str] = {
    "folder": "daemon.sinks.folder:FolderSink",
    "s3": "daemon.sinks.s3:S3Sink",
    "memory": "daemon.sinks.memory:MemorySink",
}


def sink_class(kind: str) -> type:
    module_name, _, attr = SINKS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_sink(name: str, config: object) -> Sink:
    """A sink from its config model (daemon.settings): ``Class.from_config(name, config)``."""
    return sink_class(config.type).from_config(name, config)
