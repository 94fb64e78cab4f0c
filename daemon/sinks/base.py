"""The Sink contract: how outputs are committed, and optional hooks that default to nothing.

A sink writes whole objects atomically — a reader sees the old object or the new one, never a
partial one — at paths relative to its root that were already checked by
``daemon.rules.templates.safe_relpath``. Per plan, the manifest is written after the outputs,
sheet and page: it is the commit marker that says every output it lists is in place. Shared
objects (the manifest of a new round, the root index) are written with ``write_if``, a
compare-and-swap on :meth:`Sink.version`, so two writers never silently undo each other.

Optional hooks, each a no-op here so that callers call them directly: ``cleanup_temp`` (remove
temp files a killed process left) and ``local_root`` (the folder on this machine, when there is
one: ``darkroom review`` maps a path it is given onto the sink with it).
"""

from __future__ import annotations

import abc
import builtins
import hashlib
from collections.abc import Mapping
from pathlib import Path

from daemon.errors import AlreadyCommitted, WriteConflict

__all__ = ["Sink", "content_version"]


def content_version(data: bytes) -> str:
    """The version token of a sink without its own (folders, memory): the bytes' sha256,
    quoted like an ETag."""
    return '"' + hashlib.sha256(data).hexdigest() + '"'


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

    def version(self, path: str) -> str | None:
        """A token that changes whenever the object at ``path`` does (S3: its ETag; here: the
        sha256 of its bytes), or None when there is no object."""
        if not self.exists(path):
            return None
        return content_version(self.read(path))

    def version_of(self, data: bytes) -> str | None:
        """The token :meth:`version` gives an object holding exactly ``data``, when the sink
        can tell without asking (here: its sha256), else None. Lets a writer that keeps
        what it wrote recognise it later without reading it back."""
        return content_version(data)

    @abc.abstractmethod
    def write_if(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        replacing: str | None,
    ) -> str:
        """Store ``data`` only if the object at ``path`` is still version ``replacing`` (from
        :meth:`version`; None: only if there is none), atomically against other writers of
        the sink (S3: IfMatch / IfNoneMatch; folders: a lock file). Raises WriteConflict when
        another writer changed it first: read it again and decide again."""

    def write_manifest(self, path: str, data: bytes, *, replacing: str | None = None) -> str:
        """Write the commit marker over version ``replacing`` of the previous one (None: there
        was none). A sink shared by several daemons raises AlreadyCommitted when another one
        committed in between."""
        try:
            return self.write_if(path, data, "application/json", replacing=replacing)
        except AlreadyCommitted:
            raise
        except WriteConflict as exc:
            raise AlreadyCommitted(f"{exc}: another daemon committed this source") from None

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
