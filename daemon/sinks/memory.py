"""An in-memory sink for tests: same contract, no filesystem."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Mapping

from daemon.errors import OutputError, WriteConflict
from daemon.rules.templates import safe_relpath
from daemon.sinks.base import Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Objects in a dict; ``writes`` keeps the commit order (tests check manifests come last)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []  # in commit order, to check that manifests come last
        self._lock = threading.Lock()
        self._cas_lock = threading.Lock()

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        rel = safe_relpath(path)
        with self._lock:
            self.objects[rel] = bytes(data)
            self.writes.append(rel)
        return self.location(rel)

    def write_if(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        replacing: str | None,
    ) -> str:
        """Compare-and-swap, like S3's conditional PutObject."""
        with self._cas_lock:
            current = self.version(path)
            if current != replacing:
                raise WriteConflict(f"{self.location(path)} changed (found {current or 'none'})")
            return self.write(path, data, content_type)

    def read(self, path: str) -> bytes:
        try:
            return self.objects[safe_relpath(path)]
        except KeyError:
            raise OutputError(f"{path}: no such output") from None

    def delete(self, path: str) -> None:
        with self._lock:
            self.objects.pop(safe_relpath(path), None)

    def exists(self, path: str) -> bool:
        return safe_relpath(path) in self.objects

    def location(self, path: str) -> str:
        return f"memory://{self.name}/{safe_relpath(path)}"

    def list(self, prefix: str = "") -> builtins.list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))
