"""The files named on ``darkroom process FILE...``, as a read-only, one-shot source.

Nothing is watched: the command hands each file to intake itself (``arrivals()``), then waits
for its plans. A file's key is what the daemon would call it, so folder-based rules
(``match: {glob: "shoots/**"}``, ``{dir}``, ``{folder}``) work the same: its path relative to
the configured watched folder that holds it, under that folder's source name; else its name.
(Not relative to the working directory: a file's identity and output folder must not depend
on where the command was typed.) When two named files get the same key, their full paths (without
the leading ``/``) tell them apart. A sidecar or mask next to a named file is readable under
its sibling key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daemon.errors import InputError
from daemon.sources.base import Emit, Known, Source
from daemon.types import Arrival

__all__ = ["FilesSource", "key_for"]


def key_for(path: Path, roots: Mapping[str, Path]) -> tuple[str, str]:
    """Which source and key the daemon would give ``path``: the watched folder (by source
    name) that holds it most deeply, else ``("", its name)``. Paths are expected resolved."""
    holding = [(name, root) for name, root in roots.items() if path.is_relative_to(root)]
    holding = [(name, root) for name, root in holding if path != root]
    if holding:
        name, root = max(holding, key=lambda item: len(item[1].parts))
        return name, path.relative_to(root).as_posix()
    return "", path.name


class FilesSource(Source):
    """Reads the given files and their siblings; emits nothing by itself."""

    def __init__(
        self,
        paths: list[Path],
        name: str = "cli",
        roots: Mapping[str, Path] | None = None,
    ) -> None:
        self.name = name
        placed = [key_for(p, roots or {}) for p in paths]
        keys = [key for _, key in placed]
        self.paths: dict[str, Path] = {}
        self.source_of: dict[str, str] = {}  # key -> the watched source's name, or ours
        for (source, key), path in zip(placed, paths, strict=True):
            key = key if keys.count(key) == 1 else str(path).lstrip("/")
            self.paths[key] = path
            self.source_of[key] = source or name

    @property
    def source_names(self) -> set[str]:
        """The names arrivals carry: ours, and each watched folder a named file lies in."""
        return {self.name, *self.source_of.values()}

    def __repr__(self) -> str:
        return f"FilesSource({self.name!r}, {len(self.paths)} files)"

    def arrivals(self) -> list[Arrival]:
        """One arrival per named file, as they are now (stat raises OSError if one vanished)."""
        out = []
        for key, path in self.paths.items():
            stat = path.stat()
            source = self.source_of[key]
            out.append(Arrival(source, key, str(path), stat.st_size, stat.st_mtime_ns))
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
