"""The Sink contract: how outputs are committed, and optional hooks that default to nothing.

A sink writes whole objects atomically — a reader sees the old object or the new one, never a
partial one — at paths relative to its root that were already checked by
``daemon.rules.templates.safe_relpath``. Per plan, the manifest is written last: it is the
commit marker that says every output it lists is in place.

Optional hooks, each a no-op here so that callers call them directly: ``cleanup_temp`` (remove
temp files a killed process left) and ``local_root`` (the folder on this machine, when there is
one: ``darkroom review`` maps a path it is given onto the sink with it).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Sink"]


class Sink(abc.ABC):
    """Where outputs go. Subclasses set ``name`` (the config's name for the sink)."""

    name: str

    @abc.abstractmethod
    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Atomically store ``data`` at ``path``; returns its location (a path or URL).
        ``metadata`` is kept where the store has a place for it (S3 user metadata)."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes:
        """Read back an output (a later step's input). Raises daemon.errors.OutputError."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether an output is there."""

    @abc.abstractmethod
    def location(self, path: str) -> str:
        """Where ``path`` is, for people and logs (an absolute path or a URL)."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove an output (a withdrawn approval copy); missing is not an error."""

    @abc.abstractmethod
    def write_manifest(self, path: str, data: bytes) -> str:
        """Write the commit marker. A sink shared by several daemons refuses to replace a
        manifest written by another (S3: IfNoneMatch) and raises AlreadyCommitted."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Paths under ``prefix`` (for rebuilding indexes), sorted."""

    # -- optional hooks ----------------------------------------------------------------------

    def cleanup_temp(self, older_than: float = 0.0) -> int:
        """Remove temp files older than ``older_than`` seconds that a killed process left
        behind; returns how many. Sinks whose writes leave no temp files do nothing."""
        return 0

    def local_root(self) -> Path | None:
        """The sink's folder on this machine, or None when it has none (S3, memory)."""
        return None
