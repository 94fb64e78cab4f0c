"""An in-memory sink for tests: same contract, no filesystem."""

from __future__ import annotations

import threading

from daemon.errors import OutputError
from daemon.rules.templates import safe_relpath


class MemorySink:
    def __init__(self, name: str = "memory"):
        self.name = name
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []  # in commit order, to check that manifests come last
        self._lock = threading.Lock()

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> str:
        rel = safe_relpath(path)
        with self._lock:
            self.objects[rel] = bytes(data)
            self.writes.append(rel)
        return self.location(rel)

    def write_manifest(self, path: str, data: bytes) -> str:
        return self.write(path, data, "application/json")

    def read(self, path: str) -> bytes:
        try:
            return self.objects[safe_relpath(path)]
        except KeyError:
            raise OutputError(f"{path}: no such output") from None

    def delete(self, path: str) -> None:
        with self._lock:
            self.objects.pop(safe_relpath(path), None)

    def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    def exists(self, path: str) -> bool:
        return safe_relpath(path) in self.objects

    def location(self, path: str) -> str:
        return f"memory://{self.name}/{safe_relpath(path)}"
