"""The files named on ``darkroom process FILE...``, as a read-only, one-shot source.

Nothing is watched: the command hands each file to intake itself (``arrivals()``), then waits
for its plans. A file's key is its name (it drives ``{stem}`` and the output folder); when two
named files share a name, their full paths (without the leading ``/``) tell them apart. A
sidecar or mask next to a named file is readable under its sibling key.
"""

from __future__ import annotations

from pathlib import Path

from daemon.errors import InputError
from daemon.sources.base import Emit, Known, Source
from daemon.types import Arrival

__all__ = ["FilesSource"]


class FilesSource(Source):
    """Reads the given files and their siblings; emits nothing by itself."""

    def __init__(self, paths: list[Path], name: str = "cli") -> None:
        self.name = name
        names = [p.name for p in paths]
        self.paths: dict[str, Path] = {
            (p.name if names.count(p.name) == 1 else str(p).lstrip("/")): p for p in paths
        }

    def __repr__(self) -> str:
        return f"FilesSource({self.name!r}, {len(self.paths)} files)"

    def arrivals(self) -> list[Arrival]:
        """One arrival per named file, as they are now (stat raises OSError if one vanished)."""
        out = []
        for key, path in self.paths.items():
            stat = path.stat()
            out.append(Arrival(self.name, key, str(path), stat.st_size, stat.st_mtime_ns))
        return out

    # Nothing to watch: the command submits the arrivals itself.
    def start(self, emit: Emit, known: Known) -> None:
        pass

    def scan(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, key: str, etag: str | None = None) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        if key in self.paths:
            return self.paths[key]
        # A sidecar or mask next to one of the named files.
        parent, _, name = key.rpartition("/")
        for known, path in self.paths.items():
            if (
                known.rpartition("/")[0] == parent
                and "/" not in name
                and name not in ("", ".", "..")
            ):
                return path.parent / name
        raise InputError(f"{key}: not one of the files given")
